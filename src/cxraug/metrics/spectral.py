"""A training-free spectral check: how far apart are two image sets' radial power spectra?

Generators leave fingerprints in the frequency domain that no feature extractor has to learn:
transposed-convolution and nearest/bilinear up-sampling fail to reproduce the spectrum's high-frequency
tail (Durall, Keuper & Keuper, "Watch your up-convolution: CNN based generative deep neural networks are
failing to reproduce spectral distributions", CVPR 2020), and the rate at which that tail decays tells
real from generated images (Dzanic, Shah & Witherden, "Fourier spectrum discrepancies in deep network
generated images", NeurIPS 2020). Blur, lost resolution and heavy JPEG act on the same tail.

Per image x (uint8, S x S, scaled to [0, 1]):

1. subtract its mean and multiply by a 2-D periodic Hann window w(u) w(v), w(n) = 1/2 - 1/2 cos(2 pi n / S),
   so the image's edges (where the periodic extension the DFT assumes jumps) do not leak power into every
   frequency;
2. P(kx, ky) = |DFT|^2, with kx, ky in cycles per image;
3. the azimuthal integral at integer radius r = 1 .. S/2 (Nyquist): the summed power of the frequencies
   with round(sqrt(kx^2 + ky^2)) = r; DC (r = 0, the mean) and the corners beyond Nyquist are left out;
4. normalised to shares that sum to 1 over those radii, then in decibels: 10 log10(share).

Normalising removes global brightness (step 1) and contrast (a gain scales every bin alike), so the check
sees only the *shape* of the spectrum: where the image's variation lives. A set's spectrum is the mean of
its images' dB profiles (a mean of logs: a few high-contrast images do not dominate).

The distance is the root-mean-square difference of the two sets' mean dB profiles over the radii, in dB:
    D = sqrt( 1/R sum_r (Lreal(r) - Lfake(r))^2 ).
Why RMS of log shares and not, say, a 1-D Wasserstein or L2 distance on the shares themselves: CXR spectra
fall by ~4-5 orders of magnitude from r = 1 to Nyquist, so any distance on linear power is decided by the
few lowest radii, where anatomy lives and where blur and up-sampling change almost nothing; on a log scale
each radius counts by its *relative* deficit, and a missing high-frequency tail (-10 dB over the top half
of the radii) weighs what it should. ``high`` is the same distance over the top half of the radii only
(S/4 < r <= S/2), where blur, JPEG and up-sampling differ most.

Uncertainty, at the n compared (the distance is biased upwards by sampling noise, like FID):
- ``ci95``: bootstrap over images (each set resampled with replacement, ``reps`` times), percentile
  interval re-centred on the estimate (shifted by estimate - bootstrap median), as ``fid_bootstrap`` does;
- ``floor``: the real-vs-real floor at the same n: the distance between two independent resamples of the
  *real* set, of sizes n_real and n_fake (median and 95th percentile over ``reps``). A fake set whose
  distance is within the floor's range is spectrally indistinguishable from real at this n.
Numbers are comparable only at one image size (bins are integer radii at that size).
"""

from __future__ import annotations

import numpy as np

from cxraug.errors import CXRAugError

#: Images transformed at once (float64 [B, S, S] and its spectrum: ~100 MB at 128 px).
_BATCH = 256
_EPS = 1e-20  # added to every radius's power: a constant image gets a flat profile instead of 0/0


