"""The shipped CXR feature space (``--features cxr``, what ``auto`` uses without Inception weights).

Checked through ``evaluate_images`` (the call ``cxraug evaluate`` makes) against references computed here: an
independent Fréchet distance (scipy's matrix square root), degradations of real radiographs made with OpenCV,
copies planted by hand. The shared-data tests skip where ../shared/data is absent."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared
from cxraug.metrics import evaluate_images
from cxraug.metrics.cxrfeat import CONTENT_PCS, DETAIL_DIM, WEIGHTS, load_features

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "docs" / "cxr-features.md"


def test_shipped_weights_match_the_model_card_and_fit_the_wheel():
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    card = re.search(r"sha256 `([0-9a-f]{64})`", CARD.read_text())
    assert card, "docs/cxr-features.md names the weights' sha256"
    assert digest == card.group(1)
    assert WEIGHTS.stat().st_size <= 20e6
    assert "metrics/weights/*.safetensors" in (ROOT / "pyproject.toml").read_text()  # shipped as package data


def _frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _phantoms(n: int, seed: int) -> np.ndarray:
    from cxraug.data.phantom import phantom
    from cxraug.data.preprocess import Preprocess

    pre = Preprocess(64)
    return np.stack([pre(phantom("normal", 64, seed * 1000 + k)) for k in range(n)])


def test_fid_is_the_same_whatever_else_the_user_has():
    """A fixed space: FID of two sets equals an independent Fréchet distance of the model's features, and does
    not change with what else is given (held-out images, patient ids) or how the images are batched."""
    real, fake, other = _phantoms(40, 1), _phantoms(30, 2), _phantoms(20, 3)
    res = evaluate_images(real, fake, features="cxr", k=3, progress=False, audit=False, fid_reps=2)
    again = evaluate_images(real, fake, features="cxr", k=3, progress=False, audit=True, heldout_u8=other, fid_reps=2,
                            patient_ids=[f"p{i // 4}" for i in range(40)])  # fmt: skip
    assert res["features"] == again["features"] == "cxraug-cxr-v1"
    assert res["fid"] == again["fid"]
    model = load_features()
    with torch.no_grad():
        fr = model(torch.from_numpy(real).float().div(127.5).sub(1).unsqueeze(1)).double().numpy()
        ff = torch.cat([model(torch.from_numpy(fake[i : i + 7]).float().div(127.5).sub(1).unsqueeze(1))
                        for i in range(0, 30, 7)]).double().numpy()  # fmt: skip
    assert fr.shape[1] == res["feature_dim"] == CONTENT_PCS + DETAIL_DIM
    assert res["fid"] == pytest.approx(_frechet_scipy(fr, ff), rel=1e-5, abs=1e-6)


def test_fid_sits_next_to_its_real_vs_real_floor_at_the_same_n(tmp_path, capsys):
    """``evaluate_images`` reports FID(A, B) for patient-level halves A, B of the real set beside FID(A, the first |B|
    generated images); both checked here against scipy's Fréchet distance on the model's features, with the halves
    read back and checked to share no patient; ``cxraug evaluate`` prints the line."""
    from cxraug.cli import main
    from cxraug.metrics import encoder_split

    real, fake = _phantoms(40, 1), _phantoms(30, 2)
    pids = [f"p{i // 4}" for i in range(40)]  # 10 patients of 4 images
    f = evaluate_images(real, fake, features="cxr", patient_ids=pids, progress=False, audit=False, fid_reps=4)["floor"]
    a, b = encoder_split(40, pids, 0)
    assert not {pids[i] for i in a} & {pids[i] for i in b}
    assert f["n_a"] == len(a) == 20 and f["n"] == 20 and f["split"].startswith("patient-level")
    model = load_features()
    with torch.no_grad():
        fr, ff = (model(torch.from_numpy(x).float().div(127.5).sub(1).unsqueeze(1)).double().numpy() for x in (real, fake))
    assert f["real"]["fid"] == pytest.approx(_frechet_scipy(fr[a], fr[b]), rel=1e-5, abs=1e-6)
    assert f["generated"]["fid"] == pytest.approx(_frechet_scipy(fr[a], ff[:20]), rel=1e-5, abs=1e-6)
    assert f["real"]["ci95"][0] <= f["real"]["fid"] <= f["real"]["ci95"][1]
    capsys.readouterr()
    assert main(["evaluate", "--real", "phantom:normal=24", "--fake", "phantom:covid=24", "--features", "cxr",
                 "--out", str(tmp_path), "-q"]) == 0  # fmt: skip
    assert "  floor      real vs real FID " in capsys.readouterr().out


def test_tiny_training_run_round_trips(tmp_path):
    """The recipe runs (a few steps on phantoms) and the file format keeps every number."""
    from cxraug.metrics.cxrfeat import save_features
    from cxraug.metrics.cxrfeat_train import train_cxr_features

    imgs = np.concatenate([_phantoms(12, 4), _phantoms(12, 5)])
    imgs = np.stack([cv2.resize(i, (128, 128), interpolation=cv2.INTER_LINEAR) for i in imgs])
    model, log = train_cxr_features(imgs, np.repeat([0, 1], 12), 2, steps=3, batch_size=8, progress=False)
    assert len(log) == 2 and np.isfinite([r["ce"] for r in log]).all()
    path = save_features(model, tmp_path / "f.safetensors", {"test": True})
    back = load_features(path)
    x = torch.from_numpy(imgs[:5]).float().div(127.5).sub(1).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(model(x), back(x)) and back.card == {"test": True}
    z = (back.raw(x) - back.mean[1]) / back.std[1]  # standardised on the training images themselves
    assert torch.isfinite(z).all() and float(z.abs().max()) < 20


def _covid_halves():
    from cxraug.data.source import DataConfig, load_dataset

    ds = load_dataset(DataConfig(path=str(shared("covid-cxnet")), size=256), progress=False)
    imgs = np.asarray(ds.images)
    return imgs[0::2], imgs[1::2]


def _to(u8: np.ndarray, size: int) -> np.ndarray:
    from cxraug.data.preprocess import resize

    return np.stack([resize(i, size, "direct") for i in u8])


def _degraded(b: np.ndarray) -> dict[str, np.ndarray]:
    s = b.shape[-1]

    def down_up(f: int) -> np.ndarray:
        return np.stack([cv2.resize(cv2.resize(i, (s // f, s // f), interpolation=cv2.INTER_AREA), (s, s),
                                    interpolation=cv2.INTER_LINEAR) for i in b])  # fmt: skip

    def jpeg(q: int) -> np.ndarray:
        return np.stack([cv2.imdecode(cv2.imencode(".jpg", i, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 0) for i in b])

    return {"real": b, "jpeg10": jpeg(10), "blur2": np.stack([cv2.GaussianBlur(i, (0, 0), 2.0) for i in b]),
            "x4": down_up(4), "x8": down_up(8), "x16": down_up(16)}  # fmt: skip


@pytest.mark.shared_data
def test_degradations_rank_above_real_and_another_hospital_farthest():
    """Issue 27's table through evaluate_images at the default --size 64: every degradation above real with
    disjoint 95 % CIs, the resolution losses in order, the 16-px thumbnail >= 4x real, and NIH normals (another
    hospital) farther than any degradation."""
    from cxraug.data.source import DataConfig, load_dataset

    a, b = _covid_halves()
    sets = {k: _to(v, 64) for k, v in _degraded(b).items()}
    sets["nih"] = np.asarray(load_dataset(DataConfig(path=str(shared("nih-64") / "normal"), size=64),
                                          progress=False).images)  # fmt: skip
    ref = _to(a, 64)
    fid = {k: evaluate_images(ref, v, features="cxr", progress=False, audit=False, fid_reps=50)
           for k, v in sets.items()}  # fmt: skip
    est = {k: r["fid"] for k, r in fid.items()}
    lo = {k: r["fid_ci95"][0] for k, r in fid.items()}
    hi = {k: r["fid_ci95"][1] for k, r in fid.items()}
    for k in ("jpeg10", "blur2", "x4", "x8", "x16", "nih"):
        assert lo[k] > hi["real"], (k, est)
    for x, y in (("jpeg10", "x8"), ("blur2", "x8"), ("x4", "x8"), ("x8", "x16"), ("x16", "nih")):
        assert hi[x] < lo[y], (x, y, est)
    assert est["x16"] >= 4 * est["real"]


@pytest.mark.shared_data
def test_constant_and_blob_images_have_no_precision():
    a, _ = _covid_halves()
    ref = _to(a, 64)
    rng = np.random.default_rng(0)
    grey = np.full((200, 64, 64), 128, np.uint8)
    blobs = np.stack([cv2.normalize(cv2.GaussianBlur(rng.integers(0, 256, (64, 64), dtype=np.uint8), (0, 0), 8),
                                    None, 0, 255, cv2.NORM_MINMAX) for _ in range(200)])  # fmt: skip
    for fake in (grey, blobs):
        assert evaluate_images(ref, fake, features="cxr", progress=False, audit=False, fid_reps=2)["precision"] < 0.05


@pytest.mark.shared_data
def test_an_early_gan_has_no_precision(tmp_path):
    """A DCGAN after 20 steps (grey texture, FID in the hundreds), trained and sampled through the CLI and
    ``generate``: precision about 0 in this space, while real images of the same collection keep about 0.9.
    One k-NN ball over content and detail together gave it 0.15 (0.995 after 30 steps: content places the texture among real
    images, detail far from them); ``prdc`` now checks each group's balls (``Extractor.parts``)."""
    from cxraug.cli import main
    from cxraug.data.source import DataConfig, load_dataset
    from cxraug.synth.generate import generate

    data = shared("covid-cxnet")
    assert main(["train", "--preset", "dcgan-64", "--data", str(data), "--steps", "20", "--batch-size", "64",
                 "--set", "width=32", "--set", "diffaug=translation,cutout", "--set", "sample_every=1000",
                 "--set", "ckpt_every=1000", "-q", "--out", str(tmp_path)]) == 0  # fmt: skip
    fake, _, _ = generate(next(tmp_path.glob("train-*/checkpoints/last.pt")), 200, seed=1)
    real = np.asarray(load_dataset(DataConfig(path=str(data), size=64), progress=False).images)
    early = evaluate_images(real[0::2], fake, features="cxr", progress=False, audit=False, fid_reps=2)
    same = evaluate_images(real[0::2], real[1::2], features="cxr", progress=False, audit=False, fid_reps=2)
    assert early["fid"] > 50 * same["fid"]
    assert early["precision"] < 0.05 and early["coverage"] < 0.05
    assert same["precision"] > 0.85 and same["recall"] > 0.85 and same["coverage"] > 0.85


