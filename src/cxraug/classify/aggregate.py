"""Summaries across seeds, and the verdict.

Per regime and protocol: every metric's mean and 95 % t-CI across seeds (internal test, each external
source, external pooled), and patient-clustered bootstrap CIs on the pooled test predictions. Per regime, the
comparisons that attribute an effect to the generator: GAN-aug against the strongest non-generative control
(oversample, class-weighted, standard-aug, ...: the one with the best mean *validation* AUC), and GAN-aug against
real and standard-aug as secondary lines. Each gives the paired difference per seed (paired t-test), DeLong's test on
the same images, a patient-bootstrap CI of the AUC difference and a verdict in words under rules that cannot
overclaim (3 seeds, 10 test images a class, the margin, the power of the test split). One pre-specified primary
comparison decides the headline; every other is exploratory, with Holm-adjusted p-values.
"""

from __future__ import annotations

import numpy as np

from cxraug.classify.calibration import reliability_curve
from cxraug.classify.config import CONTROL_PROTOCOLS, PROTOCOLS, StudyConfig, arm_name, split_arm
from cxraug.classify.metrics import mean_ci, paired_comparison
from cxraug.classify.stats import (
    auc_of,
    average_precision,
    cluster_bootstrap,
    delong_test,
    holm_adjust,
    margin_value,
    verdict,
)
from cxraug.errors import CXRAugError

METRIC_KEYS = ("auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "threshold", "accuracy",
               "precision", "recall", "f1", "false_negatives", "brier", "ece", "sensitivity_at_90_specificity")  # fmt: skip
MULTICLASS_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_specificity", "macro_auc", "macro_pr_auc")
MIN_PER_CLASS = 10  # fewer positive or negative test images than this: no verdict ("cannot conclude")
MIN_SEEDS = 3  # fewer seeds than this: no verdict (1 seed calls better/worse 65-75 % of the time with no effect)
BEST_CONTROL = "best-control"
# what every study compares, when both arms ran: (a, b) with b possibly the validation-chosen best control
COMPARISONS = (("gan-aug", BEST_CONTROL), ("standard-aug+gan-aug", BEST_CONTROL), ("gan-aug", "real"),
               ("gan-aug", "standard-aug"))  # fmt: skip


def parse_primary(comparison: str) -> tuple[str, str]:
    """``"gan-aug vs best-control"`` -> ("gan-aug", "best-control"); both sides must name protocols (the right
    side may be best-control)."""
    a, sep, b = str(comparison).partition(" vs ")
    a, b = a.strip(), b.strip()

    def known(arm: str) -> bool:
        try:
            return split_arm(arm)[0] in PROTOCOLS
        except ValueError:
            return False

    if not sep or not known(a) or (not known(b) and b != BEST_CONTROL) or a == b:
        raise CXRAugError(f"primary.comparison {comparison!r}: expected 'A vs B' with A a protocol and B a protocol "
                          f"or {BEST_CONTROL}, e.g. 'gan-aug vs best-control'; protocols: {', '.join(PROTOCOLS)}")  # fmt: skip
    return a, b


