"""One tiny real study, run by the local executor and by Ray, side by side: wall time, speed-up, Ray's overhead.

    python benchmarks/ray_scaling.py [--seeds 3] [--gan-steps 100] [--epochs 8] [--workers 1 2] [--two-node]

The study: phantom normal vs covid at 32 px, protocols real / oversample / class-weighted / gan-aug, regimes 50 % and
100 %, ``--seeds`` seeds, one DCGAN per (regime, seed) (``--gan-steps`` steps), ``--epochs`` classifier epochs. Cases,
each in a fresh study folder:

- ``local``: one run after another in this process (torch's default threads), and ``local, 1 thread``;
- ``ray N``: a Ray instance started for the study with N CPUs, ``cpus_per_run: 1`` (N tasks at a time, 1 thread each);
- ``ray 2 nodes``: ``ray.cluster_utils.Cluster`` with two nodes of one CPU each on this machine (``--two-node``).

Printed: wall seconds of the whole ``Study.run()`` (data, grid, report inputs), the grid alone (Ray:
``executor.json``), speed-up over ``local``, whether the results equal ``local, 1 thread``'s (every run's
metrics and scores, exactly), and Ray's overhead per task: N empty tasks on warm workers, and a task's first
start (a fresh worker process importing torch and cxraug). BENCHMARKS.md §10.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _cfg(a: argparse.Namespace, **kw):
    from cxraug.classify.config import GanSpec, Source, StudyConfig

    return StudyConfig(sources=[Source("phantom:normal=160,covid=48")], size=32,
                       protocols=["real", "oversample", "class-weighted", "gan-aug"], regimes=[0.5, 1.0],
                       seeds=list(range(a.seeds)), gan=GanSpec(steps=a.gan_steps, width=16, batch_size=16),
                       epochs=a.epochs, batch_size=32, bootstrap=100, features=a.features, **kw)  # fmt: skip


def _numbers(study: Path) -> dict:
    out = {}
    for p in sorted((study / "runs").glob("*/result.json")):
        r = json.loads(p.read_text())
        out[p.parent.name] = (r["metrics"], r["test_prob"], r["validation"], r["threshold"])
    return out


def _overhead(n: int = 200) -> tuple[float, float]:
    """(ms per empty task on warm workers, s for a first task in a fresh worker that imports torch and cxraug)."""
    import ray

    @ray.remote(num_cpus=1)
    def empty() -> int:
        return 0

    @ray.remote(num_cpus=1)
    def first() -> int:
        import cxraug.classify.study  # noqa: F401

        return 0

    t0 = time.perf_counter()
    ray.get(first.remote())
    cold = time.perf_counter() - t0
    ray.get([empty.remote() for _ in range(8)])
    t0 = time.perf_counter()
    ray.get([empty.remote() for _ in range(n)])
    return (time.perf_counter() - t0) / n * 1e3, cold


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--gan-steps", type=int, default=100)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--two-node", action="store_true")
    p.add_argument("--features", default=None,
                   help="the report's feature extractor (default: a small untrained encoder: the plumbing only)")
    a = p.parse_args()
    import ray

    from cxraug.classify.config import RaySpec
    from cxraug.classify.study import Study

    os.environ.setdefault("CXRAUG_CACHE", tempfile.mkdtemp(prefix="cxraug-cache-"))
    root = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    if a.features is None:
        from cxraug.metrics.encoder import ConvEncoder, save_encoder

        a.features = f"encoder:{save_encoder(ConvEncoder(32, width=8), root / 'enc.safetensors')}"
    rows, ref, over = [], None, {}

    def study(name: str, cfg, threads: int | None = None) -> None:
        nonlocal ref
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        try:
            Study(cfg, root / name, progress=False).run()
        finally:
            torch.set_num_threads(old)
        wall = time.perf_counter() - t0
        ex = root / name / "executor.json"
        grid = json.loads(ex.read_text())["seconds"] if ex.is_file() else float("nan")
        nodes = len(json.loads(ex.read_text())["nodes"]) if ex.is_file() else 1
        nums = _numbers(root / name)
        if name == "local, 1 thread":
            ref = nums
        rows.append((name, wall, grid, nodes, None if ref is None else nums == ref))
        print(f"{name}: {wall:.1f} s", flush=True)

    Study(_cfg(a), root / "warm-up", progress=False).prepare()  # the image cache and imports, outside every timing
    study("local, 1 thread", _cfg(a), threads=1)
    study("local", _cfg(a))
    for n in a.workers:
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            over[n] = _overhead()
            study(f"ray {n} worker(s)", _cfg(a, executor="ray", ray=RaySpec(cpus_per_run=1)))
        finally:
            ray.shutdown()
    if a.two_node:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        try:
            cluster.add_node(num_cpus=1)
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
            study("ray 2 nodes x 1 CPU", _cfg(a, executor="ray", ray=RaySpec(cpus_per_run=1)))
        finally:
            ray.shutdown()
            cluster.shutdown()
    base = next(w for n, w, *_ in rows if n == "local")
    n_runs = 4 * 2 * a.seeds
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}; {n_runs} classifier runs + {2 * a.seeds} GANs ({a.gan_steps} steps), "
          f"{a.epochs} epochs, 32 px; load average before: {os.getloadavg()}")  # fmt: skip
    print("| case | wall s | grid s | nodes | speed-up vs local | results = local, 1 thread |\n|---|---:|---:|---:|---:|---|")
    for name, wall, grid, nodes, same in rows:
        print(f"| {name} | {wall:.1f} | {grid:.1f} | {nodes} | {base / wall:.2f}x | {'' if same is None else same} |")
    for n, (ms, cold) in over.items():
        print(f"Ray with {n} CPU(s): {ms:.2f} ms per empty task on warm workers; first task in a fresh worker "
              f"{cold:.1f} s")
    np.save(root / "done.npy", np.zeros(1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
