"""Summaries across seeds: the per-regime, per-protocol table and the paired GAN-aug comparison."""

from __future__ import annotations

from cxraug.classify.config import StudyConfig
from cxraug.classify.metrics import mean_ci, paired_comparison

METRIC_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "auc", "false_negatives")


def aggregate(results: list[dict], cfg: StudyConfig) -> dict:
    table: dict = {}
    for r in results:
        table.setdefault(str(r["regime"]), {}).setdefault(r["protocol"], []).append(r)
    out: dict = {"table": {}, "paired_gan_vs_standard": {}}
    for regime, by_p in table.items():
        out["table"][regime] = {}
        for p, runs in by_p.items():
            m = [r["metrics"] for r in sorted(runs, key=lambda r: r["seed"])]
            keys = METRIC_KEYS if "auc" in m[0] else ("accuracy", "macro_f1", "macro_auc")
            keys = (*keys, "macro_auc") if "auc" in m[0] and "macro_auc" in m[0] else keys  # multi-label
            out["table"][regime][p] = {k: mean_ci([x.get(k, float("nan")) for x in m]) for k in keys}
        if "gan-aug" in by_p and "standard-aug" in by_p:
            ga = sorted(by_p["gan-aug"], key=lambda r: r["seed"])
            sa = sorted(by_p["standard-aug"], key=lambda r: r["seed"])
            key = "auc" if "auc" in ga[0]["metrics"] else "macro_auc"
            out["paired_gan_vs_standard"][regime] = {
                k: paired_comparison([r["metrics"][k] for r in ga], [r["metrics"][k] for r in sa])
                for k in (key, "recall" if key == "auc" else "accuracy")
            }
    return out
