"""``cxraug benchmark``: the classifier study (its report, ``cxraug report``, is in :mod:`cxraug.cli.report`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cxraug.cli.args import add_source_args, manifest_from_args, manifest_overrides, require

if TYPE_CHECKING:
    from cxraug.classify.config import StudyConfig


def check_study(cfg: StudyConfig) -> None:
    """The study's numbers, each refused with one line before any work."""
    import math

    from cxraug.io import check_device

    require(bool(cfg.regimes) and all(0 < r <= 1 for r in cfg.regimes),
            f"regimes must be fractions of the training data within (0, 1], got {cfg.regimes}")  # fmt: skip
    require(bool(cfg.seeds) and all(s >= 0 for s in cfg.seeds), f"seeds must be integers >= 0, got {cfg.seeds}")
    require(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
    require(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    require(math.isfinite(cfg.lr) and cfg.lr > 0, f"lr must be a number > 0, got {cfg.lr}")
    require(len(cfg.split) == 3 and all(0 <= f <= 1 for f in cfg.split) and abs(sum(cfg.split) - 1) < 1e-6,
            f"split must be three fractions train,val,test summing to 1, got {cfg.split}")  # fmt: skip
    require(16 <= cfg.size <= 1024, f"size must be within 16..1024, got {cfg.size}")
    require(bool(cfg.sources), "sources is empty: name at least one data source")
    require(cfg.bootstrap >= 20, f"bootstrap must be >= 20 resamples, got {cfg.bootstrap}")
    check_device(cfg.device)
    _check_study_bounds(cfg)


def _check_study_bounds(cfg) -> None:
    """Upper bounds of the study's counts, its classifier by name, and its `gan:` block through the same
    validator as ``cxraug train`` (:func:`cxraug.train.checks.check_train_config`): all before the study folder
    exists (a `gan: {preset: stylegan9}` was a KeyError, `gan: {steps: -5}` failed after the folder was made)."""
    from cxraug.classify.models import CLASSIFIERS
    from cxraug.errors import ConfigError, CXRAugError

    require(len(cfg.seeds) <= 1000 and all(s < 2**32 for s in cfg.seeds),
            f"seeds must be at most 1000 integers below 2^32, got {len(cfg.seeds)} up to {max(cfg.seeds)}")  # fmt: skip
    require(cfg.epochs <= 100_000, f"epochs must be <= 100000, got {cfg.epochs}")
    require(cfg.batch_size <= 65_536, f"batch_size must be <= 65536, got {cfg.batch_size}")
    require(cfg.bootstrap <= 1_000_000, f"bootstrap must be <= 1000000 resamples, got {cfg.bootstrap}")
    require(cfg.model in CLASSIFIERS, f"model {cfg.model!r} is not a classifier here; choose from "
            f"{', '.join(CLASSIFIERS)}")  # fmt: skip
    if cfg.gan is None:
        return
    from cxraug.classify.generators import gan_train_config
    from cxraug.train.checks import check_train_config

    try:
        check_train_config(gan_train_config(cfg.gan, cfg.size, minority=cfg.minority))
    except CXRAugError as e:
        raise ConfigError(f"gan: {e}") from None


def _apply_source_flags(cfg, a: argparse.Namespace) -> None:
    """``--data`` replaces the config's sources; the manifest flags become the ``manifest:`` of every CSV/TSV
    source, external-test and probe set that has none of its own. Each manifest is checked up front."""
    import os

    from cxraug.classify.config import Source
    from cxraug.data.readers import is_manifest
    from cxraug.data.source import is_phantom
    from cxraug.errors import ConfigError, CXRAugError, show_path

    if a.data:
        cfg.sources = [Source(p) for p in a.data]
    flagged = manifest_from_args(a) if manifest_overrides(a) else None
    for s in (*cfg.sources, *cfg.external_test, *cfg.probe):
        if not is_phantom(s.path) and not os.path.exists(s.path):
            raise CXRAugError(f"{show_path(s.path)}: no such file or folder (a data source of the study)")
        if s.manifest is None and flagged is not None and is_manifest(s.path):
            s.manifest = flagged
        try:
            s.data_config().validate()
        except CXRAugError as e:
            raise ConfigError(f"{show_path(s.path)}: {e}") from e


def cmd_benchmark(a: argparse.Namespace) -> int:
    from cxraug.classify.study import Study, load_study_config
    from cxraug.data.source import check_outputs
    from cxraug.io import new_run_dir

    if a.resume:
        from pathlib import Path

        out = Path(a.resume)
        cfg = load_study_config(out / "config.yaml", a.set)
    else:
        cfg = load_study_config(a.config, a.set)
        out = None
    _apply_source_flags(cfg, a)
    if a.executor:
        cfg.executor = a.executor
    if a.ray_address:
        cfg.executor, cfg.ray.address = "ray", a.ray_address
    check_study(cfg)
    inputs = [s.data_config() for s in (*cfg.sources, *cfg.external_test, *cfg.probe)]
    check_outputs(inputs, out or a.out)  # before any work: no output inside an input
    Study.check(cfg)  # the config's own refusals, before the study folder exists
    out = out or new_run_dir(a.out, "study")
    if a.dedupe is not None:
        cfg.dedupe = a.dedupe
    summary = Study(cfg, out, progress=not a.quiet).run()
    shown = ("auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "threshold", "macro_auc", "accuracy")
    if summary["confounding"].get("confounded"):
        print(summary["confounding"]["text"])
    for regime, by_p in summary["table"].items():
        print(f"regime {float(regime) * 100:g} %  (operating point: {cfg.operating_point} on validation; "
              "mean over seeds, internal test)")  # fmt: skip
        for p, m in by_p.items():
            print("  " + f"{p:<16}" + "  ".join(f"{k}={v['mean']:.3f}" for k, v in m.items() if k in shown))
        for name, tab in summary["external"].get(regime, {}).items():
            print(f"  external {name}:")
            for p, m in tab.items():
                print("    " + f"{p:<14}" + "  ".join(f"{k}={v['mean']:.3f}" for k, v in m.items() if k in shown))
        if summary.get("best_control", {}).get(regime):
            print(f"  strongest control (mean validation AUC): {summary['best_control'][regime]}")
        for label, sets in summary["verdict"].get(regime, {}).items():
            for s, v in sets.items():
                print(f"  {label} ({s}): {v['text']}")
    if summary.get("power"):
        print(summary["power"]["text"])
    if summary.get("headline"):
        print(summary["headline"]["text"])
    print(f"study folder: {out}   (cxraug report {out})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug benchmark``."""
    b = sub.add_parser(
        "benchmark",
        help="classifier study: real / standard-aug / controls / GAN-aug / synthetic-only x regimes x seeds",
        description="Run every protocol x data regime x seed on a fixed real-only test split and say whether GAN "
        "augmentation beats the strongest non-generative control (oversample, class-weighted, standard-aug, chosen on "
        "validation), with the test split's power printed before anything trains. Interrupted studies continue with "
        "--resume STUDY_DIR (finished runs are not redone).",
    )
    b.add_argument("--config", help="study YAML (fields of StudyConfig: sources, generator, regimes, seeds, ...)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field; repeatable")
    b.add_argument("--resume", metavar="STUDY_DIR", help="continue an interrupted study")
    b.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=None,
                   help="remove test images that (near-)duplicate a training image (default: on)")  # fmt: skip
    b.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="local: the runs one after another in this process (default); ray: each GAN training and "
                        "classifier run a Ray task, on this machine or a cluster (docs/ray.md; pip install "
                        "'cxraug[ray]'); the results are the same")  # fmt: skip
    b.add_argument("--ray-address", metavar="auto|HOST:PORT", default=None,
                   help="run on this Ray cluster (implies --executor ray); default: start Ray on this machine")  # fmt: skip
    b.add_argument("--data", action="append", metavar="PATH",
                   help="a data source (folder, CSV/TSV manifest, cache or phantom spec) in place of the config's "
                        "sources; repeatable")  # fmt: skip
    add_source_args(b, "each CSV/TSV source, external_test and probe set of the study without a `manifest:` of "
                    "its own (in YAML: sources: [{path: data.csv, manifest: {format: hannover}}])", cache=False)  # fmt: skip
    b.set_defaults(func=cmd_benchmark)
