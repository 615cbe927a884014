"""Write generated images as marked PNGs plus a manifest (CSV and JSON)."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cxraug.data.markers import png_info
from cxraug.io import atomic_path, write_json


def checkpoint_hash(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def write_synthetic(
    out: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: list[str],
    checkpoint: str | os.PathLike,
    seed: int,
    prefix: str = "syn",
    start: int = 0,
    ck: str | None = None,
) -> list[dict]:
    """PNGs under ``out/<first label>/`` carrying ``cxraug:synthetic=true``; returns manifest rows. ``start``: the
    index of the first image (a writer called batch by batch); ``ck``: the checkpoint's hash, if known."""
    out = Path(out)
    ck = ck or checkpoint_hash(checkpoint)
    rows = []
    for i, (img, lab) in enumerate(zip(images, labels), start):
        names = [c for c, v in zip(class_names, lab) if v > 0.5]
        folder = out / (names[0] if names else "unlabelled")
        make_dirs(folder)
        dest = folder / f"{prefix}-{seed}-{i:06d}.png"
        with atomic_path(dest) as tmp:
            Image.fromarray(img).save(tmp, format="PNG", pnginfo=png_info({"checkpoint": ck, "seed": seed, "index": i}))
        rows.append({"path": str(dest), "label": names[0] if names else "", "labels": "|".join(names),
                     "patient_id": f"synthetic-{ck}-{seed}-{i}", "checkpoint": ck, "seed": seed,
                     "synthetic": "true"})  # fmt: skip
    return rows


def make_dirs(folder: Path) -> None:
    """``mkdir -p``; permission denied, a read-only or full disk is one :class:`CXRAugError` naming the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from cxraug.io import write_error

        raise write_error(folder, e) from e


def write_manifest(out: str | os.PathLike, rows: list[dict]) -> Path:
    out = Path(out)
    fields = ["path", "label", "labels", "patient_id", "checkpoint", "seed", "synthetic"]
    # surrogateescape: a non-UTF-8 file name is written byte for byte (cxraug.data.tables.write_csv)
    with atomic_path(out / "manifest.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8",
                                                        errors="surrogateescape") as f:  # fmt: skip
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
    write_json(out / "manifest.json", rows)
    return out / "manifest.csv"
