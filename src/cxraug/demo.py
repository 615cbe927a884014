"""``cxraug demo``: the whole pipeline, offline, on the embedded phantoms, in a few CPU minutes.

phantoms -> cache -> patient split -> a DCGAN on the COVID-like training images of each regime ->
classifier benchmark (4 protocols x 2 regimes) -> FID/KID/PR + memorization (offline encoder) ->
report.html.
"""

from __future__ import annotations

import argparse
import json
import time

from cxraug.cli import register

DEMO_DATA = "phantom:normal=240,covid=48"


def cmd_demo(a: argparse.Namespace) -> int:
    from cxraug.classify.study import GanSpec, Source, Study, StudyConfig
    from cxraug.io import new_run_dir
    from cxraug.report.html import build_report

    t0 = time.perf_counter()
    run = new_run_dir(a.out, "demo")
    progress = not a.quiet
    study = run / "study"
    print(f"[1/3] DCGANs on the COVID-like phantoms of each training split ({a.steps} steps), then the classifier "
          "benchmark: real / standard-aug / GAN-aug / synthetic-only ...")  # fmt: skip
    gan = GanSpec(preset="dcgan-64", steps=a.steps, width=32, batch_size=64, diffaug="", seed=a.seed,
                  overrides=["sample_every=100", "ckpt_every=100"])  # fmt: skip
    cfg = StudyConfig(sources=[Source(DEMO_DATA)], minority="covid", gan=gan, regimes=[0.5, 1.0], seeds=[a.seed],
                      epochs=a.epochs)  # fmt: skip
    Study(cfg, study, progress=progress).run()
    print("[2/3] quality metrics, memorization audit and report ...")
    report = build_report(study, progress=progress)
    res = json.loads((study / "results.json").read_text())
    q = res["quality"]
    print(f"      FID ({q['features']}) {q['fid']:.2f}; memorization: {q['memorization']['n_flagged']} flagged")
    print(f"[3/3] results at 100 % of the training data (threshold chosen on validation: {cfg.operating_point}):")
    for p, m in res["summary"]["table"]["1.0"].items():
        print(f"      {p:<16} AUC {m['auc']['mean']:.3f}  at threshold {m['threshold']['mean']:.3f}: sensitivity "
              f"{m['sensitivity']['mean']:.3f}  specificity {m['specificity']['mean']:.3f}")  # fmt: skip
    for label, sets in res["summary"]["verdict"]["1.0"].items():
        print(f"      {label}: {sets['internal']['text']}")
    print(f"done in {time.perf_counter() - t0:.0f} s\nrun folder: {run}\nsample grid: {study / 'synthetic_samples.png'}\n"
          f"report: {report}")  # fmt: skip
    return 0


@register
def _register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline offline on embedded phantoms (CPU, a few minutes)",
        description="Phantom CXRs -> DCGAN -> metrics -> classifier benchmark -> HTML report, in a new run folder.",
    )
    p.add_argument("--steps", type=int, default=400, help="GAN training steps; default %(default)s")
    p.add_argument("--epochs", type=int, default=8, help="classifier epochs; default %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
