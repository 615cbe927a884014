"""Summaries across seeds, and the verdict.

Per regime and protocol: every metric's mean and 95 % t-CI across seeds (internal test, each external
source, external pooled), and patient-clustered bootstrap CIs on the pooled test predictions. Per
regime, GAN-aug against standard-aug and against real: the paired difference per seed with a paired
t-test, DeLong's test on the same images, a bootstrap CI of the AUC difference, and a verdict in words.
"""

from __future__ import annotations

import numpy as np

from cxraug.classify.config import StudyConfig
from cxraug.classify.metrics import mean_ci, paired_comparison
from cxraug.classify.stats import auc_of, average_precision, cluster_bootstrap, delong_test, verdict

METRIC_KEYS = ("auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "threshold", "accuracy",
               "precision", "recall", "f1", "false_negatives")  # fmt: skip
MULTICLASS_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_specificity", "macro_auc", "macro_pr_auc")
MIN_PER_CLASS = 10  # fewer positive or negative test images than this: never "no detectable difference"
COMPARISONS = (("gan-aug", "standard-aug"), ("gan-aug", "real"))


def method_text(cfg: StudyConfig) -> str:
    return (
        f"Each run picks its decision threshold on the validation split ({cfg.operating_point}) and applies it "
        "unchanged to the internal test split and to every external set; ROC-AUC and PR-AUC (average precision) "
        f"do not depend on it. Across the {len(cfg.seeds)} seeds, each metric is given as mean ± half-width of the "
        "95 % t confidence interval. Pooled: the seeds' test scores averaged per image (AUC, PR-AUC) or their "
        f"decisions pooled (sensitivity, specificity), with a 95 % percentile CI from {cfg.bootstrap} bootstrap "
        "resamples of whole patients. A comparison of two protocols gives the per-seed AUC difference (paired "
        "t-test), DeLong's test (DeLong, DeLong & Clarke-Pearson 1988; Sun & Xu 2014) per seed and on the "
        "seed-averaged scores, its variance patient-clustered when patient ids are known (Obuchowski 1997: each "
        "image's structural component summed per patient, so a patient's several images count as one unit of "
        "evidence; with one image per patient it is DeLong's; results.json says which under `delong_variance`), "
        "and the patient-bootstrap CI of the "
        "seed-averaged AUC difference. The verdict reads the union of the seed CI and the bootstrap CI (the more "
        "cautious of the two sources of variation): 'better' or 'worse' when it excludes 0; 'no detectable "
        f"difference' when it lies within ±{cfg.margin:g} (the margin X, config `margin`); 'underpowered' when it "
        f"includes 0 but reaches beyond ±X, or when a set has fewer than {MIN_PER_CLASS} images of a class."
    )


