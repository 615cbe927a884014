"""Throughput on this machine: GAN training steps (engine vs a naive textbook loop), data loading
(PNG folder vs cache) and FID feature extraction, each with its peak resident memory.

    python benchmarks/bench_throughput.py                      # everything, ../shared/data/covid-cxnet
    python benchmarks/bench_throughput.py --only train:dcgan-64 --repeats 5
    python benchmarks/bench_throughput.py --data phantom       # no shared data needed

Every case runs in a fresh subprocess (its peak RSS is its own), does warm-up steps first and
reports the median of ``--repeats`` timed blocks. Results: a Markdown table on stdout and a JSON
file under ``benchmarks/results/``. Copy the table into BENCHMARKS.md with the machine line.

Per training preset three cases, printed side by side:

- ``engine``: ``Trainer.train_step`` as ``cxraug train`` runs it (batches drawn from the cache, EMA);
- ``compute``: the limit for those networks on this machine: the engine's own networks, optimisers,
  precision and memory format, the same critic/generator updates (the networks not being updated are
  frozen, as in the engine), on batches already in memory: no data pipeline, no EMA, no logging;
- ``naive``: the textbook loop (ImageFolder decoding PNGs, float32, ``nn.InstanceNorm2d``).

A case takes options after ``+`` (``train:wgan-gp-64:engine+fp32``, ``...:compute+fp32``; ``+bf16`` likewise):
such a pair gets its own side-by-side row against the same naive loop, e.g. float32 beside the default bf16
on a CPU that has it (BENCHMARKS.md §8d).

"images/s" for training counts real images consumed by the critic per second
(batch x n_critic x generator steps / s), the same definition for all three. The CPU's model and
its vector/matrix flags (``lscpu``) are printed with the results: bf16 autocast is the default only
where the CPU has AVX-512-BF16 or AMX (``CXRAUG_AMP=no`` forces float32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "covid-cxnet"
TRAIN_PRESETS = ("dcgan-64", "wgan-gp-64", "wgan-gp-128")
CASES = (
    [f"train:{p}:{impl}" for p in TRAIN_PRESETS for impl in ("engine", "compute", "naive")]
    + ["load:png", "load:cache"]
    + ["fid:encoder", "fid:xrv-densenet121", "fid:inception-v3"]
)


# ----------------------------------------------------------------------------- data
def image_folder(data: str, workdir: Path) -> Path:
    """A folder-per-class root for torchvision's ImageFolder: a symlink to a flat folder (nothing copied),
    or phantoms written into ``workdir``."""
    if data == "phantom":
        from cxraug.data import write_phantom_folder

        root = workdir / "phantom"
        if not root.exists():
            write_phantom_folder(root, {"covid": 898}, size=256, seed=0)
        return root
    root = workdir / "imagefolder"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "class0"
    if not link.exists():
        link.symlink_to(Path(data).resolve(), target_is_directory=True)
    return root


def cached(data_root: Path, size: int):
    from cxraug.data.source import DataConfig, load_dataset

    return load_dataset(DataConfig(str(data_root), size=size), progress=False)


def train_config(preset_name: str, batch: int):
    from cxraug.config import from_dict
    from cxraug.train.config import TrainConfig, preset

    d = preset(preset_name)
    d.update(batch_size=batch, ema_decay=0.999, log_every=10)
    return from_dict(TrainConfig, d)


# ----------------------------------------------------------------------------- timing
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter  # the child's clock (--clock)


def timed(step, warmup: int, repeats: int, per_block: int, sync) -> list[float]:
    for _ in range(warmup):
        step()
    sync()
    out = []
    for _ in range(repeats):
        t0 = _clock()
        for _ in range(per_block):
            step()
        sync()
        out.append((_clock() - t0) / per_block)
    return out


def run_case(case: str, a: argparse.Namespace) -> dict:
    work = Path(a.workdir)
    root = image_folder(a.data, work)
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    kind, *rest = case.split(":")
    if kind == "train":
        preset_name, impl = rest
        cfg = train_config(preset_name, a.batch)
        cfg.device = a.device
        impl, *opts = impl.split("+")  # engine+cl+nocl+bf16+fp32+compile+graphs+eager+host+torchnorm: one of the engine's choices
        cfg.channels_last = "on" if "cl" in opts else "off" if "nocl" in opts else cfg.channels_last
        cfg.amp = "bf16" if "bf16" in opts else "no" if "fp32" in opts else cfg.amp
        cfg.compile = "compile" in opts
        # the whole step in one CUDA graph (train/graphs.py; the default on CUDA) or the eager step
        cfg.cuda_graphs = True if "graphs" in opts else False if "eager" in opts else cfg.cuda_graphs
        if "torchnorm" in opts:  # torch's nn.InstanceNorm2d instead of cxraug's (A/B of that one choice)
            import cxraug.models.common as common

            class TorchIN(torch.nn.InstanceNorm2d):
                def __init__(self, ch: int):
                    super().__init__(ch, affine=True)

            common.InstanceNorm2d = TorchIN
        if "host" in opts:  # keep the batches on the host (the CPU path) even on an accelerator
            from cxraug.train.engine import Trainer

            Trainer._resident = lambda self, ds: None
        fn = {"engine": engine_step, "compute": compute_step, "naive": naive_step}[impl]
        step = fn(cfg, root, work, dev)
        per_step = getattr(step, "images", cfg.batch_size * cfg.n_critic)  # real images the critic (or denoiser) takes
        per_block = a.steps
        secs = timed(step, a.warmup, a.repeats, per_block, sync)
        med = statistics.median(secs)
        from cxraug.train.engine import default_amp

        amp = "no" if impl == "naive" else cfg.amp if cfg.amp != "auto" else default_amp(dev)
        return {"amp": amp, "s_per_step": med, "steps_per_s": 1 / med, "images_per_s": per_step / med,
                "all_s_per_step": secs}  # fmt: skip
    if kind == "load":
        return load_case(rest[0], root, a)
    return fid_case(rest[0], root, a, dev, sync)


def engine_step(cfg, root: Path, work: Path, dev: torch.device):
    from cxraug.train.engine import Trainer

    tr = Trainer(cfg, cached(root, cfg.data.size), work / "engine-run", progress=False)
    step = tr.train_step
    return _counting(step, cfg.batch_size * max(tr.n_critic, 1))


def _counting(step, images: int):
    """``step`` with the real images one step consumes: batch x the critic updates, batch for a family without
    a critic (diffusion: one denoiser update per step)."""

    def run() -> None:
        step()

    run.images = images
    return run


def compute_step(cfg, root: Path, work: Path, dev: torch.device):
    """The engine's networks, optimisers and precision doing only the arithmetic of a step: ``n_critic``
    critic updates and one generator update on batches held in memory (the networks not being updated
    frozen, as the engine does), without drawing batches, EMA, RNG bookkeeping or logging."""
    from cxraug.train.engine import Trainer

    tr = Trainer(cfg, cached(root, cfg.data.size), work / "compute-run", progress=False)
    fam = tr.family
    batches = [tr._batch() for _ in range(tr.n_critic + 1)]  # drawn once, before timing (no critic: n_critic 0)
    for m in (*fam.generators.values(), *fam.critics.values()):
        m.train()

    def update(opt, loss_fn, frozen: dict, batch) -> None:
        params = [p for m in frozen.values() for p in m.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        with tr.autocast():
            loss, _ = loss_fn(batch)
        tr.scaler.scale(loss).backward()
        tr.scaler.step(opt)
        tr.scaler.update()
        for p in params:
            p.requires_grad_(True)

    def step() -> None:
        for i in range(tr.n_critic):
            update(tr.opt_d, fam.critic_loss, fam.generators, batches[i])
            fam.after_critic_step()
        update(tr.opt_g, fam.generator_loss, fam.critics, batches[-1])

    return _counting(step, cfg.batch_size * max(tr.n_critic, 1))


def naive_step(cfg, root: Path, work: Path, dev: torch.device):
    """The textbook loop: ImageFolder decoding PNGs every batch, default DataLoader, float32, no
    channels_last, no fused optimizer, loss.item() every iteration, gradient penalty by its own forward."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from cxraug.config import to_dict
    from cxraug.families import family_of

    s = cfg.data.size
    tf = transforms.Compose([transforms.Grayscale(), transforms.Resize(s), transforms.CenterCrop(s),
                             transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])  # fmt: skip
    loader = DataLoader(datasets.ImageFolder(str(root), tf), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    family, config = family_of(cfg.family), to_dict(cfg)
    G, D = family.build(config, 0).to(dev), textbook_norms(family.build_critics(config, 0)["D"]).to(dev)
    if cfg.optimizer == "rmsprop":
        opt_g, opt_d = torch.optim.RMSprop(G.parameters(), cfg.lr_g), torch.optim.RMSprop(D.parameters(), cfg.lr_d)
    else:
        opt_g = torch.optim.Adam(G.parameters(), cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    bce = torch.nn.BCEWithLogitsLoss()
    state = {"it": iter(loader)}

    def real_batch() -> torch.Tensor:
        try:
            x, _ = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            x, _ = next(state["it"])
        return x.to(dev)

    def step() -> None:
        for _ in range(cfg.n_critic):
            x = real_batch()
            z = torch.randn(x.size(0), cfg.z_dim, device=dev)
            fake = G(z).detach()
            opt_d.zero_grad()
            if cfg.loss == "bce":
                d_real, d_fake = D(x).view(-1), D(fake).view(-1)
                loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            else:
                loss_d = D(fake).mean() - D(x).mean()
                eps = torch.rand(x.size(0), 1, 1, 1, device=dev)
                x_hat = (eps * x + (1 - eps) * fake).requires_grad_(True)
                (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
                loss_d = loss_d + cfg.gp_lambda * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
            loss_d.backward()
            opt_d.step()
            loss_d.item()
        opt_g.zero_grad()
        z = torch.randn(cfg.batch_size, cfg.z_dim, device=dev)
        d_fake = D(G(z)).view(-1)
        loss_g = bce(d_fake, torch.ones_like(d_fake)) if cfg.loss == "bce" else -d_fake.mean()
        loss_g.backward()
        opt_g.step()
        loss_g.item()

    return step


def textbook_norms(m: torch.nn.Module) -> torch.nn.Module:
    """The naive loop uses torch's stock ``nn.InstanceNorm2d`` where the engine has its own (same maths)."""
    from cxraug.models.common import InstanceNorm2d

    for name, c in m.named_children():
        if isinstance(c, InstanceNorm2d):
            new = torch.nn.InstanceNorm2d(c.num_features, eps=c.eps, affine=True)
            new.load_state_dict(c.state_dict())
            setattr(m, name, new)
        else:
            textbook_norms(c)
    return m


def load_case(what: str, root: Path, a: argparse.Namespace) -> dict:
    n_batches = a.load_batches
    if what == "png":
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms

        tf = transforms.Compose([transforms.Grayscale(), transforms.Resize(64), transforms.CenterCrop(64),
                                 transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])  # fmt: skip
        loader = DataLoader(datasets.ImageFolder(str(root), tf), batch_size=a.batch, shuffle=True, drop_last=True)
        state = {"it": iter(loader)}

        def step() -> None:
            try:
                next(state["it"])
            except StopIteration:
                state["it"] = iter(loader)
                next(state["it"])
    else:
        ds = cached(root, 64)  # built (or found) before timing: the cache is a one-off cost per collection
        g = torch.Generator().manual_seed(0)

        def step() -> None:
            ds.batch(torch.randint(len(ds), (a.batch,), generator=g).numpy())

    secs = timed(step, 2, a.repeats, n_batches, lambda: None)
    med = statistics.median(secs)
    return {"s_per_batch": med, "images_per_s": a.batch / med, "all_s_per_batch": secs}


def fid_case(what: str, root: Path, a: argparse.Namespace, dev: torch.device, sync) -> dict:
    from cxraug.data.preprocess import u8_to_tensor

    note = ""
    if what == "encoder":
        from cxraug.metrics.encoder import ConvEncoder, save_encoder
        from cxraug.metrics.features import encoder_extractor

        path = save_encoder(ConvEncoder(64), Path(a.workdir) / "bench-encoder.safetensors")
        fn, size = encoder_extractor(path).to(dev).fn, 64
    elif what == "xrv-densenet121":
        import torchxrayvision as xrv

        from cxraug.metrics.features import xrv_extractor

        path = Path(a.workdir) / "xrv-random.pt"
        torch.save(xrv.models.DenseNet(weights=None).state_dict(), path)
        fn, size = xrv_extractor(weights_path=str(path)).to(dev).fn, 64
        note = "random weights (same cost as the pretrained ones)"
    else:
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=False, init_weights=False).eval().to(dev)
        net.fc = torch.nn.Identity()

        def fn(x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            return net(x.expand(-1, 3, -1, -1))

        size, note = 64, "torchvision InceptionV3 architecture, random weights (FID weights need the network)"
    imgs = u8_to_tensor(np.random.default_rng(0).integers(0, 256, (a.batch, size, size), dtype=np.uint8)).to(dev)

    @torch.no_grad()
    def step() -> None:
        fn(imgs.contiguous(memory_format=torch.channels_last))

    secs = timed(step, 1, a.repeats, 1, sync)
    med = statistics.median(secs)
    return {"s_per_batch": med, "images_per_s": a.batch / med, "note": note}


# ----------------------------------------------------------------------------- driver
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile",
                "amx_int8", "avx_vnni")  # fmt: skip


def cpu_flags() -> str:
    """The CPU's vector/matrix flags that decide fp32 vs bf16 speed, from ``lscpu`` (``/proc/cpuinfo`` without it)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        line = next(x for x in out.splitlines() if x.startswith("Flags:"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        try:
            line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        except (OSError, StopIteration):
            return "unknown"
    have = set(line.split(":", 1)[1].split())
    return " ".join(f for f in VECTOR_FLAGS if f in have) or "none of " + " ".join(VECTOR_FLAGS)


def default_amp_here() -> str:
    from cxraug.train.engine import default_amp

    return default_amp(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def machine() -> dict:
    cpu = platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": cpu_flags(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "default_amp": default_amp_here(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}  # fmt: skip


def child(a: argparse.Namespace) -> None:
    global _clock
    _clock = CLOCK[a.clock]
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run_case(a.case, a)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and a.device.startswith("cuda"):
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(res))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else "phantom",
                   help="flat folder of PNGs, or 'phantom'; default %(default)s")  # fmt: skip
    p.add_argument("--only", nargs="*", help=f"cases (prefix match) from: {' '.join(CASES)}")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is reported")
    p.add_argument("--steps", type=int, default=2, help="training steps per timed block")
    p.add_argument("--load-batches", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in every case (0: torch's default)")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="wall time (default), or the process's CPU time: robust on a machine shared with other "
                   "work, with --threads 1 (several threads' CPU time also counts their waiting)")  # fmt: skip
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        child(a)
        return 0
    cases = [c for c in CASES if not a.only or any(c.startswith(o) for o in a.only)]
    cases += [o for o in a.only or [] if o.count(":") == 2 and o not in cases]  # e.g. train:dcgan-64:engine+cl
    work = Path(a.workdir or tempfile.mkdtemp(prefix="cxraug-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CXRAUG_CACHE": str(work / "cache")}
    results, info = {}, machine()
    print(f"machine: {info}", file=sys.stderr)
    for c in cases:
        args = [sys.executable, __file__, "--case", c, "--workdir", str(work), "--data", a.data, "--batch",
                str(a.batch), "--warmup", str(a.warmup), "--repeats", str(a.repeats), "--steps", str(a.steps),
                "--load-batches", str(a.load_batches), "--device", a.device, "--threads", str(a.threads),
                "--clock", a.clock]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, env=env)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            err = r.stderr.strip().splitlines() or ["?"]
            results[c] = {"error": err[-1], "stderr_tail": err[-25:]}  # the whole story is in the JSON
        else:
            results[c] = json.loads(line[7:])
        print(f"{c:<28} {time.perf_counter() - t0:6.1f} s  {results[c]}", file=sys.stderr)
    info.update(clock=a.clock, case_threads=a.threads or info["threads"])
    print(table(results, info))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    dest = out / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.write_text(json.dumps({"machine": info, "args": vars(a), "results": results}, indent=2))
    print(f"\n(json: {dest.relative_to(ROOT)})")
    return 0


def side_by_side(results: dict) -> list[str]:
    """One row per training preset and engine precision: engine / compute-only / naive images/s and the two
    ratios. ``engine+fp32`` with ``compute+fp32`` (or ``+bf16``) gives a second row against the same naive loop."""
    presets = dict.fromkeys(c.split(":")[1] for c in results if c.startswith("train:"))  # in run order
    rows = []
    for p in presets:
        naive = results.get(f"train:{p}:naive", {}).get("images_per_s")
        for suffix in ("", "+bf16", "+fp32"):
            engine = results.get(f"train:{p}:engine{suffix}", {})
            if engine.get("images_per_s") is None:
                continue
            ips = {"engine": engine["images_per_s"], "naive": naive,
                   "compute": results.get(f"train:{p}:compute{suffix}", {}).get("images_per_s")}  # fmt: skip
            cell = {k: f"{v:.1f}" if v else "–" for k, v in ips.items()}
            of_compute = f"{100 * ips['engine'] / ips['compute']:.0f} %" if ips["compute"] else "–"
            vs_naive = f"{ips['engine'] / naive:.2f}x" if naive else "–"
            rows.append(f"| {p} | {engine.get('amp', '?')} | {cell['engine']} | {cell['compute']} | {cell['naive']} "
                        f"| {of_compute} | {vs_naive} |")  # fmt: skip
    if not rows:
        return []
    return ["", "| preset | engine precision | engine img/s | compute-only img/s | naive img/s | engine / compute-only "
            "| engine / naive |", "|---|---|---:|---:|---:|---:|---:|", *rows]  # fmt: skip


def table(results: dict, info: dict) -> str:
    lines = [f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads)"
             + (f", GPU {info['gpu']}" if info["gpu"] else ""),
             f"CPU flags: {info.get('cpu_flags', '?')}; default precision here: {info.get('default_amp', '?')}"
             + (f" (CXRAUG_AMP={os.environ['CXRAUG_AMP']})" if os.environ.get("CXRAUG_AMP") else ""),
             f"timing: {info.get('clock', 'wall')} clock, {info.get('case_threads', info['threads'])} torch thread(s) "
             "per case; images/s = 1 / (seconds of that clock per image)", "",
             "| case | images/s | s per step/batch | peak RSS MB | peak GPU MB | vs naive |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for c, r in results.items():
        if "error" in r:
            lines.append(f"| {c} | error: {r['error']} | | | | |")
            continue
        per = r.get("s_per_step", r.get("s_per_batch"))
        ratio = ""
        if ":engine" in c:
            base = results.get(c.split(":engine")[0] + ":naive", {})
            if "images_per_s" in base:
                ratio = f"{r['images_per_s'] / base['images_per_s']:.2f}x"
        if c == "load:cache" and "images_per_s" in results.get("load:png", {}):
            ratio = f"{r['images_per_s'] / results['load:png']['images_per_s']:.0f}x"
        note = f" ({r['note']})" if r.get("note") else ""
        gpu = f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r else ""
        lines.append(f"| {c}{note} | {r['images_per_s']:.0f} | {per:.4f} | {r['peak_rss_mb']:.0f} | {gpu} | {ratio} |")
    return "\n".join(lines + side_by_side(results))


if __name__ == "__main__":
    sys.exit(main())
