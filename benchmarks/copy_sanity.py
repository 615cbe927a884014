"""Do the copy searches call planted copies copies, in a given feature space? (issue 27 item 4)

covid-cxnet (256 px) split by file order into halves: T (the "training" images) and H (held out). The first 120
images of T are copied four ways (Gaussian blur sigma 1 px; shifted 3 px with noise SD 8 grey levels; flipped;
contrast x1.3 + 10) and each copy set is given to `evaluate_images` (the call `cxraug evaluate` makes) as the
generated images, with H as --heldout. Prints Meehan et al.'s Z_U, how many copies the memorization audit flags
(and by the feature rule alone), and how often the copy's nearest training image in the copy space is its original
(or one of covid-cxnet's own repeats of it).

    .venv/bin/python benchmarks/copy_sanity.py [--features cxr] [--sizes 64 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from cxraug.data.preprocess import resize
from cxraug.data.source import DataConfig, load_dataset
from cxraug.metrics import evaluate_images
from cxraug.metrics.features import extract, get_extractor
from cxraug.metrics.memorization import _nn

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def copies(src: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shifted = [np.clip(np.roll(i, (3, 3), (0, 1)) + rng.normal(0, 8, i.shape), 0, 255) for i in src]
    return {
        "blur σ 1 px": np.stack([cv2.GaussianBlur(i, (0, 0), 1.0) for i in src]),
        "shift 3 px + noise SD 8": np.stack(shifted).astype(np.uint8),
        "flip": src[:, :, ::-1].copy(),
        "contrast ×1.3 + 10": np.clip((src.astype(float) - 128) * 1.3 + 138, 0, 255).astype(np.uint8),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="cxr")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    a = ap.parse_args()
    imgs = np.asarray(load_dataset(DataConfig(path=str(SHARED / "covid-cxnet"), size=256), progress=False).images)
    print("| size | copy | Z_U (Meehan) | flagged by the audit | by the feature rule | nearest is the original |")
    print("|---|---|---:|---:|---:|---:|")
    for size in a.sizes:
        t, h = (np.stack([resize(i, size, "direct") for i in x]) for x in (imgs[0::2], imgs[1::2]))
        ext = get_extractor(a.features, real_images=t, progress=False)
        f_train = extract(ext, t, progress=False, copy=True)
        flat = t.reshape(len(t), -1).astype(float)
        for name, fake in copies(t[:120]).items():
            m = evaluate_images(t, fake, features=a.features, progress=False, heldout_u8=h, fid_reps=2)["memorization"]
            by_feature = sum(f["feature_ratio"] < m["thresholds"]["feature_ratio"] for f in m["flagged"])
            _, nn = _nn(extract(ext, fake, progress=False, copy=True), f_train)
            same = (np.abs(flat[nn] - flat[: len(fake)]).mean(1) < 2).mean()
            print(f"| {size} | {name} | {m['three_sample']['z_u']:.1f} | {m['n_flagged']} of {len(fake)} | "
                  f"{by_feature} | {same:.0%} |", flush=True)


if __name__ == "__main__":
    main()