def _sets(r: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(scores, truths) of one run per evaluation set: internal, each external source, external pooled."""
    out = {"internal": (np.asarray(r["test_prob"], float), np.asarray(r["test_true"], int))}
    ext = r.get("external_prob") or {}
    for n in ext:
        out[f"external:{n}"] = (np.asarray(ext[n], float), np.asarray(r["external_true"][n], int))
    if ext:
        out["external:pooled"] = (np.concatenate([out[f"external:{n}"][0] for n in ext]),
                                  np.concatenate([out[f"external:{n}"][1] for n in ext]))  # fmt: skip
    return out


def _groups(groups: dict[str, list[str]], name: str) -> list[str]:
    if name != "external:pooled":
        return groups[name]
    return [p for k, v in groups.items() if k.startswith("external:") for p in v]


def _pooled(runs: list[dict], name: str, groups: list[str], cfg: StudyConfig) -> dict:
    """Patient-bootstrap CIs on the pooled predictions of one protocol's seeds for one set."""
    scores = np.stack([_sets(r)[name][0] for r in runs])  # [seeds, N]
    y = _sets(runs[0])[name][1]
    if len(y) == 0:
        return {}
    mean = scores.mean(0)
    out = {"auc": cluster_bootstrap(lambda i: auc_of(y[i], mean[i]), groups, cfg.bootstrap),
           "pr_auc": cluster_bootstrap(lambda i: average_precision(y[i], mean[i]), groups, cfg.bootstrap)}  # fmt: skip
    thr = [r.get("threshold") for r in runs]
    if all(t is not None for t in thr):
        calls = scores >= np.asarray(thr, float)[:, None]  # [seeds, N], each seed at its own operating point

        def rate(i: np.ndarray, positive: bool) -> float:
            m = y[i] == int(positive)
            c = calls[:, i][:, m]
            return float(c.mean() if positive else 1 - c.mean()) if m.any() else float("nan")

        out["sensitivity"] = cluster_bootstrap(lambda i: rate(i, True), groups, cfg.bootstrap)
        out["specificity"] = cluster_bootstrap(lambda i: rate(i, False), groups, cfg.bootstrap)
    return out


def compare(a_runs: list[dict], b_runs: list[dict], name: str, groups: list[str], cfg: StudyConfig,
            confounded: str = "", patients_known: bool = True) -> dict:  # fmt: skip
    """Protocol a against protocol b on one evaluation set, paired by seed and by image. ``patients_known``:
    ``groups`` are patient ids, so DeLong's variance is the patient-clustered one (Obuchowski 1997); else
    each image is its own patient and the variance is DeLong's image-level one."""
    sa, sb = [_sets(r)[name] for r in a_runs], [_sets(r)[name] for r in b_runs]
    y = sa[0][1]
    if len(y) == 0 or y.all() or not y.any():
        return {"verdict": {"word": "underpowered", "text": "not comparable: this set lacks one of the classes"}}
    auc_a, auc_b = [auc_of(y, s) for s, _ in sa], [auc_of(y, s) for s, _ in sb]
    seeds = paired_comparison(auc_a, auc_b)
    dg = groups if patients_known else None
    delong = [delong_test(y, x[0], z[0], groups=dg) for x, z in zip(sa, sb)]
    ma, mb = np.mean([s for s, _ in sa], 0), np.mean([s for s, _ in sb], 0)
    pooled_delong = delong_test(y, ma, mb, groups=dg)
    boot = cluster_bootstrap(lambda i: auc_of(y[i], ma[i]) - auc_of(y[i], mb[i]), groups, cfg.bootstrap)
    lo, hi = boot["ci"]
    if np.isfinite(seeds["ci"]):
        lo, hi = min(lo, seeds["mean"] - seeds["ci"]), max(hi, seeds["mean"] + seeds["ci"])
    v = verdict([lo, hi], cfg.margin)
    m, n = int(y.sum()), int((1 - y).sum())
    if min(m, n) < MIN_PER_CLASS and v["word"] == "no detectable difference":
        v = {"word": "underpowered", "text": f"underpowered (only {m} positive and {n} negative test images; at "
             f"least {MIN_PER_CLASS} of each are needed before a CI inside ±{cfg.margin:g} means anything)"}  # fmt: skip
    if confounded:
        v["confounded"] = True
        v["text"] += (
            "; but class and source are confounded: this result cannot separate disease from acquisition source"
        )
    if len(a_runs) < 2:
        v["text"] += "; one seed only: training randomness is not in the CI (default 5 seeds)"
    return {"auc_difference_per_seed": [a - b for a, b in zip(auc_a, auc_b)], "paired_seeds": seeds,
            "delong_per_seed": [{"difference": d["difference"], "p_value": d["p_value"]} for d in delong],
            "delong_pooled": pooled_delong, "delong_variance": pooled_delong["variance"],
            "bootstrap_difference": boot, "ci": [lo, hi], "verdict": v}  # fmt: skip


def aggregate(results: list[dict], cfg: StudyConfig, groups: dict[str, list[str]] | None = None,
              confounding: dict | None = None) -> dict:  # fmt: skip
    """``groups``: patient id per image of each set ("internal", "external:NAME"); without it every image
    is its own cluster. ``confounding``: :func:`cxraug.classify.assemble.confounding`'s result."""
    by: dict = {}
    for r in results:
        by.setdefault(str(r["regime"]), {}).setdefault(r["protocol"], []).append(r)
    conf_text = (confounding or {}).get("text", "")
    out: dict = {"table": {}, "external": {}, "pooled": {}, "paired_gan_vs_standard": {}, "comparisons": {},
                 "verdict": {}, "confounding": confounding or {"confounded": False, "text": ""},
                 "method": method_text(cfg),
                 "delong_variance": "patient-clustered (Obuchowski 1997)" if groups else
                                    "image-level (DeLong 1988; no patient ids)"}  # fmt: skip
    for regime, by_p in by.items():
        for p in by_p:
            by_p[p] = sorted(by_p[p], key=lambda r: r["seed"])
        first = next(iter(by_p.values()))[0]
        multiclass = "auc" not in first["metrics"]
        keys = MULTICLASS_KEYS if multiclass else METRIC_KEYS
        keys = (*keys, "macro_auc") if not multiclass and "macro_auc" in first["metrics"] else keys  # multi-label
        out["table"][regime] = {p: {k: mean_ci([r["metrics"].get(k, float("nan")) for r in runs]) for k in keys}
                                for p, runs in by_p.items()}  # fmt: skip
        ext_names = [n for n in first.get("external", {})]
        out["external"][regime] = {
            n: {p: {k: mean_ci([r["external"][n].get(k, float("nan")) for r in runs]) for k in keys}
                for p, runs in by_p.items()}
            for n in ext_names
        }  # fmt: skip
        sets = list(_sets(first))
        grp = {s: (_groups(groups, s) if groups else [str(i) for i in range(len(_sets(first)[s][1]))]) for s in sets}
        out["pooled"][regime] = {s: {p: _pooled(runs, s, grp[s], cfg) for p, runs in by_p.items()} for s in sets}
        if "gan-aug" in by_p and "standard-aug" in by_p:
            ga, sa = by_p["gan-aug"], by_p["standard-aug"]
            key = "macro_auc" if multiclass else "auc"
            out["paired_gan_vs_standard"][regime] = {
                k: paired_comparison([r["metrics"][k] for r in ga], [r["metrics"][k] for r in sa])
                for k in (key, "accuracy" if multiclass else "recall")
            }
        out["comparisons"][regime], out["verdict"][regime] = {}, {}
        for a, b in COMPARISONS:
            if a in by_p and b in by_p:
                label = f"{a} vs {b}"
                cmp = {s: compare(by_p[a], by_p[b], s, grp[s], cfg, conf_text, patients_known=bool(groups))
                       for s in sets if s in ("internal", "external:pooled")}  # fmt: skip
                out["comparisons"][regime][label] = cmp
                out["verdict"][regime][label] = {s.replace("external:pooled", "external"): c["verdict"]
                                                 for s, c in cmp.items()}  # fmt: skip
    return out
