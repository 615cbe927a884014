"""Does the offline metric encoder rank image sets sensibly? (issue 13; BENCHMARKS.md, metrics section)

covid-cxnet is split by patient into three parts: E (the encoder's training images), R (the FID
reference) and H (held-out real). FID against R, at 64 px, with a 95 % bootstrap CI, for
  real        H
  blurred     H, Gaussian sigma 3 px at 256 px
  down x8     H, shrunk 8x at 256 px and scaled back up
  other class NIH "No Finding" normals (another source and class)
for two encoders: "before" (the autoencoder objective, trained on R itself, as `--features auto`
did) and "after" (the texture objective, trained on E, disjoint from R). Without --steps, --width or
--batch, the encoder is trained with `train_encoder`'s defaults: the one `--features auto` trains.

    .venv/bin/python benchmarks/metric_sanity.py [--steps N] [--width W] [--batch B]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from cxraug.data.preprocess import resize
from cxraug.data.source import DataConfig, load_dataset
from cxraug.data.splits import patient_split
from cxraug.metrics.encoder import image_fingerprints, train_encoder
from cxraug.metrics.features import Extractor, extract
from cxraug.metrics.fid import fid_bootstrap, fid_from_features

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def to64(u8: np.ndarray) -> np.ndarray:
    return np.stack([resize(im, 64, "direct") for im in u8])


def blurred(u8_256: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(im, (0, 0), sigma) for im in u8_256])


def down_up(u8_256: np.ndarray, factor: int = 8) -> np.ndarray:
    s = u8_256.shape[-1]
    return np.stack([cv2.resize(cv2.resize(im, (s // factor, s // factor), interpolation=cv2.INTER_AREA), (s, s),
                                interpolation=cv2.INTER_LINEAR) for im in u8_256])  # fmt: skip


def sets(shared: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The three covid-cxnet parts (64 px, via 256 px) and the comparison sets."""
    ds = load_dataset(DataConfig(path=str(shared / "covid-cxnet"), size=256), progress=False)
    imgs = np.asarray(ds.images)
    sp = patient_split(np.zeros(len(imgs), int), ds.patient_ids, fractions=(1 / 3, 1 / 3, 1 / 3), seed=seed)
    e, r, h = (np.sort(sp[k]) for k in ("train", "val", "test"))
    nih = load_dataset(DataConfig(path=str(shared / "nih-64" / "normal"), size=64), progress=False)
    e64, r64 = to64(imgs[e]), to64(imgs[r])
    ref_fp = set(image_fingerprints(r64))
    return {
        "E": e64[[f not in ref_fp for f in image_fingerprints(e64)]],  # some images repeat across patients
        "R": r64,
        "real": to64(imgs[h]),
        "blurred": to64(blurred(imgs[h])),
        "down x8": to64(down_up(imgs[h])),
        "other class": np.asarray(nih.images)[: len(h)],
    }


def table(enc, s: dict[str, np.ndarray], reps: int = 50) -> dict[str, tuple[float, float, float]]:
    ext = Extractor("encoder", enc, "encoder", enc)
    fr = extract(ext, s["R"], progress=False)
    out = {}
    for name in ("real", "blurred", "down x8", "other class"):
        ff = extract(ext, s[name], progress=False)
        out[name] = (fid_from_features(fr, ff), *fid_bootstrap(fr, ff, reps=reps))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, help="default: train_encoder's")
    ap.add_argument("--width", type=int, help="default: train_encoder's")
    ap.add_argument("--batch", type=int, help="default: train_encoder's")
    ap.add_argument("--shared", default=str(SHARED))
    a = ap.parse_args()
    s = sets(Path(a.shared))
    print(f"n: E={len(s['E'])} R={len(s['R'])} H={len(s['real'])} other={len(s['other class'])}; 64 px")
    size = {k: v for k, v in (("steps", a.steps), ("width", a.width), ("batch_size", a.batch)) if v is not None}
    print(f"encoder size: {size or 'train_encoder defaults'}")
    rows = {}
    for label, objective, train_on in (("before: autoencoder, trained on R", "autoencoder", "R"),
                                        ("after: texture, trained on E", "texture", "E")):  # fmt: skip
        t0 = time.perf_counter()
        enc = train_encoder(s[train_on], objective=objective, progress=False, **size)
        rows[label] = table(enc, s)
        print(f"{label}: trained in {time.perf_counter() - t0:.0f} s")
    print("\n| encoder | " + " | ".join(next(iter(rows.values()))) + " |")
    print("|---|" + "---|" * len(next(iter(rows.values()))))
    for label, r in rows.items():
        print(f"| {label} | " + " | ".join(f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in r.values()) + " |")


if __name__ == "__main__":
    main()
