"""Four-way comparison: DCGAN, WGAN-GP, StyleGAN2-ADA and DDPM on covid-cxnet at 64 px, each trained for
the same compute budget on the same machine, then judged by the same metrics (BENCHMARKS.md section 9).

    python benchmarks/four_way.py prepare                        # the split and the trace's FID encoder
    python benchmarks/four_way.py train dcgan --budget 900       # one contestant (run them side by side)
    python benchmarks/four_way.py evaluate --only dcgan          # metrics and synthesis speed
    python benchmarks/four_way.py study dcgan --budget 240       # the 10 % regime study with that family
    python benchmarks/four_way.py table                          # markdown tables of all of it
    python benchmarks/four_way.py figure                         # docs/four-way-covid-cxnet-64.png

Everything goes to runs/four-way/ (``--out``). Contestants: dcgan, wgan-gp, stylegan2-ada and ddpm, plus
wgan-clip, cgan and cyclegan for the time-to-quality trace only. CycleGAN translates NIH normal images
(``nih-64/normal``, 400) into COVID ones: its trace's fakes are the translations of the first 128 normal
images, its FID reference the COVID training images it is given (the family undersamples the larger domain
to the smaller one, as Zunair & Hamza do: 400 of the 763).

The budget is **CPU seconds of training in one thread** (``time.thread_time`` of the training loop; on an
otherwise idle core this is its wall time). Counting CPU time, not wall time, lets several contestants run
side by side, one core each, and still get exactly the same compute whatever else the machine does.
Evaluation during training (FID of 128 EMA samples, in the same feature space, every ``--eval-every`` CPU seconds, for the
time-to-quality trace) is timed apart and not charged to the budget.

Data: covid-cxnet (898 COVID images, no patient ids: one image = one patient), split 85 / 15 at random
(seed 0); the 15 % held-out part, less every image within the near-duplicate pHash distance of a training
image, is never trained on and serves as Meehan et al.'s held-out set in the data-copying test. Generators
train on the 85 %. ``evaluate`` draws 1,000 images per contestant (timed: samples per CPU-second of one
thread at synthesis) and runs ``cxraug.metrics.evaluate_images`` on them: FID and KID with their spread, precision /
recall / density / coverage, MS-SSIM diversity, the spectral check and the memorization audit, in the shipped
CXR feature space ``cxraug-cxr-v1`` (``--features cxr``, the default; what ``cxraug evaluate`` uses offline), so the
numbers compare across runs and machines. Next to them, the real-vs-real floor at the same n, as
``evaluate_images`` gives it (``res["floor"]``, what ``cxraug evaluate`` prints): the training images split in two
seeded halves A and B (one image per patient here), FID(A, B) against FID(A, the first |B| samples), both with
bootstrap CIs. ``--features trained`` reproduces the first (session 6) run: an encoder trained on a patient-level half of the
training images, a new feature space per reference set (issue 27: not comparable across runs).

**On a GPU** (``--device cuda --clock wall --size 64|128``): the budget is wall seconds of the training loop (CPU
time means nothing there), each contestant runs alone (one after another, not side by side), the presets are the
families' own at that size (``dcgan-128``, ``wgan-gp-128``, ``stylegan2-ada-128``, ``ddpm-128``) with the CPU sizing
overrides kept, and synthesis is timed by the wall clock with the device synchronised. Use one ``--out`` per size.

``study`` runs benchmarks/study-four-way.yaml (the COVID study at the 10 % regime, 3 seeds) with the
contestant's family in the `gan:` block, each seed's generator trained for the number of steps the
contestant makes in ``--budget`` CPU seconds at the rate ``train`` measured: equal compute per generator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "covid-cxnet"

# ADA's 'bgc' without luma flip: flipping the luma of a grey image inverts the radiograph (x -> -x).
ADA_CXR = "xflip,rotate90,xint,scale,rotate,aniso,xfrac,brightness,contrast"
# Each contestant: its preset and the overrides that size it for a CPU (the presets are GPU-sized). Batch 64
# for all; DiffAugment for the two paper GANs as in a study's `gan:` block; ADA for StyleGAN2.
CONTESTANTS: dict[str, tuple[str, list[str]]] = {
    "dcgan": ("dcgan-64", ["width=32", "batch_size=64", "diffaug=translation,cutout"]),
    "wgan-gp": ("wgan-gp-64", ["width=32", "batch_size=64", "diffaug=translation,cutout"]),
    "stylegan2-ada": ("stylegan2-ada-64", ["width=16", "z_dim=128", "w_dim=128", f"ada={ADA_CXR}"]),
    "ddpm": ("ddpm-64", ["width=16", "unet_layers=1", "sample_steps=25"]),
    # trace only (time-to-quality of the other noise-to-image families; not in the four-way table)
    "wgan-clip": ("wgan-clip-64", ["width=32", "batch_size=64"]),
    "cgan": ("cgan-64", ["width=32", "batch_size=64", "diffaug=translation,cutout"]),
    # the preset's ResNet generator (6 blocks) and PatchGAN at width 32; batch 16, not the paper's 1 (a CPU
    # wastes most of a batch-1 step on per-call overhead)
    "cyclegan": ("cyclegan-64", ["width=32", "batch_size=16", "domain_a=normal", "domain_b=covid-cxnet"]),
}
NORMAL = ROOT / ".." / "shared" / "data" / "nih-64" / "normal"  # CycleGAN's source domain
FOUR = ("dcgan", "wgan-gp", "stylegan2-ada", "ddpm")
HELDOUT = 0.15
N_EVAL = 1000


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def split_data(size: int = 64):
    """(training dataset, held-out uint8 images) of covid-cxnet: a seeded 85/15 split, near-duplicates of a
    training image removed from the held-out part."""
    import numpy as np

    from cxraug.data.source import DataConfig, load_dataset
    from cxraug.data.splits import near_duplicates_in_test
    from cxraug.data.stats import fingerprints

    ds = load_dataset(DataConfig(str(DATA), size=size), progress=False)
    perm = np.random.default_rng(0).permutation(len(ds))
    n_held = round(HELDOUT * len(ds))
    split = {"train": np.sort(perm[n_held:]), "test": np.sort(perm[:n_held])}
    imgs = np.asarray(ds.images)
    dup = near_duplicates_in_test(fingerprints(imgs), split)
    held = split["test"][~dup]
    return ds.subset(split["train"]), imgs[held], int(dup.sum())


def with_normals(train):
    """``train`` (the COVID training images) plus the NIH normal images as a second class: CycleGAN's two
    domains in one dataset (normal -> covid-cxnet)."""
    import numpy as np

    from cxraug.data.cache import CachedDataset
    from cxraug.data.source import DataConfig, load_dataset

    nor = load_dataset(DataConfig(str(NORMAL), size=train.size), progress=False)
    n, m = len(nor), len(train)
    labels = np.zeros((n + m, 2), np.float32)
    labels[:n, 0], labels[n:, 1] = 1, 1
    return CachedDataset(
        images=np.concatenate([np.asarray(nor.images), np.asarray(train.images)]), labels=labels,
        class_names=["normal", *train.class_names], patient_ids=[*nor.patient_ids, *train.patient_ids],
        paths=[*nor.paths, *train.paths], sources=[*nor.sources, *train.sources], prep=train.prep,
    )  # fmt: skip


def trace_features(out: Path, train, features: str) -> str:
    """The trace's FID features: ``cxr`` (fixed, nothing to prepare), or with ``trained`` the offline encoder
    trained once on the training images and shared by all contestants (``prepare`` makes it first)."""
    return "cxr" if features == "cxr" else f"encoder:{trace_encoder(out, train)}"


def trace_encoder(out: Path, train) -> Path:
    """The trace's FID features: the offline encoder, trained once on the training images and shared by all
    contestants (``prepare`` makes it before they start side by side)."""
    import numpy as np

    from cxraug.metrics.encoder import save_encoder, train_encoder

    enc = out / "trace-encoder.safetensors"
    if not enc.exists():
        out.mkdir(parents=True, exist_ok=True)
        save_encoder(train_encoder(np.asarray(train.images), progress=False), enc)
    return enc


def contestant(name: str, size: int) -> tuple[str, list[str]]:
    """(preset, overrides) of ``name`` at ``size``: the family's own preset at that size."""
    from cxraug.train.config import PRESETS

    preset_name, overrides = CONTESTANTS[name]
    sized = preset_name.rsplit("-", 1)[0] + f"-{size}"
    if sized not in PRESETS:
        raise SystemExit(f"{name}: no preset {sized} (at {size} px)")
    return sized, overrides


