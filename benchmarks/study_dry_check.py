"""Dry check of a study config (BENCHMARKS.md section 3): does it still validate and run?

Validates the YAML as ``cxraug benchmark`` does, loads every source, external-test and probe set (with the
patient/pHash screening), then runs each protocol once at a tiny size (regime 100 %, seed 0, 1 epoch, a
3-step GAN) and aggregates them into the verdict. It skips the report's inputs (Grad-CAM, UMAP, image
quality); the numbers it prints mean nothing, only that the study would run.

    .venv/bin/python benchmarks/study_dry_check.py benchmarks/study-nih-within-source.yaml /tmp/dry-nih
"""

from __future__ import annotations

import argparse
import time

from cxraug.classify.aggregate import aggregate
from cxraug.classify.study import Study, load_study_config
from cxraug.cli.study import check_study
from cxraug.data.source import check_outputs

# primary.regime: a config may pre-specify a regime the tiny run does not have
TINY = ["regimes=[1.0]", "primary.regime=1.0", "seeds=[0]", "epochs=1", "gan.steps=3", "bootstrap=20"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("out", help="a new folder for the dry study")
    a = ap.parse_args()
    t0 = time.time()
    cfg = load_study_config(a.config, TINY)
    check_study(cfg)
    check_outputs([s.path for s in (*cfg.sources, *cfg.external_test, *cfg.probe)], a.out)
    st = Study(cfg, a.out, progress=False)
    st.prepare()
    print(f"prepared in {time.time() - t0:.0f} s: split {({k: len(v) for k, v in st.split.items()})}, "
          f"external {({n: e['n'] for n, e in st.external.items()})}, probe {({n: e['n'] for n, e in st.probe.items()})}, "
          f"confounded {st.confounding['confounded']}")  # fmt: skip
    runs = [st.run_one(p, 1.0, 0) for p in cfg.protocols]
    te = st.split["test"][st.known[st.split["test"]]]
    groups = {"internal": [st.ds.patient_ids[i] for i in te]}
    for n, e in st.external.items():
        groups[f"external:{n}"] = [f"{n}/{p}" for p in e["patients"]]
    summary = aggregate(runs, cfg, groups=groups, confounding=st.confounding)
    for r in runs:
        print(f"  {r['protocol']:<16} threshold {r['threshold']:.3f}  AUC {r['metrics']['auc']:.3f}  "
              f"synthetic {r['n_synthetic']}")  # fmt: skip
    print(f"  DeLong variance: {summary['delong_variance']}")
    for label, sets in summary["verdict"]["1.0"].items():
        for s, v in sets.items():
            print(f"  {label} ({s}): {v['word']}")
    print(f"dry check passed in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
