"""Command-line interface: ``cxraug <command> --help`` explains each stage.

Every command that produces files writes them into a new run folder under ``--out`` (default
``runs/``) together with its resolved ``config.yaml``; input folders are only ever read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from cxraug.errors import CXRAugError

log = logging.getLogger("cxraug")

EPILOG = """stages: data -> train -> evaluate -> synthesize/balance -> benchmark -> report
quick start:  cxraug demo           (offline, CPU, a few minutes)
docs:         README.md"""


def _add_data_args(p: argparse.ArgumentParser, path_required: bool = True, default: str = "phantom") -> None:
    if path_required:
        p.add_argument(
            "path", help="folder-per-class root, CSV manifest, cache folder, or 'phantom[:normal=300,covid=60]'"
        )
    else:
        p.add_argument(
            "--data",
            dest="path",
            default=default,
            help="data source (folder, CSV, cache, phantom spec); default %(default)s",
        )
    p.add_argument(
        "--size", type=int, default=64, help="square output size in px (64, 96, 128, 256, 299); default %(default)s"
    )
    p.add_argument("--clahe", action="store_true", help="apply CLAHE contrast equalisation (OpenCV)")
    p.add_argument("--clahe-clip", type=float, default=2.0, help="CLAHE clip limit; default %(default)s")
    p.add_argument("--clahe-tile", type=int, default=8, help="CLAHE tile grid size; default %(default)s")
    p.add_argument(
        "--resize", choices=["pad", "crop", "direct"], default="pad", help="aspect handling; default %(default)s"
    )
    p.add_argument("--cache-dir", default=None, help="cache root (default $CXRAUG_CACHE or ~/.cache/cxraug)")


def _data_cfg(a: argparse.Namespace):
    from cxraug.data.source import DataConfig

    return DataConfig(a.path, a.size, a.clahe, a.clahe_clip, a.clahe_tile, a.resize, getattr(a, "seed", 0), a.cache_dir)


# ----------------------------------------------------------------------------- data
def cmd_data_inspect(a: argparse.Namespace) -> int:
    from cxraug.data.source import open_source
    from cxraug.data.stats import inspect_collection

    coll = open_source(a.path, size=64)
    rep = inspect_collection(coll, near_threshold=a.near_threshold, progress=not a.quiet)
    if not a.skip_bad and rep.unreadable:
        for u in rep.unreadable:
            print(f"error: {u}", file=sys.stderr)
        return 1
    d = rep.to_dict()
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['root']}: {d['n_images']} readable images in {len(d['class_names'])} class(es)")
    for c in d["class_names"]:
        sk = d["skew_ratio"][c]
        print(f"  {c:<24} {d['counts'][c]:>7}   skew (neg/pos) {sk:.2f}")
    if d["sizes"]:
        s = d["sizes"]
        print(
            f"sizes (WxH): min {s['min'][0]}x{s['min'][1]}  median {s['median'][0]}x{s['median'][1]}  max {s['max'][0]}x{s['max'][1]}"
        )
    print("modes: " + ", ".join(f"{k} ({v})" for k, v in sorted(d["modes"].items())))
    for p in d["problems"]:
        print(f"warning: {p}")
    if d["unreadable"]:
        print(f"unreadable files: {len(d['unreadable'])} (skipped)")
        for u in d["unreadable"]:
            print(f"  {u}")
    groups = d["duplicate_groups"]
    n_ex = sum(g["kind"] == "exact" for g in groups)
    print(
        f"duplicate groups: {len(groups)} ({n_ex} exact, {len(groups) - n_ex} near, pHash distance <= {a.near_threshold})"
    )
    for g in groups:
        print(
            f"  [{g['kind']}{'' if g['kind'] == 'exact' else ' d=' + str(g['distance'])}] "
            + "  ".join(map(_short, g["paths"]))
        )
    return 0


def _short(p: str) -> str:
    from cxraug.errors import show_path

    return show_path(p)


def cmd_data_prepare(a: argparse.Namespace) -> int:
    from cxraug.config import save_config
    from cxraug.data.source import load_dataset
    from cxraug.io import ensure_outside, new_run_dir, write_json
    from cxraug.report.figures import save_grid

    cfg = _data_cfg(a)
    if not cfg.path.startswith("phantom"):
        ensure_outside(a.out, [cfg.path])
    ds = load_dataset(cfg, progress=not a.quiet)
    run = new_run_dir(a.out, "prepare")
    save_config(cfg, run / "config.yaml")
    import numpy as np

    rng = np.random.default_rng(0)
    pick = rng.choice(len(ds), size=min(64, len(ds)), replace=False)
    save_grid(np.asarray(ds.images[np.sort(pick)]), run / "preview.png")
    cache = ds.save(run / "dataset") if a.copy_cache else None
    write_json(
        run / "summary.json",
        {
            "n": len(ds),
            "counts": ds.counts(),
            "errors": ds.errors,
            "size": ds.size,
            "cache": str(cache) if cache else None,
        },
    )
    for e in ds.errors:
        print(f"skipped: {e}", file=sys.stderr)
    print(f"prepared {len(ds)} images at {ds.size}px ({', '.join(f'{k}={v}' for k, v in ds.counts().items())})")
    print(f"run folder: {run}")
    return 0


def cmd_data_split(a: argparse.Namespace) -> int:
    import csv
    import os

    import numpy as np

    from cxraug.config import save_config
    from cxraug.data.source import load_dataset
    from cxraug.data.splits import check_patient_disjoint, near_duplicates_in_test, patient_split
    from cxraug.data.stats import fingerprints
    from cxraug.io import atomic_path, ensure_outside, new_run_dir, write_json

    cfg = _data_cfg(a)
    if not cfg.path.startswith("phantom"):
        ensure_outside(a.out, [cfg.path])
    fr = tuple(float(x) for x in a.fractions.split(","))
    if len(fr) != 3:
        raise CXRAugError(f"--fractions needs three numbers train,val,test; got {a.fractions!r}")
    ds = load_dataset(cfg, progress=not a.quiet)
    sp = patient_split(ds.labels, ds.patient_ids, fr, a.seed, ds.sources, ds.paths)  # refuses synthetic images
    check_patient_disjoint(ds.patient_ids, sp)
    near = near_duplicates_in_test(fingerprints(np.asarray(ds.images)), sp, a.near_threshold)
    dup = sp["test"][near]
    if a.dedupe:
        sp["test"] = sp["test"][~near]
    run = new_run_dir(a.out, "split")
    save_config(cfg, run / "config.yaml")
    multi = ds.multilabel
    for name, idx in sp.items():
        with atomic_path(run / f"{name}.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "patient", *(ds.class_names if multi else ["label"])])
            for i in idx:
                lab = ds.labels[i]
                cols = [f"{v:g}" for v in lab] if multi else [ds.class_names[int(np.argmax(lab))]]
                w.writerow([os.path.abspath(ds.paths[i]), ds.patient_ids[i], *cols])
    counts = {k: {c: int((ds.label_index[v] == j).sum()) for j, c in enumerate(ds.class_names)} for k, v in sp.items()}
    write_json(run / "summary.json", {"counts": counts, "patients": len(set(ds.patient_ids)), "seed": a.seed,
                                      "fractions": fr, "near_threshold": a.near_threshold,
                                      "test_near_duplicates_of_train": [ds.paths[i] for i in dup],
                                      "removed_from_test": bool(a.dedupe), "errors": ds.errors})  # fmt: skip
    for k, c in counts.items():
        print(f"{k:<6} " + "  ".join(f"{n}={v}" for n, v in c.items()))
    what = "removed from test" if a.dedupe else "kept in test (use --dedupe to remove them)"
    print(f"{len(dup)} test image(s) near-duplicate a training image (pHash <= {a.near_threshold} bits): {what}")
    print(f"run folder: {run}   (train a GAN on the training split: cxraug train --data {run / 'train.csv'} ...)")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from cxraug import __version__

    p = argparse.ArgumentParser(
        prog="cxraug",
        description="GAN-based augmentation of chest X-ray datasets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"cxraug {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default="runs", help="where new run folders are created; default %(default)s")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("data", help="inspect and prepare a CXR collection")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    di = dsub.add_parser(
        "inspect",
        help="counts, sizes, modes, skew, duplicates, unreadable files",
        description="Read every image once and report what is in a collection. Writes nothing.",
    )
    di.add_argument("path", help="folder-per-class root, CSV manifest, or 'phantom'")
    di.add_argument("--json", action="store_true", help="print the report as JSON")
    di.add_argument(
        "--near-threshold",
        type=int,
        default=4,
        help="max pHash Hamming distance for near-duplicates; default %(default)s",
    )
    di.add_argument(
        "--skip-bad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report unreadable files and continue (default); --no-skip-bad exits 1 on any",
    )
    di.set_defaults(func=cmd_data_inspect)
    dp = dsub.add_parser(
        "prepare",
        help="preprocess once into the uint8 cache + a preview grid",
        description="Decode, (CLAHE), resize and cache a collection; writes a run folder with preview.png.",
    )
    _add_data_args(dp)
    dp.add_argument("--copy-cache", action="store_true", help="also write the cache into the run folder (portable)")
    dp.set_defaults(func=cmd_data_prepare)

    ds_ = dsub.add_parser(
        "split",
        help="patient-level train/val/test manifests + a cross-split duplicate check",
        description="Stratified, patient-level split written as train.csv/val.csv/test.csv (paths into your data; "
        "nothing is copied). Test images that (near-)duplicate a training image are reported, and removed "
        "with --dedupe. Synthetic images are refused.",
    )
    _add_data_args(ds_)
    ds_.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test; default %(default)s")
    ds_.add_argument("--seed", type=int, default=0)
    ds_.add_argument("--dedupe", action="store_true", help="remove near-duplicates of training images from test")
    ds_.add_argument("--near-threshold", type=int, default=4, help="pHash bits; default %(default)s")
    ds_.set_defaults(func=cmd_data_split)

    for register in _REGISTRY:
        register(sub)
    _add_common_everywhere(p)
    return p


def _add_common_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let -q/--out appear after the sub-command too (``cxraug data prepare X -q``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                if "-q" not in sp._option_string_actions:
                    sp.add_argument(
                        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
                    )
                if "--out" not in sp._option_string_actions:
                    sp.add_argument(
                        "--out", default=argparse.SUPPRESS, help="where new run folders are created (runs/)"
                    )
                _add_common_everywhere(sp)


_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def register(fn: Callable[[argparse._SubParsersAction], None]) -> Callable:
    _REGISTRY.append(fn)
    return fn


def _load_commands() -> None:
    import importlib

    for mod in (
        "cxraug.train.cli",
        "cxraug.metrics.cli",
        "cxraug.synth.cli",
        "cxraug.classify.cli",
        "cxraug.report.cli",
        "cxraug.demo",
    ):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _load_commands()
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 0 if a.command is None else 2
    try:
        return int(a.func(a) or 0)
    except CXRAugError as e:
        print(f"cxraug: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxraug: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
