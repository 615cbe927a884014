"""``cxraug demo``: the whole pipeline, offline, on the embedded phantoms, in a few CPU minutes.

phantoms -> cache -> patient split -> a DCGAN on the COVID-like training images of each regime ->
classifier benchmark (6 protocols, the rebalancing controls among them, x 2 regimes) -> FID/KID/PR + memorization in
the shipped CXR feature space (``--features cxr``: nothing trained, nothing downloaded) -> report.html.

The defaults are sized for a 2-core x86 CPU running float32 (no bf16): under 5 minutes there
(BENCHMARKS.md §8). Every stage is the real one, only smaller
than a study would use: a width-24 DCGAN for 300 steps, 6 classifier epochs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_DATA = "phantom:normal=240,covid=48"  # phantom seed 0


def run_demo(out: str | Path, *, steps: int = 300, width: int = 24, epochs: int = 6, seed: int = 0,
             progress: bool = True) -> Path:  # fmt: skip
    """Run the demo in a new run folder under ``out``, printing each stage and the results; returns the folder.
    ``steps`` and ``width`` size the DCGAN, ``epochs`` the classifiers; ``seed`` seeds both."""
    from cxraug.classify.study import GanSpec, Source, Study, StudyConfig
    from cxraug.io import new_run_dir
    from cxraug.report.html import build_report

    t0 = time.perf_counter()
    run = new_run_dir(out, "demo")
    study = run / "study"
    print(f"[1/3] DCGANs on the COVID-like phantoms of each training split ({steps} steps); the classifier benchmark: real / standard-aug / the rebalancing "
          "controls (oversample, class-weighted) / GAN-aug / synthetic-only ...")  # fmt: skip
    gan = GanSpec(preset="dcgan-64", steps=steps, width=width, batch_size=64, diffaug="", seed=seed,
                  overrides=["sample_every=100", "ckpt_every=100"])  # fmt: skip
    cfg = StudyConfig(sources=[Source(DEMO_DATA)], minority="covid", gan=gan, regimes=[0.5, 1.0], seeds=[seed],
                      epochs=epochs, features="cxr")  # fmt: skip
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
    print(f"      {res['summary']['power']['text']}")
    print(f"      {res['summary']['headline']['text']}")
    print("      (the demo runs one seed on a few dozen phantom test images: it shows the pipeline, it can conclude "
          "nothing; a study needs >= 3 seeds and enough test images, see the power line)")  # fmt: skip
    print(f"done in {time.perf_counter() - t0:.0f} s\nrun folder: {run}\nsample grid: {study / 'synthetic_samples.png'}\n"
          f"report: {report}")  # fmt: skip
    return run
