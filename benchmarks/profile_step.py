"""Where a training step's time goes: the engine's step under torch.profiler.

    python benchmarks/profile_step.py wgan-gp-64 dcgan-64 [--device cuda] [--set amp=no]

Prints, per preset, the wall time per step and how much of it the device (or CPU) spent in
kernels: a GPU far from busy is held back by the host (Python, autograd, kernel launches),
not by arithmetic. Then the ops' self time per step in a few groups (convolutions, casts and
copies, fills and allocation, other tensor ops, the rest), and the ops with the most self time.
Phantom data; batch 64 (``--set batch_size=32`` changes it). On a CPU, run it once with the default
precision and once with ``--set amp=no`` to see which groups bf16 speeds up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("presets", nargs="+")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()

    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from cxraug.config import load_config
    from cxraug.data.source import DataConfig, load_dataset
    from cxraug.train.config import TrainConfig, preset
    from cxraug.train.engine import Trainer

    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for name in a.presets:
        cfg = load_config(TrainConfig, overrides=[f"device={a.device}", "batch_size=64", *a.set], base=preset(name))
        ds = load_dataset(DataConfig("phantom:covid=128", size=cfg.data.size), progress=False)
        tr = Trainer(cfg, ds, tempfile.mkdtemp(), progress=False)
        for _ in range(10):
            tr.train_step()
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            tr.train_step()
        sync()
        wall = (time.perf_counter() - t0) / a.steps
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(a.steps):
                tr.train_step()
            sync()
        ev = prof.key_averages()
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        # kernels only: an op's "self device time" is its kernels' time again, so summing every event counts it twice
        kernels = [e for e in ev if e.device_type == DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / 1e6 / a.steps if cuda else float("nan")
        print(f"\n== {name} ({tr.amp}, channels_last={tr.channels_last}): {wall * 1e3:.1f} ms/step; "
              f"device kernels {busy * 1e3:.1f} ms/step ({busy / wall:.0%} busy)")  # fmt: skip
        groups = by_group(ev, a.steps)
        total = sum(groups.values())
        print(f"self CPU time per step by group (profiled, {total:.2f} s in all):")
        for g, sec in groups.items():
            print(f"  {g:<55} {sec:8.3f} s  {sec / total:5.1%}")
        print(ev.table(sort_by=key, row_limit=a.top, max_name_column_width=60))
    return 0


CASTS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"}
FILLS = {"aten::fill_", "aten::zero_", "aten::empty", "aten::empty_strided", "aten::zeros", "aten::zeros_like"}
GROUPS = (  # (group, does an op's name belong to it); first match wins
    ("convolutions (oneDNN / cuDNN)", lambda n: "conv" in n),
    ("casts and copies", lambda n: n in CASTS),
    ("fills and allocation", lambda n: n in FILLS),
    ("other tensor ops (elementwise, reductions, norms)", lambda n: n.startswith("aten::")),
    ("the rest (autograd engine, optimizer and Python glue)", lambda n: True),
)


def by_group(events, steps: int) -> dict[str, float]:
    """Self CPU seconds per step in each of :data:`GROUPS` (self times add up to the profiled total)."""
    out = dict.fromkeys((g for g, _ in GROUPS), 0.0)
    for e in events:
        group = next(g for g, match in GROUPS if match(e.key))
        out[group] += e.self_cpu_time_total / 1e6 / steps
    return out


if __name__ == "__main__":
    sys.exit(main())
