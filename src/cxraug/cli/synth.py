"""``cxraug synthesize`` and ``cxraug balance``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxraug.cli.args import add_source_args, require, source_config


def cmd_synthesize(a: argparse.Namespace) -> int:
    from cxraug.data import skipped
    from cxraug.io import check_device, ensure_outside
    from cxraug.synth.generate import MAX_N, generate_batches
    from cxraug.synth.write import checkpoint_hash, write_manifest, write_synthetic

    require(a.n is None or a.n >= 1, f"--n must be >= 1, got {a.n}")
    require(a.n is None or a.n <= MAX_N, f"--n must be <= {MAX_N:,} images per run, got {a.n or 0:,}")
    require(a.seed >= 0, f"--seed must be >= 0, got {a.seed}")
    check_device(a.device)
    out = Path(a.out_dir)
    if out.exists() and any(out.iterdir()):
        from cxraug.errors import CXRAugError

        raise CXRAugError(f"{out} exists and is not empty; choose a new folder (outputs are never overwritten)")
    ensure_outside(out, [a.checkpoint])  # the checkpoint's folder (a missing checkpoint is reported below)
    source = source_config(a, a.source)
    if source:
        from cxraug.data.source import check_outputs

        check_outputs([source], out)  # nothing written inside the source images' folders
    # batch by batch: a large --n holds one batch of images in memory, and each PNG is written as it is drawn
    left_out: list[str] = []
    info, batches = generate_batches(a.checkpoint, a.n, seed=a.seed, label=a.label, device=a.device, source=source,
                                     left_out=left_out)  # fmt: skip
    ck = checkpoint_hash(a.checkpoint)
    rows: list[dict] = []
    for imgs, labs in batches:
        rows += write_synthetic(out, imgs, labs, class_names=info["class_names"], checkpoint=a.checkpoint, seed=a.seed,
                                start=len(rows), ck=ck)  # fmt: skip
    print(f"wrote {len(rows)} synthetic images + {write_manifest(out, rows)}")
    skipped.save(out, left_out)  # --source files left out
    return 0


def cmd_balance(a: argparse.Namespace) -> int:
    import sys

    from cxraug.config import save_config
    from cxraug.data import skipped
    from cxraug.data.cache import CachedDataset
    from cxraug.data.source import check_outputs, is_cache, load_dataset, skipped_lines
    from cxraug.io import new_run_dir, write_json
    from cxraug.synth.balance import plan_balance
    from cxraug.synth.generate import describe, generate
    from cxraug.synth.write import write_manifest, write_synthetic

    require(a.seed >= 0, f"--seed must be >= 0, got {a.seed}")
    data = source_config(a, a.data, CachedDataset.load(a.data).size if is_cache(a.data) else 64)
    source = source_config(a, a.source)
    check_outputs([x for x in (data, source) if x], a.out)  # data folders, a manifest's folder, its image folders
    ds = load_dataset(data, progress=not a.quiet)  # unreadable files do not count (each is named on stderr)
    left_out = skipped_lines(ds)
    counts = ds.counts()
    info = describe(a.generator)
    can = [info["trained_on_class"]] if not info["conditional"] and info["trained_on_class"] else None
    if info["conditional"]:
        can = [c for c in counts if c in info["class_names"]]
    if can is None:
        from cxraug.errors import CXRAugError

        raise CXRAugError("the generator was trained on all classes at once; train it with --class to balance")
    plan = plan_balance(counts, a.strategy, total=len(ds), only=can)
    run = new_run_dir(a.out, "balance")
    save_config(vars(a) | {"func": None}, run / "config.yaml")
    rows = [{"path": p, "label": ds.class_names[k], "labels": ds.class_names[k], "patient_id": pid,
             "synthetic": "false"} for p, k, pid in zip(ds.paths, ds.label_index, ds.patient_ids)]  # fmt: skip
    added: dict[str, int] = {}
    for c, n in plan.items():
        imgs, _labs, info = generate(a.generator, n, seed=a.seed, label=c if info["conditional"] else None,
                                     source=source, left_out=left_out)  # fmt: skip
        added[c] = len(imgs)  # a translating generator gives at most one image per source image
        lab = np.zeros((len(imgs), len(ds.class_names)), np.float32)
        lab[:, ds.class_names.index(c)] = 1
        rows += write_synthetic(run / "synthetic", imgs, lab, class_names=ds.class_names, checkpoint=a.generator,
                                seed=a.seed, prefix=c)  # fmt: skip
    write_manifest(run, rows)
    after = {c: counts[c] + added.get(c, 0) for c in counts}
    write_json(run / "balance.json", {"strategy": a.strategy, "before": counts, "planned": plan, "added": added,
                                      "after": after})  # fmt: skip
    print(f"{'class':<20}{'before':>8}{'added':>8}{'after':>8}")
    for c in counts:
        print(f"{c:<20}{counts[c]:>8}{added.get(c, 0):>8}{after[c]:>8}")
    for c, n in added.items():
        if n < plan[c]:
            print(f"note: {c}: {n} of the planned {plan[c]} images (the generator translates each --source image "
                  "once)", file=sys.stderr)  # fmt: skip
    skipped.save(run, left_out)
    print(f"run folder: {run} (manifest.csv lists real + synthetic; synthetic rows marked)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug synthesize`` and ``cxraug balance``."""
    p = sub.add_parser("synthesize", help="generate N images from a checkpoint (marked PNGs + manifest)")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (RUN/checkpoints/last.pt or best.pt)")
    p.add_argument(
        "--n",
        type=int,
        help="how many images (noise generators: required; translating generators: "
        "at most this many source images, each translated once; default all)",
    )
    p.add_argument("--source", help="images to translate (CycleGAN checkpoints): folder, CSV, cache or phantom spec")
    p.add_argument("--label", help="for conditional GANs: draw label vectors of this pathology (an unconditional "
                   "generator takes only the class it was trained on)")
    p.add_argument("--seed", type=int, default=0, help="noise/label/source draws; the same seed gives the same images")
    p.add_argument(
        "--device", default="cpu", help="cpu | cuda | auto; the same seed gives the same images up to float rounding"
    )
    p.add_argument("--out", dest="out_dir", required=True, help="new folder for the PNGs and manifest")
    add_source_args(p, "--source", constant_label=False)  # --label above picks the pathology to draw
    p.set_defaults(func=cmd_synthesize)
    b = sub.add_parser(
        "balance",
        help="generate the synthetic images a collection needs for a target balance",
        description="Strategies: equalize (all classes to the largest), min-fraction:0.15 (every label >= 15 %), "
        "skew:1.0 (minority to negatives/positives = 1.0).",
    )
    b.add_argument("--data", required=True, help="the real collection to balance: folder, CSV/TSV manifest, cache "
                   "or phantom spec (its images are listed in the new manifest.csv, never copied)")  # fmt: skip
    b.add_argument("--generator", required=True, help="checkpoint trained on the class(es) to add")
    b.add_argument("--strategy", default="equalize", help="equalize | min-fraction:F | skew:R; default %(default)s")
    b.add_argument("--source", help="images to translate, for a translating (CycleGAN) generator")
    b.add_argument("--seed", type=int, default=0, help="seed of the generator's draws; default %(default)s")
    add_source_args(b, "--data and --source")
    b.set_defaults(func=cmd_balance)
