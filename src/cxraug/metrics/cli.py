"""``cxraug evaluate`` and ``cxraug encoder train``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxraug.cli import register, require


def _real_images(path: str, size: int, cls: str | None, progress: bool) -> np.ndarray:
    from cxraug.data.source import DataConfig, load_dataset

    ds = load_dataset(DataConfig(path=path, size=size), progress=progress)
    return np.asarray((ds.only_class(cls) if cls else ds).images)


def _fake_images(
    fake: str, n: int, size: int, seed: int, progress: bool, source: str | None = None
) -> tuple[np.ndarray, str]:
    p = Path(fake)
    if p.is_file() and p.suffix in (".pt", ".pth"):
        from cxraug.synth.generate import generate

        imgs, _, info = generate(p, n, seed=seed, source=source)  # a translating generator: each source image once
        if imgs.shape[-1] != size:
            from cxraug.data.preprocess import resize

            imgs = np.stack([resize(i, size, "direct") for i in imgs])
        return imgs, f"checkpoint {p} ({info['preset']})"
    return _real_images(fake, size, None, progress)[:n], f"folder {p}"


def cmd_evaluate(a: argparse.Namespace) -> int:
    from cxraug.config import save_config
    from cxraug.data.source import check_outputs
    from cxraug.io import check_device, new_run_dir, write_json
    from cxraug.metrics import evaluate_images
    from cxraug.metrics.memorization import closest_pairs_grid

    require(a.n >= 2, f"--n must be >= 2 images per set, got {a.n}")
    require(1 <= a.k < a.n, f"--k must be within 1..n-1 ({a.n - 1}), got {a.k}")
    require(16 <= a.size <= 1024, f"--size must be within 16..1024, got {a.size}")
    require(a.seed >= 0, f"--seed must be >= 0, got {a.seed}")
    check_device(a.device)
    check_outputs([a.real, a.fake] + ([a.source] if a.source else []), a.out)  # before any work: no output in an input

    real = _real_images(a.real, a.size, a.cls, not a.quiet)
    fake, fake_desc = _fake_images(a.fake, a.n, a.size, a.seed, not a.quiet, a.source)
    res = evaluate_images(real, fake, a.features, a.n, a.k, a.seed, progress=not a.quiet, device=a.device)
    res.update({"real": a.real, "real_class": a.cls, "fake": fake_desc, "size": a.size})
    run = new_run_dir(a.out, "evaluate")
    save_config(vars(a) | {"func": None}, run / "config.yaml")
    write_json(run / "metrics.json", res)
    closest_pairs_grid(real, fake, res["memorization"], run / "closest_pairs.png")
    print(format_table(res))
    print(f"run folder: {run}")
    return 0


def format_table(res: dict) -> str:
    m = res.get("memorization", {})
    lines = [
        f"features: {res['features']} ({res['feature_dim']}-d)   n_real={res['n_real']}  n_fake={res['n_fake']}",
        f"  FID        {res['fid']:.3f}",
        f"  KID        {res['kid_mean']:.5f} ± {res['kid_std']:.5f}",
        f"  precision  {res['precision']:.3f}    recall   {res['recall']:.3f}",
        f"  density    {res['density']:.3f}    coverage {res['coverage']:.3f}",
    ]
    if m:
        lines.append(
            f"memorization: {m['n_flagged']} of {m['n_fake']} flagged as near-copies "
            f"(pixel RMSE < {m['thresholds']['pixel_rmse']}, or feature distance < "
            f"{m['thresholds']['feature_ratio']}x the real-to-real median); median pixel RMSE to nearest real "
            f"{m['pixel_rmse'].get('p50', float('nan')):.3f}"
        )
    lines.append("(numbers are comparable only within one feature extractor)")
    return "\n".join(lines)


def cmd_encoder_train(a: argparse.Namespace) -> int:
    from cxraug.data.source import check_outputs
    from cxraug.io import new_run_dir
    from cxraug.metrics.encoder import save_encoder, train_encoder

    require(a.steps >= 1, f"--steps must be >= 1, got {a.steps}")
    require(16 <= a.size <= 1024, f"--size must be within 16..1024, got {a.size}")
    require(a.seed >= 0, f"--seed must be >= 0, got {a.seed}")
    check_outputs([a.data], a.out)

    real = _real_images(a.data, a.size, a.cls, not a.quiet)
    enc = train_encoder(real, steps=a.steps, seed=a.seed, progress=not a.quiet)
    run = new_run_dir(a.out, "encoder")
    path = save_encoder(enc, run / "encoder.safetensors")
    print(f"encoder: {path}  (use --features encoder:{path})")
    return 0


@register
def _register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="FID / KID / precision-recall / density-coverage + memorization audit",
        description="Compare generated images (a folder or a checkpoint) with real ones. Writes metrics.json and "
        "closest_pairs.png to a new run folder. Numbers are comparable only within one feature extractor.",
    )
    p.add_argument("--real", required=True, help="real images: folder, CSV, cache or phantom spec")
    p.add_argument("--fake", required=True, help="generated images: folder, or a training checkpoint (.pt)")
    p.add_argument("--source", help="with a CycleGAN checkpoint as --fake: the images it translates (each once)")
    p.add_argument("--class", dest="cls", help="use only this class of the real set")
    p.add_argument(
        "--features",
        default="auto",
        help="inception | inception-768 | xrv | encoder:PATH | auto (inception if its weights are on disk, "
        "else an encoder trained on the real set); default %(default)s",
    )
    p.add_argument("--n", type=int, default=5000, help="max images per set; default %(default)s")
    p.add_argument("--k", type=int, default=5, help="k for precision/recall/density/coverage; default %(default)s")
    p.add_argument("--size", type=int, default=64, help="image size for comparison; default %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default="auto", help="where features are computed: auto (CUDA, MPS, else CPU) | cpu | cuda:N"
    )
    p.set_defaults(func=cmd_evaluate)

    e = sub.add_parser("encoder", help="train the offline feature encoder for the metrics")
    esub = e.add_subparsers(dest="encoder_command", metavar="ACTION")
    et = esub.add_parser(
        "train", help="train an encoder on real images", description="Train the offline metric encoder on real CXRs."
    )
    et.add_argument("--data", required=True, help="real training images (folder, CSV, cache, phantom)")
    et.add_argument("--class", dest="cls", help="use only this class")
    et.add_argument("--size", type=int, default=64)
    et.add_argument("--steps", type=int, default=400, help="default %(default)s")
    et.add_argument("--seed", type=int, default=0)
    et.set_defaults(func=cmd_encoder_train)
