"""The spectral check (cxraug.metrics.spectral; issue 27 item 2).

Closed forms: a Hann-windowed cosine grating's power splits over three radii in known shares; white noise
has the same expected power at every frequency, so each radius's share is its count of lattice points
(counted here by brute force over the full plane, not the half-plane the library sums). The floor and the
bootstrap CI are checked against fresh draws from a known distribution, and the ranking of resolution
losses on real CXRs (covid-cxnet, skipped without ../shared/data) through the call `evaluate_images` makes.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import shared
from cxraug.metrics.spectral import radial_power, spectral_distance

S = 64


def _grating(ky: int, kx: int, size: int = S) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return 127.5 + 127.5 * np.cos(2 * np.pi * (ky * y + kx * x) / size)


# Periodic Hann times cos(2 pi k n / S) = 1/2 cos(k) - 1/4 cos(k+1) - 1/4 cos(k-1): energy shares 2/3, 1/6, 1/6
# along the grating; across it the window alone (1/2 - 1/2 cos(1)) keeps the radius. An axis grating at k: 1/6,
# 2/3, 1/6 at k-1, k, k+1. The (3, 4) grating: the 9 products (2/3, 1/6, 1/6) x (2/3, 1/6, 1/6) at (3+-1, 4+-1),
# rounded radii: r=5 gets (3,4) 4/9 + (2,5), (4,3) 1/36 each = 1/2; r=4 gets (2,4), (3,3) 1/9 each + (2,3) 1/36
# = 1/4; r=6 the remaining 1/4.
@pytest.mark.parametrize(
    ("ky", "kx", "expected"),
    [(0, 10, {9: 1 / 6, 10: 2 / 3, 11: 1 / 6}), (10, 0, {9: 1 / 6, 10: 2 / 3, 11: 1 / 6}),
     (3, 4, {4: 1 / 4, 5: 1 / 2, 6: 1 / 4}), (-4, 3, {4: 1 / 4, 5: 1 / 2, 6: 1 / 4})],
)  # fmt: skip
def test_a_cosine_grating_puts_its_power_at_its_radius(ky, kx, expected):
    share = radial_power(_grating(ky, kx), db=False)[0]
    want = np.zeros(S // 2)
    for r, v in expected.items():
        want[r - 1] = v
    np.testing.assert_allclose(share, want, atol=1e-9)


def test_white_noise_has_the_same_power_at_every_frequency():
    size, n = 32, 1500
    noise = np.random.default_rng(0).integers(0, 256, (n, size, size)).astype(np.uint8)
    share = radial_power(noise, db=False).mean(0)
    k = np.fft.fftfreq(size, 1 / size)
    counts = np.zeros(size // 2 + 1)
    for a in k:  # every frequency of the full plane, once
        for b in k:
            r = int(np.rint(np.hypot(a, b)))
            if r <= size // 2:
                counts[r] += 1
    # r = 1 is left out: subtracting the mean before windowing moves power at |kx|, |ky| <= 1 (radius 0 and 1)
    got, want = share[1:] / share[1:].sum(), counts[2:] / counts[2:].sum()
    np.testing.assert_allclose(got, want, rtol=0.03)


def test_brightness_and_contrast_do_not_move_the_spectrum():
    rng = np.random.default_rng(1)
    x = cv2.GaussianBlur(rng.uniform(0, 200, (S, S)), (0, 0), 1.5)
    np.testing.assert_allclose(radial_power(x), radial_power(0.3 * x + 40), atol=1e-9)


def _smooth_noise(n: int, sigma_range: tuple[float, float], rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """White noise blurred (periodically, in the Fourier domain) by a per-image random Gaussian sigma: a
    distribution of spectra with a known generator."""
    sig = rng.uniform(*sigma_range, n)[:, None, None]
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    x = np.fft.ifft2(np.fft.fft2(rng.normal(0, 40, (n, size, size))) * np.exp(-2 * np.pi**2 * sig**2 * f2)).real
    return np.clip(np.rint(128 + x * 3), 0, 255).astype(np.uint8)


def test_a_set_against_itself_is_at_distance_zero():
    x = _smooth_noise(200, (0.7, 1.5), np.random.default_rng(2))
    res = spectral_distance(x, x)
    for part in ("all", "high"):
        assert res[part]["distance"] == 0.0 and res[part]["ci95"][0] == 0.0
        assert 0 < res[part]["floor"]["median"] <= res[part]["floor"]["p95"]
    assert res["all"]["radii"] == [1, 8] and res["high"]["radii"] == [5, 8]


def test_floor_and_ci_match_fresh_draws_at_the_same_n():
    """The floor is the distance of two real sets at (n_real, n_fake); the CI's width is the spread of the
    distance over fresh draws of both sets. Both checked against 80 fresh draws from the generators (the
    tolerances allow for the Monte Carlo's own noise and the one real set the floor is resampled from)."""
    rng = np.random.default_rng(3)
    n_real, n_fake, draws = 300, 100, 80

    def dist(sig_fake):
        return spectral_distance(_smooth_noise(n_real, (0.7, 1.5), rng), _smooth_noise(n_fake, sig_fake, rng),
                                 reps=2)["all"]["distance"]  # fmt: skip

    same = [dist((0.7, 1.5)) for _ in range(draws)]
    other = [dist((0.9, 1.7)) for _ in range(draws)]
    res = spectral_distance(_smooth_noise(n_real, (0.7, 1.5), rng), _smooth_noise(n_fake, (0.9, 1.7), rng), seed=1)
    assert res["all"]["floor"]["median"] == pytest.approx(np.median(same), rel=0.25)
    assert res["all"]["floor"]["p95"] == pytest.approx(np.quantile(same, 0.95), rel=0.4)
    lo, hi = res["all"]["ci95"]
    assert (hi - lo) == pytest.approx(2 * 1.96 * np.std(other), rel=0.35)
    assert np.mean(other) > 2 * np.quantile(same, 0.95)  # the two generators differ clearly


def test_evaluate_prints_and_records_the_spectral_check(tmp_path, capsys):
    from cxraug.cli import main

    out = tmp_path / "o"
    assert main(["encoder", "train", "--data", "phantom:normal=6", "--steps", "1", "--size", "32",
                 "--out", str(out / "n"), "-q"]) == 0  # fmt: skip
    (enc,) = (out / "n").iterdir()
    capsys.readouterr()
    assert main(["evaluate", "--real", "phantom:normal=12,covid=4", "--fake", "phantom:covid=12", "--size", "32",
                 "--n", "12", "--k", "2", "--features", f"encoder:{enc / 'encoder.safetensors'}",
                 "--allow-encoder-overlap", "--out", str(out / "e"), "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    (run,) = (out / "e").iterdir()
    s = json.loads((run / "metrics.json").read_text())["spectral"]
    assert s["size"] == 32 and s["n_real"] == 12 and s["n_fake"] == 12 and len(s["real_profile_db"]) == 16
    assert f"spectral   {s['all']['distance']:.3f} dB" in printed
    assert f"high-freq {s['high']['distance']:.3f} dB" in printed


def test_resolution_losses_rank_on_real_cxrs_through_evaluate_images_call():
    """covid-cxnet halves by file order; the other half degraded at 256 px (OpenCV), compared at 128 px with
    the call `evaluate_images` makes: real < down x4 < x8 < x16 and real < blur sigma 2, neighbouring CIs
    disjoint, and the real half within the real-vs-real floor."""
    from cxraug.data.source import DataConfig, load_dataset

    imgs = np.asarray(load_dataset(DataConfig(path=str(shared("covid-cxnet")), size=256), progress=False).images)
    a, b = imgs[0::2], imgs[1::2]

    def to128(u8):
        return np.stack([cv2.resize(im, (128, 128), interpolation=cv2.INTER_AREA) for im in u8])

    def down_up(f):
        return np.stack([cv2.resize(cv2.resize(im, (256 // f, 256 // f), interpolation=cv2.INTER_AREA), (256, 256),
                                    interpolation=cv2.INTER_LINEAR) for im in b])  # fmt: skip

    real = to128(a)
    sets = {"real": b, "x4": down_up(4), "x8": down_up(8), "x16": down_up(16),
            "blur2": np.stack([cv2.GaussianBlur(im, (0, 0), 2.0) for im in b])}  # fmt: skip
    res = {k: spectral_distance(real, to128(v), seed=0)["all"] for k, v in sets.items()}  # as evaluate_images calls it
    for lo, hi in (("real", "x4"), ("x4", "x8"), ("x8", "x16"), ("real", "blur2")):
        assert res[lo]["ci95"][1] < res[hi]["ci95"][0], (lo, hi, res[lo], res[hi])
    assert res["real"]["distance"] <= res["real"]["floor"]["p95"] * 1.5
    assert res["real"]["ci95"][0] <= res["real"]["floor"]["median"] <= res["real"]["ci95"][1]