def hann_window(size: int) -> np.ndarray:
    """The 2-D periodic (DFT-even) Hann window, [size, size]."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size)
    return np.outer(w, w)


def radius_bins(size: int) -> np.ndarray:
    """For the ``rfft2`` half-plane of a ``size``-px image: each frequency's integer radius (cycles per
    image), rounded; -1 where it is DC or beyond Nyquist (r > size // 2). [size, size // 2 + 1]."""
    ky = np.fft.fftfreq(size, 1 / size)[:, None]
    kx = np.fft.rfftfreq(size, 1 / size)[None, :]
    r = np.rint(np.hypot(ky, kx)).astype(int)
    r[(r < 1) | (r > size // 2)] = -1
    return r


def _bin_matrix(size: int) -> np.ndarray:
    """[size * (size//2 + 1), size//2] sums the half-plane's power into radii 1..size//2; columns kx that
    stand for two frequencies (kx and -kx, all but 0 and Nyquist) count twice."""
    r = radius_bins(size)
    mult = np.full(r.shape[1], 2.0)
    mult[0] = 1.0
    if size % 2 == 0:
        mult[-1] = 1.0
    flat_r, flat_w = r.ravel(), np.broadcast_to(mult, r.shape).ravel()
    m = np.zeros((flat_r.size, size // 2))
    ok = flat_r >= 1
    m[np.nonzero(ok)[0], flat_r[ok] - 1] = flat_w[ok]
    return m


def radial_power(images_u8: np.ndarray, db: bool = True) -> np.ndarray:
    """Per image, the share of its (mean-free, Hann-windowed) power at each integer radius r = 1 .. S/2:
    [N, S//2], rows summing to 1; in dB (10 log10 share) by default. ``images_u8``: [N, S, S] (or [S, S])."""
    x = np.asarray(images_u8)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise CXRAugError(f"the spectral check needs square images [N, S, S], got shape {tuple(x.shape)}")
    size = x.shape[-1]
    if size < 4:
        raise CXRAugError(f"the spectral check needs images of at least 4 px, got {size}")
    win, mat = hann_window(size), _bin_matrix(size)
    out = np.empty((len(x), size // 2))
    for i in range(0, len(x), _BATCH):
        b = x[i : i + _BATCH].astype(np.float64) / 255.0
        b = (b - b.mean(axis=(1, 2), keepdims=True)) * win
        p = np.abs(np.fft.rfft2(b)) ** 2
        out[i : i + _BATCH] = p.reshape(len(b), -1) @ mat
    out += _EPS
    out /= out.sum(1, keepdims=True)
    return 10 * np.log10(out) if db else out


def high_radii(size: int) -> np.ndarray:
    """Boolean mask over radii 1..size//2: the top half, size/4 < r <= size/2."""
    r = np.arange(1, size // 2 + 1)
    return r > size / 4


def _rms(a: np.ndarray, b: np.ndarray, sel: np.ndarray | slice) -> np.ndarray:
    return np.sqrt(np.mean((a[..., sel] - b[..., sel]) ** 2, axis=-1))


def _resampled_means(profiles: np.ndarray, n_draw: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``reps`` resamples (with replacement) of ``n_draw`` rows of ``profiles``: [reps, R]."""
    n = len(profiles)
    out = np.empty((reps, profiles.shape[1]))
    step = max(1, 4_000_000 // max(n, 1))  # multinomial counts [step, n] at most ~32 MB
    for i in range(0, reps, step):
        counts = rng.multinomial(n_draw, np.full(n, 1.0 / n), size=min(step, reps - i))
        out[i : i + len(counts)] = counts @ profiles / n_draw
    return out


def spectral_distance(real_u8: np.ndarray, fake_u8: np.ndarray, *, reps: int = 200, seed: int = 0,
                      level: float = 0.95) -> dict:  # fmt: skip
    """The spectral check of ``fake_u8`` against ``real_u8`` (uint8 [N, S, S], the same S): the RMS
    difference (dB) of the sets' mean radial power profiles over all radii and over the top half, each
    with a bootstrap CI and the real-vs-real floor at the same n (see the module docstring), plus both
    mean profiles (dB, r = 1 .. S/2) for plotting."""
    real_u8, fake_u8 = np.asarray(real_u8), np.asarray(fake_u8)
    if real_u8.shape[1:] != fake_u8.shape[1:]:
        raise CXRAugError(f"the spectral check compares images of one size; got real {tuple(real_u8.shape[1:])} "
                          f"and generated {tuple(fake_u8.shape[1:])}")  # fmt: skip
    if len(real_u8) < 2 or len(fake_u8) < 2:
        raise CXRAugError(f"the spectral check needs at least 2 images per set, got {len(real_u8)} real and "
                          f"{len(fake_u8)} generated")  # fmt: skip
    lr, lf = radial_power(real_u8), radial_power(fake_u8)
    size = real_u8.shape[-1]
    mr, mf = lr.mean(0), lf.mean(0)
    rng = np.random.default_rng(seed)
    br = _resampled_means(lr, len(lr), reps, rng)  # bootstrap: each set resampled at its own n
    bf = _resampled_means(lf, len(lf), reps, rng)
    fa = _resampled_means(lr, len(lr), reps, rng)  # floor: two independent draws from the real set,
    fb = _resampled_means(lr, len(lf), reps, rng)  # at n_real and at n_fake
    a = (1 - level) / 2
    radii = np.arange(1, size // 2 + 1)
    hi = high_radii(size)
    parts = {"all": np.ones_like(hi), "high": hi}
    res: dict = {"size": size, "n_real": len(lr), "n_fake": len(lf), "reps": reps, "seed": seed, "unit": "dB"}
    for name, sel in parts.items():
        d = float(_rms(mr, mf, sel))
        boot, floor = _rms(br, bf, sel), _rms(fa, fb, sel)
        shift = d - float(np.median(boot))
        res[name] = {
            "radii": [int(radii[sel][0]), int(radii[sel][-1])],
            "distance": d,
            "ci95": [max(float(np.quantile(boot, a)) + shift, 0.0), float(np.quantile(boot, 1 - a)) + shift],
            "floor": {"median": float(np.median(floor)), "p95": float(np.quantile(floor, 0.95))},
        }
    res["real_profile_db"] = [round(float(v), 4) for v in mr]
    res["fake_profile_db"] = [round(float(v), 4) for v in mf]
    return res


def format_spectral(s: dict) -> list[str]:
    """Two lines for ``cxraug evaluate``'s table: all radii, then the top half."""
    tag = f"[pixels, {s['size']} px, n_real={s['n_real']}, n_fake={s['n_fake']}]"
    lines = []
    for name, label in (("all", "spectral  "), ("high", "  high-freq")):
        p = s[name]
        lines.append(
            f"  {label} {p['distance']:.3f} dB  95% CI [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]  real-vs-real floor "
            f"{p['floor']['median']:.3f} (95th pct {p['floor']['p95']:.3f})  radii {p['radii'][0]}-{p['radii'][1]}  {tag}"
        )
    return lines
