"""``cxraug train``: train a GAN from a preset."""

from __future__ import annotations

import argparse
import os

from cxraug.cli.args import add_manifest_args, manifest_overrides
from cxraug.errors import CXRAugError


def cmd_train(a: argparse.Namespace) -> int:
    from cxraug.train import resume, train

    if a.list_presets:
        return print_presets()
    if a.resume:
        changed = [f"--{k.replace('_', '-')}" for k, default in a.train_defaults.items()
                   if k not in RESUME_FLAGS and getattr(a, k, default) != default]  # fmt: skip
        if changed:
            raise CXRAugError(f"--resume continues a run with its own settings; {', '.join(changed)} would change "
                              "them: start a new run (--config RUN/config.yaml) instead")  # fmt: skip
        run = resume(a.resume, steps=a.steps, progress=not a.quiet, eval_hook=_fid_hook(a))
    else:
        if a.steps is not None and a.epochs is not None:
            raise CXRAugError("give --steps or --epochs, not both")
        ov = list(a.set or [])
        for flag, key in (
            ("cls", "cls"),
            ("domain_a", "domain_a"),
            ("domain_b", "domain_b"),
            ("steps", "steps"),
            ("epochs", "epochs"),
            ("batch_size", "batch_size"),
            ("seed", "seed"),
            ("device", "device"),
            ("size", "data.size"),
        ):
            v = getattr(a, flag)
            if v is not None:
                ov.append(f"{key}={v}")
        if a.clahe:
            ov.append("data.clahe=true")
        ov = manifest_overrides(a) + ov  # --format, --path-column, ... (an explicit --set still wins)
        run = train(a.preset or "wgan-gp-64", a.data, a.out, config=a.config, overrides=ov, progress=not a.quiet,
                    eval_hook=_fid_hook(a))  # fmt: skip
    if os.environ.get("RANK", "0") == "0":  # once, under accelerate launch / torchrun
        print(f"run folder: {run}")
        print(f"samples:    {run / 'samples.png'}")
        print(f"checkpoint: {run / 'checkpoints' / 'last.pt'}")
    return 0


def print_presets() -> int:
    """``--list-presets``: one line per preset, its name, kind and the paper it follows, then the generator
    families (``family:`` in a config) and what each follows; nothing is trained."""
    from cxraug.families import FAMILIES
    from cxraug.train.config import list_presets

    infos = list_presets()
    width = max(len(i.name) for i in infos)
    for info in infos:
        print(f"{info.name:<{width}}  {info.kind:<5}  {info.paper}")
    print("\nfamilies (--set family=NAME):")
    width = max(map(len, FAMILIES))
    for name, fam in FAMILIES.items():
        print(f"{name:<{width}}  {fam.paper}")
    return 0


# what --resume takes
RESUME_FLAGS = {"resume", "steps", "fid_encoder", "quiet", "out", "func", "train_defaults", "list_presets"}


def _fid_hook(a: argparse.Namespace):
    if not getattr(a, "fid_encoder", None):
        return None
    from cxraug.metrics.hooks import EncoderFIDHook

    return EncoderFIDHook(a.fid_encoder)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug train``."""
    from cxraug.train.config import list_presets

    infos = list_presets()  # the presets folder (src/cxraug/train/presets/*.yaml), read once here
    names = {kind: [i.name for i in infos if i.kind == kind] for kind in ("paper", "tuned")}
    p = sub.add_parser(
        "train",
        help="train a generator (DCGAN, WGAN, WGAN-GP, conditional GAN, CycleGAN, StyleGAN2-ADA, DDPM) from a preset",
        description="Train a generator (a GAN or a diffusion model) on a CXR collection.\nPapers' setups (faithful; docs/presets.md compares them):\n  "
        + "\n  ".join(names["paper"])
        + "\nThe project's tuned defaults:\n  "
        + "\n  ".join(names["tuned"])
        + "\n--list-presets names the paper each follows."
        + "\nOverride any config field with --set key=value (e.g. --set lr_g=2e-4 --set diffaug=translation,cutout).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(i.name for i in infos), help="default wgan-gp-64")
    p.add_argument("--list-presets", action="store_true",
                   help="print each preset with its kind and the paper it follows, then exit")  # fmt: skip
    p.add_argument("--data", default="phantom", help="folder, CSV, cache or phantom spec; default %(default)s")
    p.add_argument("--class", dest="cls", help="train on this class only (e.g. COVID)")
    p.add_argument("--domain-a", help="CycleGAN source class (e.g. normal)")
    p.add_argument("--domain-b", help="CycleGAN target class (e.g. covid)")
    p.add_argument("--steps", type=int, help="generator updates (default: the preset's length)")
    p.add_argument(
        "--epochs", type=int, help="length in passes over the training images, converted to steps from their number "
        "and the batch (the paper presets give epochs)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int)
    p.add_argument("--size", type=int, help="image size (default from the preset name)")
    p.add_argument("--clahe", action="store_true", help="CLAHE preprocessing")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, mps")
    p.add_argument("--config", help="YAML config (e.g. a run's config.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field; repeatable")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed/finished run from its last checkpoint")
    p.add_argument("--fid-encoder", metavar="ENCODER", help="with --set fid_every=K: track encoder FID, keep best.pt")
    add_manifest_args(p)  # how to read a CSV/TSV --data (data.manifest.* in YAML)
    # every option's default, so that --resume can tell which were given (they would change the run)
    p.set_defaults(func=cmd_train, train_defaults={x.dest: x.default for x in p._actions if x.dest != "help"})