def _clock(kind: str, device: str = "cpu"):
    """The budget's clock: this thread's CPU time, or the wall clock (a GPU: synchronised before reading)."""
    if kind == "cpu":
        return time.thread_time

    def wall() -> float:
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    return wall


def cmd_prepare(a: argparse.Namespace) -> int:
    train, held, n_dup = split_data(a.size)
    print(f"{len(train)} training images, {len(held)} held out ({n_dup} near-duplicates of training images dropped)")
    print(f"trace features: {trace_features(Path(a.out), train, a.features)}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    _one_thread()
    from cxraug.config import load_config
    from cxraug.metrics.hooks import EncoderFIDHook
    from cxraug.train.config import TrainConfig, preset
    from cxraug.train.engine import Trainer

    name = a.name
    preset_name, overrides = contestant(name, a.size)
    out = Path(a.out) / name
    out.mkdir(parents=True, exist_ok=True)
    train, held, n_dup = split_data(a.size)
    feats = trace_features(Path(a.out), train, a.features)
    cfg = load_config(TrainConfig, overrides=[*overrides, "steps=10000000", "fid_every=0", "sample_every=10000000",
                                          "ckpt_every=10000000", f"fid_n={a.fid_n}", "threads=1", f"device={a.device}",
                                          *a.set],
                      base=preset(preset_name))  # fmt: skip
    tr = Trainer(cfg, with_normals(train) if cfg.domain_a else train, out / "run", progress=False)
    hook = EncoderFIDHook(feats)
    trace: list[dict] = []
    t_train = t_eval = 0.0
    next_eval = 0.0

    clock = _clock(a.clock, a.device)

    def evaluate() -> None:
        nonlocal t_eval
        e0 = clock()
        fid = hook(tr)
        t_eval += clock() - e0
        trace.append({"step": tr.step, "cpu_s": round(t_train, 1), "images": tr.images_seen, "fid": round(fid, 3)})
        print(f"{name}: step {tr.step:6d}  {t_train:7.1f} {a.clock}-s  FID {fid:7.2f}", file=sys.stderr, flush=True)

    wall0 = time.perf_counter()
    while t_train < a.budget:
        if t_train >= next_eval:
            evaluate()
            next_eval += a.eval_every
        c0 = clock()
        logs = tr.train_step()
        if tr.step % 10 == 0:
            for k, v in logs.items():
                tr.history.setdefault(k, []).append([tr.step, float(v)])
        t_train += clock() - c0
    evaluate()
    tr.run_dir.mkdir(parents=True, exist_ok=True)
    tr.save_samples()
    tr.save_curves()
    ckpt = tr.save_checkpoint(out / "last.pt")
    info = {"name": name, "preset": preset_name, "overrides": [*overrides, *a.set], "budget_cpu_s": a.budget,
            "clock": a.clock, "device": a.device, "size": a.size,
            "train_cpu_s": round(t_train, 1), "eval_cpu_s": round(t_eval, 1),
            "wall_s": round(time.perf_counter() - wall0, 1), "steps": tr.step, "images_seen": tr.images_seen,
            "train_images": len(train), "heldout_images": len(held), "heldout_near_duplicates_dropped": n_dup,
            "params_g": sum(p.numel() for p in tr.main_generator.parameters()),
            "params_d": sum(p.numel() for m in tr.family.critics.values() for p in m.parameters()),
            "trace": trace, "trace_features": feats, "checkpoint": str(ckpt), "cpu": _cpu()}  # fmt: skip
    (out / "train.json").write_text(json.dumps(info, indent=2))
    print(f"{name}: {tr.step} steps in {t_train:.0f} {a.clock}-s, last FID {trace[-1]['fid']:.2f}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    _one_thread()
    import numpy as np
    import torch

    from cxraug.metrics import evaluate_images
    from cxraug.plotting import save_grid
    from cxraug.synth.generate import generate

    train, held, _ = split_data(a.size)
    real = np.asarray(train.images)
    names = a.only or [n for n in CONTESTANTS if (Path(a.out) / n / "last.pt").exists()]
    for name in names:
        d = Path(a.out) / name
        clock = _clock(a.clock, a.device)  # cpu: this thread's CPU time, unmoved by other jobs on the machine
        generate(d / "last.pt", 8, seed=1, device=a.device)  # warm-up: the first call pays for imports and allocation
        t0 = clock()
        fake, _, _ = generate(d / "last.pt", N_EVAL, seed=a.seed, device=a.device)
        gen_s = clock() - t0
        res = evaluate_images(real, fake, features=a.features, n=N_EVAL, seed=0, progress=False, heldout_u8=held,
                              device=a.device)  # fmt: skip
        fl = res["floor"]  # the same halves for every contestant: same reference, same seed
        floor = {"features": res["features"], "n_ref": fl["n_a"], "n": fl["n"], "fid": fl["real"]["fid"],
                 "fid_ci95": fl["real"]["ci95"], "split": fl["split"]}  # fmt: skip
        res["matched_n"] = {**floor, "fid": fl["generated"]["fid"], "fid_ci95": fl["generated"]["ci95"]}
        (Path(a.out) / "floor.json").write_text(json.dumps(floor, indent=2))
        res["samples_per_s"] = round(N_EVAL / gen_s, 2)
        res["synthesis_s"] = round(gen_s, 1)
        (d / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
        grid = torch.from_numpy(fake[:64]).float().div(127.5).sub(1).unsqueeze(1)
        save_grid(grid, d / "grid.png", nrow=8)
        print(f"{name}: FID {res['fid']:.2f}  KID {res['kid_mean']:.4f}  {res['samples_per_s']} img/s; at n "
              f"{floor['n']}: {res['matched_n']['fid']:.2f} vs real-vs-real {floor['fid']:.2f}", flush=True)
    return 0


def minority_per_seed(cfg_path: Path) -> list[int]:
    """How many minority training images each seed's generator gets in the study (its lowest regime)."""
    import tempfile

    from cxraug.classify.study import Study, load_study_config

    cfg = load_study_config(cfg_path, ["external_test=[]", "probe=[]"])
    st = Study(cfg, tempfile.mkdtemp(prefix="cxraug-four-way-"), progress=False)
    st.prepare()
    return [len(st._minority_train(min(cfg.regimes), s)) for s in cfg.seeds]


def study_config(name: str, out: Path, budget: float) -> Path:
    """benchmarks/study-four-way.yaml with ``name``'s family in the `gan:` block, written beside its results.
    Equal compute per generator: as many images through training as ``name`` processes in ``budget`` CPU
    seconds at its measured rate (batch 64), i.e. steps = budget x steps/s x 64 / the study's batch, which
    is capped at the seed's minority training images."""
    from cxraug.config import load_yaml

    info = json.loads((out / name / "train.json").read_text())
    root = ROOT / "benchmarks"
    cfg = load_yaml((root / "study-four-way.yaml").read_text())
    for k in ("sources", "external_test", "probe"):  # relative to the repository root -> absolute
        cfg[k] = [dict(s, path=str((ROOT / s["path"]).resolve())) for s in cfg.get(k, [])]
    tmp = out / name / "study-base.yaml"
    tmp.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    batch = min(64, min(minority_per_seed(tmp)))
    steps = max(1, round(info["steps"] / info["train_cpu_s"] * budget * 64 / batch))
    preset_name, overrides = CONTESTANTS[name]
    gan: dict = {"preset": preset_name, "steps": steps, "batch_size": 64, "diffaug": "", "overrides": []}
    for o in overrides:
        k, v = o.split("=", 1)
        if k == "width":
            gan["width"] = int(v)
        elif k == "diffaug":
            gan["diffaug"] = v
        elif k != "batch_size":
            gan["overrides"].append(o)
    cfg["gan"] = gan
    dest = out / name / "study.yaml"
    dest.write_text(json.dumps(cfg, indent=2))
    tmp.unlink()
    print(f"{name}: {steps} generator steps of batch {batch} per seed ({budget:.0f} CPU-s at batch 64)")
    return dest


def cmd_study(a: argparse.Namespace) -> int:
    import subprocess

    out = Path(a.out)
    cfg = study_config(a.name, out, a.budget)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cli = [sys.executable, "-m", "cxraug", "benchmark", "--config", str(cfg), "--out", str(out / a.name), "-q"]
    return subprocess.call(cli, env=env)


def _first_below(trace: list[dict], threshold: float) -> str:
    hit = next((t for t in trace if t["fid"] <= threshold), None)
    return f"{hit['cpu_s']:.0f} s (step {hit['step']})" if hit else "not reached"


def cmd_table(a: argparse.Namespace) -> int:
    """Markdown tables for BENCHMARKS.md from what ``train``, ``evaluate`` and ``study`` wrote."""
    out = Path(a.out)
    info = {
        n: json.loads((out / n / "train.json").read_text()) for n in CONTESTANTS if (out / n / "train.json").exists()
    }
    print(
        "| family | steps | images seen | params G / D | FID [95 % CI] | FID at the floor's n | KID ×10³ (± std) | "
        "precision | recall | density | coverage | MS-SSIM | spectral dB | flagged copies | Meehan Z_U | samples/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    if (out / "floor.json").exists():
        f = json.loads((out / "floor.json").read_text())
        print(f"| real vs real (floor) | | | | | {f['fid']:.2f} [{f['fid_ci95'][0]:.2f}, {f['fid_ci95'][1]:.2f}] "
              "| | | | | | | | | | |")  # fmt: skip
    for n in FOUR:
        if n not in info or not (out / n / "metrics.json").exists():
            continue
        t, m = info[n], json.loads((out / n / "metrics.json").read_text())
        mem = m.get("memorization") or {}
        z = (mem.get("three_sample") or {}).get("z_u", float("nan"))
        lo, hi = m["fid_ci95"]
        mt = m.get("matched_n")
        matched = f"{mt['fid']:.2f} [{mt['fid_ci95'][0]:.2f}, {mt['fid_ci95'][1]:.2f}]" if mt else "–"
        sp = (m.get("spectral") or {}).get("all")
        spec = f"{sp['distance']:.2f} (floor {sp['floor']['p95']:.2f})" if sp else "–"
        print(f"| {n} | {t['steps']} | {t['images_seen']:,} | {t['params_g'] / 1e6:.2f} M / {t['params_d'] / 1e6:.2f} M | "
              f"{m['fid']:.2f} [{lo:.2f}, {hi:.2f}] | {matched} | {m['kid_mean'] * 1e3:.1f} ± {m['kid_std'] * 1e3:.1f} | "
              f"{m['precision']:.3f} | {m['recall']:.3f} | {m['density']:.3f} | {m['coverage']:.3f} | "
              f"{m['diversity']['synthetic']['ms_ssim']:.3f} | {spec} | {mem.get('n_flagged', 0)} / {mem.get('n_fake', 0)} | "
              f"{z:+.2f} | {m['samples_per_s']:.1f} |")  # fmt: skip
    real_ms = [json.loads((out / n / "metrics.json").read_text())["diversity"]["real"]["ms_ssim"]
               for n in FOUR if (out / n / "metrics.json").exists()]  # fmt: skip
    if real_ms:
        print(f"\nMS-SSIM of real image pairs (the reference): {real_ms[0]:.3f}")
    print()
    n_pts = max(len(t["trace"]) for t in info.values())
    every = next(iter(info.values()))["budget_cpu_s"] / max(n_pts - 1, 1)
    print("| family (trace: FID of 128 EMA samples) | " + " | ".join(f"{i * every:.0f} s" for i in range(n_pts))
          + " | to FID ≤ 40 | to FID ≤ 25 |")  # fmt: skip
    print("|---|" + "---:|" * (n_pts + 2))
    for n, t in info.items():
        fids = [f"{p['fid']:.1f}" for p in t["trace"]] + ["–"] * (n_pts - len(t["trace"]))
        trained = [p for p in t["trace"] if p["step"] > 0]  # an untrained network's score is no achievement
        print(f"| {n} | " + " | ".join(fids) + f" | {_first_below(trained, 40)} | {_first_below(trained, 25)} |")
    print()
    print(
        "| family | GAN steps per seed | standard-aug AUC | gan-aug AUC | gan-aug vs standard-aug (internal) | "
        "(external) |"
    )
    print("|---|---:|---:|---:|---|---|")
    for n in FOUR:
        res = sorted((out / n).glob("study-*/results.json"))
        if not res:
            continue
        r = json.loads(res[-1].read_text())
        s = r["summary"]
        reg = next(iter(s["table"]))
        tab, ver = s["table"][reg], s["verdict"][reg].get("gan-aug vs standard-aug", {})
        steps = r["config"]["gan"]["steps"]
        auc = {p: f"{tab[p]['auc']['mean']:.3f} ± {tab[p]['auc']['ci']:.3f}" for p in tab}
        words = {k: v["word"] for k, v in ver.items()}
        diff = s["comparisons"][reg]["gan-aug vs standard-aug"]["internal"]
        ci = diff.get("ci", [float("nan")] * 2)
        print(
            f"| {n} | {steps} | {auc['standard-aug']} | {auc['gan-aug']} | {words.get('internal', '–')} "
            f"(CI [{ci[0]:+.3f}, {ci[1]:+.3f}]) | {words.get('external', '–')} |"
        )
    return 0


def cmd_figure(a: argparse.Namespace) -> int:
    """The four contestants' first 64 evaluation images side by side, titled with their FID (for docs/)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(a.out)
    names = [n for n in FOUR if (out / n / "grid.png").exists() and (out / n / "metrics.json").exists()]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.6))
    for ax, n in zip(np.atleast_1d(axes), names):
        m = json.loads((out / n / "metrics.json").read_text())
        t = json.loads((out / n / "train.json").read_text())
        ax.imshow(plt.imread(out / n / "grid.png"), cmap="gray")
        ax.set_title(f"{n}: {t['steps']} steps\nFID {m['fid']:.1f} ({m['features']})", fontsize=11)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(a.dest, dpi=80)
    from PIL import Image

    Image.open(a.dest).convert("L").save(a.dest, optimize=True)  # grey images: a quarter of the bytes
    print(a.dest)
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


FEATURES = {"choices": ["cxr", "trained"], "default": "cxr",
            "help": "feature space of FID and the trace: cxr (the shipped cxraug-cxr-v1, comparable across runs) or "
                    "trained (an encoder trained on half the training images, as the first run did)"}  # fmt: skip


SIZE = {"type": int, "default": 64, "choices": [64, 128], "help": "image size; the presets at that size"}
CLOCK = {"choices": ["cpu", "wall"], "default": "cpu",
         "help": "budget and synthesis clock: cpu (this thread's CPU seconds; contestants may run side by side) or "
                 "wall (seconds of the wall clock, device synchronised: a GPU, one contestant at a time)"}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("prepare", help="the split and the trace's encoder (before contestants run side by side)")
    r.add_argument("--out", default=str(ROOT / "runs" / "four-way"))
    r.add_argument("--features", **FEATURES)
    r.add_argument("--size", **SIZE)
    r.set_defaults(func=cmd_prepare)
    t = sub.add_parser("train", help="train one contestant for a CPU-time budget")
    t.add_argument("name", choices=list(CONTESTANTS))
    t.add_argument("--budget", type=float, default=900.0, help="CPU seconds of training (one thread)")
    t.add_argument("--eval-every", type=float, default=225.0, help="CPU seconds of training between FID points")
    t.add_argument("--fid-n", type=int, default=128, help="EMA samples per FID point of the trace")
    t.add_argument("--out", default=str(ROOT / "runs" / "four-way"))
    t.add_argument("--features", **FEATURES)
    t.add_argument("--size", **SIZE)
    t.add_argument("--clock", **CLOCK)
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="metrics and synthesis speed of every trained contestant")
    e.add_argument("--out", default=str(ROOT / "runs" / "four-way"))
    e.add_argument("--features", **FEATURES)
    e.add_argument("--size", **SIZE)
    e.add_argument("--clock", **CLOCK)
    e.add_argument("--device", default="cpu", help="where synthesis and the features run: cpu (default) or cuda")
    e.add_argument("--only", nargs="*")
    # not 0, as it was chosen before the cause of the seed-0 anomaly was known (cxraug.seeding: weights
    # used to be initialised from the same stream as synthesis seed 0); any seed is fine since that fix
    e.add_argument("--seed", type=int, default=1000, help="noise seed of the evaluated samples")
    e.set_defaults(func=cmd_evaluate)
    d = sub.add_parser("study", help="the 10 %% regime study with a contestant's family, equal GAN budget")
    d.add_argument("name", choices=list(CONTESTANTS))
    d.add_argument("--budget", type=float, default=240.0, help="CPU seconds of generator training per seed")
    d.add_argument("--out", default=str(ROOT / "runs" / "four-way"))
    d.set_defaults(func=cmd_study)
    f = sub.add_parser("figure", help="the four sample grids side by side, for docs/")
    f.add_argument("--out", default=str(ROOT / "runs" / "four-way"))
    f.add_argument("--dest", default=str(ROOT / "docs" / "four-way-covid-cxnet-64.png"))
    f.set_defaults(func=cmd_figure)
    b = sub.add_parser("table", help="markdown tables of everything measured so far")
    b.add_argument("--out", default=str(ROOT / "runs" / "four-way"))
    b.set_defaults(func=cmd_table)
    a = p.parse_args()
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