def _validation_auc(runs: list[dict]) -> float:
    v = [r.get("validation", {}).get("auc", float("nan")) for r in runs]
    v = [x for x in v if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else -np.inf


def _best_by_validation(by_p: dict[str, list[dict]], candidates: list[str]) -> str | None:
    best, best_auc = None, -np.inf
    for arm in candidates:
        m = _validation_auc(by_p[arm])
        if best is None or m > best_auc:
            best, best_auc = arm, m
    return best


def _arms_of(by_p: dict[str, list[dict]], protocol: str) -> list[str]:
    """The arms a study ran for one protocol: the protocol itself, or its doses on a ratio axis (ascending)."""
    arms = [a for a in by_p if split_arm(a)[0] == protocol]
    return sorted(arms, key=lambda a: split_arm(a)[1] or 0.0)


def best_control(by_p: dict[str, list[dict]]) -> str | None:
    """The non-generative arm with the best mean validation AUC across seeds (ties: the simpler one, in
    :data:`CONTROL_PROTOCOLS` order, then the smaller dose); None when the study ran no control. Never chosen on a
    test set. On a ratio axis every dose of oversample is a control of its own."""
    return _best_by_validation(by_p, [a for p in CONTROL_PROTOCOLS for a in _arms_of(by_p, p)])


def resolve_arm(by_p: dict[str, list[dict]], name: str) -> str | None:
    """The arm a comparison means by ``name``: the arm itself when the study ran it; for a protocol run on a ratio
    axis, its dose with the best mean validation AUC (ties: the smaller dose), never chosen on a test set."""
    if name in by_p:
        return name
    return _best_by_validation(by_p, _arms_of(by_p, name))


def dose_response(by_p: dict[str, list[dict]], table: dict, key: str, sens_key: str | None, control: str | None) -> dict:
    """The ratio axis of one regime: per protocol run at several doses, the test AUC (macro AUC for several classes)
    and minority sensitivity per ratio (mean and 95 % t-CI across seeds, from ``table``), the dose chosen on
    validation, and the strongest control's AUC beside them."""
    out: dict = {"metric": key, "sensitivity_metric": sens_key, "curves": {}, "best": {}, "control": None}
    for p in ("gan-aug", "standard-aug+gan-aug", "oversample", "standard-aug+oversample"):
        arms = [a for a in _arms_of(by_p, p) if split_arm(a)[1] is not None]
        if not arms:
            continue
        out["curves"][p] = [{"ratio": split_arm(a)[1], "arm": a, "auc": table[a][key],
                             "sensitivity": table[a][sens_key] if sens_key else None,
                             "validation_auc": _validation_auc(by_p[a])} for a in arms]  # fmt: skip
        out["best"][p] = resolve_arm(by_p, p)
    if control is not None:
        out["control"] = {"arm": control, "auc": table[control][key],
                          "sensitivity": table[control][sens_key] if sens_key else None}  # fmt: skip
    return out


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
        "cautious of the two sources of variation): 'no difference that matters' when it lies within ±X (the margin, "
        f"config `margin`: {cfg.margin}), whichever side of 0; 'better' or 'worse' when it excludes 0 and reaches "
        f"beyond X; 'underpowered' when it includes 0 and reaches beyond ±X; 'cannot conclude' with fewer than "
        f"{MIN_SEEDS} seeds or fewer than {MIN_PER_CLASS} test images of a class; 'underpowered by design' when the "
        "power line (before training) shows the internal test split cannot detect a difference of X. GAN-aug is "
        "compared with the strongest non-generative control (chosen by mean validation AUC, never on a test set); "
        "every protocol of a (regime, seed) takes the same number of optimiser steps. One comparison is primary "
        f"(config `primary`: {cfg.primary.comparison}); the others are exploratory, their p-values (the larger of "
        "DeLong's on the seed-averaged scores and the paired t-test's) Holm-adjusted over all of them, and a "
        "better/worse whose adjusted p is 0.05 or more is reported as underpowered."
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
    for lab, s in (r.get("test_prob_labels") or {}).items():  # multi-label: each other augmented label
        out[f"internal:{lab}"] = (np.asarray(s, float), np.asarray(r["test_true_labels"][lab], int))
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
    out = {"auc": cluster_bootstrap(lambda i: auc_of(y[i], mean[i]), groups, n_boot=cfg.bootstrap),
           "pr_auc": cluster_bootstrap(lambda i: average_precision(y[i], mean[i]), groups,
                                       n_boot=cfg.bootstrap)}  # fmt: skip
    thr = [r.get("threshold") for r in runs]
    if all(t is not None for t in thr):
        calls = scores >= np.asarray(thr, float)[:, None]  # [seeds, N], each seed at its own operating point

        def rate(i: np.ndarray, positive: bool) -> float:
            m = y[i] == int(positive)
            c = calls[:, i][:, m]
            return float(c.mean() if positive else 1 - c.mean()) if m.any() else float("nan")

        out["sensitivity"] = cluster_bootstrap(lambda i: rate(i, True), groups, n_boot=cfg.bootstrap)
        out["specificity"] = cluster_bootstrap(lambda i: rate(i, False), groups, n_boot=cfg.bootstrap)
    return out


def _p_value(seeds: dict, dl: dict) -> float:
    """One p-value per comparison for the multiplicity adjustment: the larger (more cautious) of the paired t-test's
    across seeds and DeLong's on the seed-averaged scores, as the verdict reads the union of their CIs."""
    ps = [p for p in (seeds.get("p_value"), dl.get("p_value")) if p is not None and np.isfinite(p)]
    return float(max(ps)) if ps else float("nan")


def compare(a_runs: list[dict], b_runs: list[dict], name: str, *, groups: list[str], cfg: StudyConfig,
            confounded: str = "", patients_known: bool = True) -> dict:  # fmt: skip
    """Protocol a against protocol b on one evaluation set, paired by seed and by image. ``patients_known``:
    ``groups`` are patient ids, so DeLong's variance is the patient-clustered one (Obuchowski 1997); else
    each image is its own patient and the variance is DeLong's image-level one."""
    sa, sb = [_sets(r)[name] for r in a_runs], [_sets(r)[name] for r in b_runs]
    y = sa[0][1]
    if len(y) == 0 or y.all() or not y.any():
        return {"verdict": {"word": "cannot conclude", "text": "cannot conclude: this set lacks one of the classes"}}
    auc_a, auc_b = [auc_of(y, s) for s, _ in sa], [auc_of(y, s) for s, _ in sb]
    seeds = paired_comparison(auc_a, auc_b)
    dg = groups if patients_known else None
    delong = [delong_test(y, x[0], z[0], groups=dg) for x, z in zip(sa, sb)]
    ma, mb = np.mean([s for s, _ in sa], 0), np.mean([s for s, _ in sb], 0)
    pooled_delong = delong_test(y, ma, mb, groups=dg)
    boot = cluster_bootstrap(lambda i: auc_of(y[i], ma[i]) - auc_of(y[i], mb[i]), groups, n_boot=cfg.bootstrap)
    lo, hi = boot["ci"]
    if np.isfinite(seeds["ci"]):
        lo, hi = min(lo, seeds["mean"] - seeds["ci"]), max(hi, seeds["mean"] + seeds["ci"])
    ref = float(np.mean(auc_b)) if auc_b else float("nan")
    margin = margin_value(cfg.margin, ref)
    v = verdict([lo, hi], margin)
    m, n = int(y.sum()), int((1 - y).sum())
    if min(m, n) < MIN_PER_CLASS:
        v = {"word": "cannot conclude", "text": f"cannot conclude: only {m} positive and {n} negative test images, "
             f"at least {MIN_PER_CLASS} of each are needed (CI [{lo:+.3f}, {hi:+.3f}])"}  # fmt: skip
    elif len(a_runs) < MIN_SEEDS:
        v = {"word": "cannot conclude", "text": f"cannot conclude: {len(a_runs)} seed(s), at least {MIN_SEEDS} are "
             f"needed for training noise to be in the CI (CI [{lo:+.3f}, {hi:+.3f}])"}  # fmt: skip
    if confounded:
        v["confounded"] = True
        v["text"] += (
            "; but class and source are confounded: this result cannot separate disease from acquisition source"
        )
    return {"auc_difference_per_seed": [a - b for a, b in zip(auc_a, auc_b)], "paired_seeds": seeds,
            "delong_per_seed": [{"difference": d["difference"], "p_value": d["p_value"]} for d in delong],
            "delong_pooled": pooled_delong, "delong_variance": pooled_delong["variance"],
            "bootstrap_difference": boot, "ci": [lo, hi], "margin": margin, "p_value": _p_value(seeds, pooled_delong),
            "verdict": v}  # fmt: skip


def _variance_label(groups: dict | None, patients_known: bool | None) -> str:
    if not groups or patients_known is False:
        return ("image-level (DeLong 1988): no patient ids in the data, so every image is its own patient; the split "
                "is image-level too: images of one patient may sit in train and test")  # fmt: skip
    return "patient-clustered (Obuchowski 1997)"


def aggregate(results: list[dict], cfg: StudyConfig, *, groups: dict[str, list[str]] | None = None,
              confounding: dict | None = None, patients_known: bool | None = None, power: dict | None = None,
              generator_note: str = "") -> dict:  # fmt: skip
    """``groups``: patient id per image of each set ("internal", "external:NAME"); without it every image
    is its own cluster. ``confounding``: :func:`cxraug.classify.assemble.confounding`'s result.
    ``patients_known``: the ids came from the data (default: when ``groups`` is given); else DeLong's variance is
    the image-level one and the label says the split is image-level. ``power``: the study's power line
    (:func:`cxraug.classify.power.power_line`); when it cannot reach the margin, internal-test verdicts are
    "underpowered by design". ``generator_note``: how the generators were seeded, for the method text."""
    known = bool(groups) if patients_known is None else bool(patients_known and groups)
    by: dict = {}
    for r in results:
        by.setdefault(str(r["regime"]), {}).setdefault(r["protocol"], []).append(r)
    conf_text = (confounding or {}).get("text", "")
    out: dict = {"table": {}, "external": {}, "pooled": {}, "paired_gan_vs_standard": {}, "comparisons": {},
                 "verdict": {}, "best_control": {}, "confounding": confounding or {"confounded": False, "text": ""},
                 "method": method_text(cfg) + (f" {generator_note}" if generator_note else ""),
                 "delong_variance": _variance_label(groups, known), "power": power,
                 "generator_variance": generator_note}  # fmt: skip
    family: list[tuple[str, str, str]] = []  # every (regime, label, set) compared: the multiplicity family
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
        gan_arm = resolve_arm(by_p, "gan-aug")
        if gan_arm is not None and "standard-aug" in by_p:
            ga, sa = by_p[gan_arm], by_p["standard-aug"]
            key = "macro_auc" if multiclass else "auc"
            out["paired_gan_vs_standard"][regime] = {
                k: paired_comparison([r["metrics"][k] for r in ga], [r["metrics"][k] for r in sa])
                for k in (key, "accuracy" if multiclass else "recall")
            }
        if not multiclass:  # calibration: every seed's internal test scores, per protocol
            out.setdefault("reliability", {})[regime] = {
                p: reliability_curve(np.concatenate([_sets(r)["internal"][1] for r in runs]),
                                     np.concatenate([_sets(r)["internal"][0] for r in runs]))
                for p, runs in by_p.items()
            }  # fmt: skip
        ctrl = best_control(by_p)
        out["best_control"][regime] = ctrl
        out["comparisons"][regime], out["verdict"][regime] = {}, {}
        primary = parse_primary(cfg.primary.comparison)
        pairs = [*COMPARISONS, *([primary] if primary not in COMPARISONS else [])]
        for arm in _arms_of(by_p, "gan-aug"):  # a ratio axis: each dose against repeating the real images as often
            r = split_arm(arm)[1]
            if r is not None and arm_name("oversample", r) in by_p:
                pairs.append((arm, arm_name("oversample", r)))
        for a, b in pairs:
            a_name = resolve_arm(by_p, a)
            b_name = ctrl if b == BEST_CONTROL else resolve_arm(by_p, b)
            if a_name is None or b_name is None or a_name == b_name:
                continue
            label = f"{a} vs {b}"
            cmp_sets = [s for s in sets if s == "internal" or s == "external:pooled" or s.startswith("internal:")]
            cmp = {s: compare(by_p[a_name], by_p[b_name], s, groups=grp[s], cfg=cfg, confounded=conf_text,
                          patients_known=known)
                   for s in cmp_sets}  # fmt: skip
            for c in cmp.values():
                c["arm"], c["against"] = a_name, b_name
            out["comparisons"][regime][label] = cmp
            family += [(regime, label, s) for s in cmp]
        if cfg.synthetic_ratios:
            key = "macro_auc" if multiclass else "auc"
            sens = None if multiclass else "sensitivity"
            dr = dose_response(by_p, out["table"][regime], key, sens, ctrl)
            out.setdefault("dose_response", {})[regime] = dr
    _primary_and_holm(out, cfg, family, power)
    for regime, dr in out.get("dose_response", {}).items():
        dr["text"] = _dose_text(regime, dr, out["comparisons"][regime])
    for regime, by_label in out["comparisons"].items():
        out["verdict"][regime] = {
            label: {s.replace("external:pooled", "external"): c["verdict"] for s, c in sets.items()}
            for label, sets in by_label.items()
        }
    return out


def _primary_and_holm(out: dict, cfg: StudyConfig, family: list[tuple[str, str, str]], power: dict | None) -> None:
    """Mark the pre-specified primary comparison (the headline), Holm-adjust every other comparison's p-value, and
    apply the power line: a study whose internal test split cannot detect the margin says so instead of a word."""
    a, b = parse_primary(cfg.primary.comparison)
    regimes = sorted(out["comparisons"], key=float)
    reg = cfg.primary.regime if cfg.primary.regime is not None else (float(regimes[0]) if regimes else None)
    label, key = f"{a} vs {b}", None
    for r in regimes:
        if reg is not None and float(r) == float(reg) and label in out["comparisons"][r]:
            key = (r, label, "internal")
    explore = [f for f in family if f != key]
    adj = holm_adjust([out["comparisons"][r][lab][s].get("p_value", float("nan")) for r, lab, s in explore])
    for (r, lab, s), pa in zip(explore, adj):
        c = out["comparisons"][r][lab][s]
        c["role"], c["p_holm"] = "exploratory", pa
        v = c["verdict"]
        if v["word"] in ("better", "worse") and not pa < 0.05:
            c["verdict"] = {**v, "word": "underpowered",
                            "text": f"underpowered after Holm's adjustment over {len(explore)} exploratory comparisons "
                                    f"(p {c['p_value']:.3f}, adjusted {pa:.3f}; unadjusted: {v['text']})"}  # fmt: skip
        if "p_value" in c:
            c["verdict"]["text"] += f" [exploratory; Holm-adjusted p {pa:.3f}]" if np.isfinite(pa) else " [exploratory]"
    by_design = power is not None and not power.get("reachable", True)
    for r, lab, s in family:
        c = out["comparisons"][r][lab][s]
        if by_design and s == "internal" and c["verdict"]["word"] != "cannot conclude":
            c["verdict"] = {**c["verdict"], "word": "underpowered by design",
                            "text": f"underpowered by design: {power['text']} (the CI was {c['verdict']['text']})"}  # fmt: skip
    if key is None:
        out["headline"] = {"comparison": label, "regime": reg, "set": "internal", "available": False,
                           "text": f"primary comparison {label} at {_pct(reg)}: not run by this study "
                                   f"(protocols or regime missing)"}  # fmt: skip
        return
    c = out["comparisons"][key[0]][label]["internal"]
    c["role"] = "primary"
    against = c.get("against", b)
    arm = c.get("arm", a)
    side = a if arm == a else f"{a} at {split_arm(arm)[1]:g}x (the dose best on validation)"
    name = f"{side} vs the strongest control ({against}, chosen on validation)" if b == BEST_CONTROL else f"{side} vs {b}"
    out["headline"] = {"comparison": label, "against": against, "regime": float(key[0]), "set": "internal",
                       "available": True, "verdict": c["verdict"],
                       "text": f"Primary (pre-specified): {name} at {_pct(float(key[0]))}, internal test: "
                               f"{c['verdict']['text']}"}  # fmt: skip


def _dose_text(regime: str, dr: dict, comparisons: dict) -> str:
    """One sentence per regime: the dose chosen on validation and what the test says of it against the strongest
    control (the comparison's verdict, after Holm and the power line)."""
    best = dr["best"].get("gan-aug")
    if best is None:
        return ""
    text = f"{_pct(float(regime))}: the dose chosen on validation is {split_arm(best)[1]:g} synthetic image(s) per real "
    text += "minority image"
    c = comparisons.get(f"gan-aug vs {BEST_CONTROL}", {}).get("internal")
    if c is not None:
        text += f"; against the strongest control ({c['against']}), internal test: {c['verdict']['text']}"
    return text


def _pct(regime: float | None) -> str:
    return "no regime" if regime is None else f"{float(regime) * 100:g} %"
