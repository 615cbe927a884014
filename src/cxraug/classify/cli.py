"""``cxraug benchmark`` (``cxraug report`` is in :mod:`cxraug.report.cli`)."""

from __future__ import annotations

import argparse

from cxraug.cli import register


def cmd_benchmark(a: argparse.Namespace) -> int:
    from cxraug.classify.study import Study, load_study_config
    from cxraug.data.source import check_outputs
    from cxraug.io import new_run_dir

    if a.resume:
        from pathlib import Path

        out = Path(a.resume)
        cfg = load_study_config(out / "config.yaml", a.set)
        check_outputs([s.path for s in cfg.sources], out)
    else:
        cfg = load_study_config(a.config, a.set)
        check_outputs([s.path for s in cfg.sources], a.out)  # before any work: no output inside an input
        out = new_run_dir(a.out, "study")
    if a.dedupe is not None:
        cfg.dedupe = a.dedupe
    summary = Study(cfg, out, progress=not a.quiet).run()
    for regime, by_p in summary["table"].items():
        print(f"regime {float(regime) * 100:g} %")
        for p, m in by_p.items():
            print("  " + f"{p:<16}" + "  ".join(f"{k}={v['mean']:.3f}" for k, v in m.items()))
    print(f"study folder: {out}   (cxraug report {out})")
    return 0


@register
def _register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "benchmark",
        help="classifier study: real / standard-aug / GAN-aug / synthetic-only x regimes x seeds",
        description="Run every protocol x data regime x seed on a fixed real-only test split. Interrupted studies "
        "continue with --resume STUDY_DIR (finished runs are not redone).",
    )
    b.add_argument("--config", help="study YAML (fields of StudyConfig: sources, generator, regimes, seeds, ...)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field; repeatable")
    b.add_argument("--resume", metavar="STUDY_DIR", help="continue an interrupted study")
    b.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=None,
                   help="remove test images that (near-)duplicate a training image (default: on)")  # fmt: skip
    b.set_defaults(func=cmd_benchmark)