@pytest.mark.shared_data
def test_planted_copies_are_called_copies():
    """Copies of training images, blurred (sigma 1 px), shifted 3 px with noise (SD 8 grey levels), flipped or with
    contrast changed: Meehan et al.'s test says copying (Z_U < -3), the memorization audit flags nearly every copy,
    and each copy's nearest training image in the copy space is its original (or one of covid-cxnet's own repeats of
    it) for nearly every copy; the audit's search over every real set given finds them in training."""
    from cxraug.metrics.features import cxr_extractor, extract
    from cxraug.metrics.memorization import _nn

    a, b = _covid_halves()
    train, held = _to(a, 64), _to(b, 64)
    src = train[:120]
    rng = np.random.default_rng(0)
    shifted = [np.clip(np.roll(i, (3, 3), (0, 1)) + rng.normal(0, 8, i.shape), 0, 255) for i in src]
    copies = {
        "blur 1 px": np.stack([cv2.GaussianBlur(i, (0, 0), 1.0) for i in src]),
        "shift 3 px + noise": np.stack(shifted).astype(np.uint8),
        "flip": src[:, :, ::-1].copy(),
        "contrast": np.clip((src.astype(float) - 128) * 1.3 + 138, 0, 255).astype(np.uint8),
    }
    ext = cxr_extractor()
    f_train = extract(ext, train, progress=False, copy=True)
    flat = train.reshape(len(train), -1).astype(float)
    for name, fake in copies.items():
        res = evaluate_images(train, fake, features="cxr", progress=False, heldout_u8=held, fid_reps=2)
        mem = res["memorization"]
        assert mem["three_sample"]["z_u"] < -3, (name, mem["three_sample"])
        assert mem["n_flagged"] >= 0.95 * len(fake), (name, mem["n_flagged"])
        assert mem["nearest_anywhere"]["nearest_set_counts"]["training"] >= 0.95 * len(fake), name
        _, nn = _nn(extract(ext, fake, progress=False, copy=True), f_train)
        same = np.abs(flat[nn] - flat[: len(fake)]).mean(1) < 2  # the original, or a repeat of it in covid-cxnet
        assert same.mean() >= 0.9, (name, same.mean())
