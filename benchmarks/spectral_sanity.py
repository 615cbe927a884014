"""The spectral check and FID through `cxraug evaluate`: do they rank degradations of real CXRs sensibly? (issue 27)

covid-cxnet (256 px, as the loader squares it) is split by file order into halves: A (cxnet-001, -003, ...) is
the real set, B (the even-numbered files) is degraded at 256 px and given as the "generated" set:
  real        B itself
  jpeg q10    B, JPEG quality 10 (OpenCV)
  blur 2      B, Gaussian blur sigma 2 px
  down x4/x8/x16  B shrunk 4/8/16x (area) and scaled back up (bilinear)
  jpeg q5, blur 3  the issue's first table
  nih normals NIH "No Finding" normals (another hospital; 64-px files, so only at --size 64)
  kermany normals  paediatric normals of a fourth hospital (224-px files)
Every set is written as a PNG folder under --work and compared with A by the command users run,
    cxraug evaluate --real A --fake X --size S --features F --seed 0     (F: --features, default auto)
and the spectral distance (all radii and the top half) with its 95 % CI and the real-vs-real floor is read
from the run's metrics.json. Prints one Markdown table per size.

    .venv/bin/python benchmarks/spectral_sanity.py [--sizes 128 64] [--work DIR] [--features auto]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from cxraug.data.source import DataConfig, load_dataset

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def degradations(b: np.ndarray) -> dict[str, np.ndarray]:
    s = b.shape[-1]

    def down_up(f: int) -> np.ndarray:
        return np.stack([cv2.resize(cv2.resize(im, (s // f, s // f), interpolation=cv2.INTER_AREA), (s, s),
                                    interpolation=cv2.INTER_LINEAR) for im in b])  # fmt: skip

    jpeg = [cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 10])[1], cv2.IMREAD_GRAYSCALE) for im in b]
    return {
        "real (other half)": b,
        "JPEG q10": np.stack(jpeg),
        "Gaussian blur σ 2 px": np.stack([cv2.GaussianBlur(im, (0, 0), 2.0) for im in b]),
        "down ×4 and back": down_up(4),
        "down ×8 and back": down_up(8),
        "down ×16 and back": down_up(16),
        "JPEG q5": np.stack([cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 5])[1], 0) for im in b]),
        "Gaussian blur σ 3 px": np.stack([cv2.GaussianBlur(im, (0, 0), 3.0) for im in b]),
    }


def write_folder(d: Path, imgs: np.ndarray) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(imgs):
        cv2.imwrite(str(d / f"{i:04d}.png"), im)
    return d


def evaluate(real: Path, fake: Path, size: int, work: Path, features: str = "auto") -> dict:
    cmd = [sys.executable, "-m", "cxraug", "evaluate", "--real", str(real), "--fake", str(fake), "--size", str(size),
           "--features", features, "--seed", "0", "--quiet", "--out", str(work / "runs"),
           "--cache-dir", str(work / "cache")]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    run = re.search(r"run folder: (.+)", out).group(1).strip()
    return json.loads((Path(run) / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--work", type=Path, help="where the PNG folders and runs go (default: a new temp folder)")
    ap.add_argument("--features", default="auto", help="evaluate's --features; default %(default)s")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="spectral_sanity_"))
    ds = load_dataset(DataConfig(path=str(SHARED / "covid-cxnet"), size=256), progress=False)
    imgs = np.asarray(ds.images)
    real = write_folder(work / "A", imgs[0::2])
    sets = {k: write_folder(work / f"X{i}", v) for i, (k, v) in enumerate(degradations(imgs[1::2]).items())}
    sets["NIH normals (another hospital)"] = SHARED / "nih-64" / "normal"
    sets["Kermany normals (another hospital)"] = SHARED / "pneumonia-kermany" / "normal"
    print(f"work folder: {work}; A = {len(imgs[0::2])} images, B = {len(imgs[1::2])}")
    for size in a.sizes:
        print(f"\n`cxraug evaluate --real A --fake X --size {size} --features {a.features} --seed 0`\n")
        print(
            "| X | n real / fake | spectral distance, dB [95 % CI] | floor (median, p95) | top half of radii, dB "
            f"[95 % CI] | floor (median, p95) | FID ({a.features}) [95 % CI] | precision | s |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name, path in sets.items():
            if name.startswith("NIH") and size != 64:
                continue
            t = time.time()
            m = evaluate(real, path, size, work, a.features)
            s = m["spectral"]
            cells = []
            for part in ("all", "high"):
                p = s[part]
                cells += [f"{p['distance']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]",
                          f"{p['floor']['median']:.2f}, {p['floor']['p95']:.2f}"]  # fmt: skip
            fid = f"{m['fid']:.2f} [{m['fid_ci95'][0]:.2f}, {m['fid_ci95'][1]:.2f}]"
            print(
                f"| {name} | {s['n_real']} / {s['n_fake']} | {' | '.join(cells)} | {fid} | {m['precision']:.2f} | "
                f"{time.time() - t:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
