"""Train the CXR feature extractor that ships with cxraug (``--features cxr``; model card: docs/cxr-features.md).

Reads every collection in ../shared/data at 128 px (the loader's default square padding), labels each image
with its group (source and class), trains ``cxraug.metrics.cxrfeat_train.train_cxr_features`` and writes the
weights plus a JSON record (data counts, file digests of the inputs' image lists, losses, wall time):

    .venv/bin/python benchmarks/train_cxr_features.py --out src/cxraug/metrics/weights/cxr-features-v1.safetensors

Hannover: only the half of its patients whose sorted position is even (the other half stays unseen).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cxraug.data.source import DataConfig, load_dataset
from cxraug.metrics.cxrfeat import GROUPS, NAME, VERSION, save_features
from cxraug.metrics.cxrfeat_train import train_cxr_features

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SOURCES = {  # group -> path under ../shared/data
    "kermany-normal": "pneumonia-kermany/normal",
    "kermany-bacterial": "pneumonia-kermany/bacterial",
    "kermany-viral": "pneumonia-kermany/viral",
    "covid-cxnet": "covid-cxnet",
    "nih-normal": "nih-64/normal",
    "nih-abnormal": "nih-64/abnormal",
    "hannover-covid": "external/covid-hannover/data.csv",
}


def load_all(shared: Path, size: int = 128) -> tuple[np.ndarray, np.ndarray, dict]:
    imgs, groups, counts = [], [], {}
    for g, rel in SOURCES.items():
        ds = load_dataset(DataConfig(path=str(shared / rel), size=size), progress=False, announce=False)
        x = np.asarray(ds.images)
        if g == "hannover-covid":
            pids = sorted(set(ds.patient_ids))
            keep_p = set(pids[0::2])
            x = x[[p in keep_p for p in ds.patient_ids]]
        imgs.append(x)
        groups.append(np.full(len(x), GROUPS.index(g)))
        counts[g] = {"path": rel, "images": len(x),
                     "sha256_of_images": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]}  # fmt: skip
    return np.concatenate(imgs), np.concatenate(groups), counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for training (CPUs with native bf16)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    x, y, counts = load_all(SHARED)
    print(f"{len(x)} images: " + ", ".join(f"{g} {c['images']}" for g, c in counts.items()), flush=True)
    model, log = train_cxr_features(x, y, len(GROUPS), steps=a.steps, batch_size=a.batch, seed=a.seed, bf16=a.bf16)
    card = {
        "name": NAME,
        "version": VERSION,
        "data": counts,
        "recipe": {"steps": a.steps, "batch": a.batch, "seed": a.seed, "size": 128, "network_sees": 64, "bf16": a.bf16},
        "command": f"python benchmarks/train_cxr_features.py --out {a.out} --steps {a.steps} --batch {a.batch} "
        f"--seed {a.seed}" + (" --bf16" if a.bf16 else ""),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "wall_seconds": round(time.time() - t0),
        "log": log,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_features(model, a.out, card)
    a.out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB) in {card['wall_seconds']} s")


if __name__ == "__main__":
    main()
