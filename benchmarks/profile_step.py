"""Where a training step's time goes: the engine's step under torch.profiler.

    python benchmarks/profile_step.py wgan-gp-64 dcgan-64 [--device cuda] [--set amp=no]

Prints, per preset, the wall time per step and how much of it the device (or CPU) spent in
kernels: a GPU far from busy is held back by the host (Python, autograd, kernel launches),
not by arithmetic. Then the ops with the most self time. Phantom data; batch 64.
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
        cfg = load_config(TrainConfig, None, [f"device={a.device}", "batch_size=64", *a.set], base=preset(name))
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
        print(ev.table(sort_by=key, row_limit=a.top, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
