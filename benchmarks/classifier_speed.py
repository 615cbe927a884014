"""The study's classifier step against its compute-only limit, side by side in one run.

    python benchmarks/classifier_speed.py [--size 128] [--batch 64] [--steps 20] [--repeats 3] [--threads N]

Three ways to take the same optimiser steps of the lightweight CNN on the same phantom images:

- ``fit``: ``cxraug.classify.train.fit_classifier`` exactly as a study calls it (``steps_per_epoch`` set,
  validation loss after each epoch, best-epoch copy), with and without the standard augmentation (flips);
- ``compute``: the limit: the same network, optimiser and precision, batches already in memory as one tensor, only
  forward, backward and step (no gather, no augmentation, no validation, no bookkeeping);
- ``naive``: what a first version would write: a DataLoader over a TensorDataset and per-image torchvision flips.

Images/s = training images consumed per second of wall time (``--clock cpu``: of this process's CPU time); each case runs ``--repeats`` blocks in an interleaved
order (fit, compute, naive, fit, ...) so a busy neighbour on the machine slows all of them alike, and the best block
counts. ``fit`` is timed by its own clock over the training steps; the validation pass that follows each epoch
(a study pays for it too) is printed as a share of the epoch.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F


def _images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images and binary labels: the arithmetic of a step does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.integers(0, 2, n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=36, help="optimiser steps per timed block")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-val", type=int, default=512)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or this process's CPU time (steadier on a machine shared with other jobs; use it "
                        "with --threads 1, as BENCHMARKS.md §8a does)")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from torchvision.transforms import v2

    from cxraug.classify.models import LightweightCNN
    from cxraug.classify.train import amp_dtype, fit_classifier, predict_logits, to_float

    xtr, ytr = _images(a.n_train, a.size, 0)
    xva, yva = _images(a.n_val, a.size, 1)
    dtype = amp_dtype(torch.device("cpu"))
    xv = to_float(xva)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter

    val_share: list[float] = []

    def fit(augment: bool) -> float:
        """Images/s of fit_classifier's training steps (its own clock, ``curves["seconds"]``); the share of the
        epoch that went to the validation pass is kept aside."""
        torch.manual_seed(0)
        m = LightweightCNN(2)
        c0 = time.process_time()
        m, curves = fit_classifier(m, xtr, ytr, xva, yva, epochs=1, batch_size=a.batch, augment=augment, seed=0,
                                   steps_per_epoch=a.steps)  # fmt: skip
        sec = curves["seconds"]
        val_share.append(sec["validation"] / (sec["training"] + sec["validation"]))
        if a.clock == "wall":
            return a.steps * a.batch / sec["training"]
        c1 = time.process_time()  # the CPU clock: the whole call less one validation pass, timed alike
        predict_logits(m, xv, dtype=dtype)
        return a.steps * a.batch / ((c1 - c0) - (time.process_time() - c1))

    def compute() -> float:
        torch.manual_seed(0)
        m = LightweightCNN(2).to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)
        xb = (to_float(xtr[: a.batch]) * 2 - 1).contiguous(memory_format=torch.channels_last)
        yb = torch.as_tensor(ytr[: a.batch])
        m.train()
        t0 = clock()
        for _ in range(a.steps):
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(m(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return a.steps * a.batch / (clock() - t0)

    def naive() -> float:
        torch.manual_seed(0)
        m = LightweightCNN(2)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)
        ds = torch.utils.data.TensorDataset(to_float(xtr), torch.as_tensor(ytr))
        dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=True)
        aug = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)])
        m.train()
        t0, done = clock(), 0
        while done < a.steps:
            for xb, yb in dl:
                xb = torch.stack([aug(img) for img in xb]) * 2 - 1
                loss = F.cross_entropy(m(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done == a.steps:
                    break
        return a.steps * a.batch / (clock() - t0)

    cases = {"fit (flips)": lambda: fit(True), "fit (no aug)": lambda: fit(False), "compute": compute,
             "naive (flips)": naive}  # fmt: skip
    for f in cases.values():  # warm-up: allocator, oneDNN primitive caches
        f()
    best: dict[str, float] = {k: 0.0 for k in cases}
    for _ in range(a.repeats):
        for k, f in cases.items():
            best[k] = max(best[k], f())
    flags = ""
    try:
        flags = " ".join(sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("avx512_bf16", "amx"))}))
    except OSError:
        pass
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, size {a.size}, "
          f"batch {a.batch}, {a.steps} steps a block, {a.clock} clock, precision {dtype or 'float32'} ({flags or 'no bf16 flags'})")  # fmt: skip
    print("| case | images/s | / compute |\n|---|---:|---:|")
    for k, v in best.items():
        print(f"| {k} | {v:.0f} | {v / best['compute']:.0%} |")
    print(f"validation pass ({a.n_val} images): {np.median(val_share):.0%} of a {a.steps}-step epoch (median)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"classifier-speed-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps({"args": vars(a), "images_per_s": best, "precision": str(dtype), "validation_share": float(np.median(val_share))}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
