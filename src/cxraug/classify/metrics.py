"""Classification metrics from fixed predictions (binary, multi-class, multi-label)."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    """At ``threshold`` (positive when ``score >= threshold``): accuracy, precision, recall
    (sensitivity), specificity, balanced accuracy, F1, FN, confusion matrix; threshold-free: ROC-AUC
    and PR-AUC (average precision)."""
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(score) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    return {
        "accuracy": _safe_div(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "sensitivity": recall,
        "specificity": _safe_div(tn, tn + fp),
        "balanced_accuracy": (recall + _safe_div(tn, tn + fp)) / 2,
        "f1": _safe_div(2 * precision * recall, precision + recall),
        "auc": float(roc_auc_score(y_true, score)) if len(set(y_true)) == 2 else float("nan"),
        "pr_auc": float(average_precision_score(y_true, score)) if y_true.any() else float("nan"),
        "threshold": float(threshold),
        "false_negatives": int(fn),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray, class_names: list[str]) -> dict:
    """Per-class one-vs-rest metrics and their macro averages. Every thresholded number (precision,
    recall, specificity, F1, accuracy) uses one decision rule, the argmax; AUC and PR-AUC are threshold-free."""
    y_true = np.asarray(y_true).astype(int)
    pred = prob.argmax(1)
    per = {}
    for k, c in enumerate(class_names):
        m = binary_metrics(y_true == k, prob[:, k])
        m["precision"] = _safe_div(((pred == k) & (y_true == k)).sum(), (pred == k).sum())
        m["recall"] = m["sensitivity"] = _safe_div(((pred == k) & (y_true == k)).sum(), (y_true == k).sum())
        m["accuracy"] = float(((pred == k) == (y_true == k)).mean())
        m["specificity"] = _safe_div(((pred != k) & (y_true != k)).sum(), (y_true != k).sum())
        m["balanced_accuracy"] = (m["recall"] + m["specificity"]) / 2
        m["f1"] = _safe_div(2 * m["precision"] * m["recall"], m["precision"] + m["recall"])
        tn, fp = int(((pred != k) & (y_true != k)).sum()), int(((pred == k) & (y_true != k)).sum())
        fn, tp = int(((pred != k) & (y_true == k)).sum()), int(((pred == k) & (y_true == k)).sum())
        m["false_negatives"], m["confusion_matrix"] = fn, [[tn, fp], [fn, tp]]
        m.pop("threshold")
        per[c] = m
    keys = ("precision", "recall", "specificity", "balanced_accuracy", "f1", "auc", "pr_auc")
    out = {f"macro_{k}": float(np.nanmean([per[c][k] for c in class_names])) for k in keys}
    out["accuracy"] = float((pred == y_true).mean())
    out["balanced_accuracy"] = out["macro_recall"]  # sklearn's multi-class definition: mean per-class recall
    out["per_class"] = per
    out["confusion_matrix"] = confusion_matrix(y_true, pred, labels=list(range(len(class_names)))).tolist()
    return out


def multilabel_auc(y_true: np.ndarray, score: np.ndarray, names: list[str]) -> dict:
    """Per-label ROC-AUC (NaN labels masked), and their mean."""
    per = {}
    for k, c in enumerate(names):
        m = ~np.isnan(y_true[:, k])
        yk = y_true[m, k]
        per[c] = float(roc_auc_score(yk, score[m, k])) if len(set(yk)) == 2 else float("nan")
    return {"per_label_auc": per, "macro_auc": float(np.nanmean(list(per.values())))}


def mean_ci(values: list[float], level: float = 0.95) -> dict:
    """Mean with a t-distribution confidence interval across seeds."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return {"mean": float("nan"), "ci": float("nan"), "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci": float("nan"), "n": 1}
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return {"mean": float(v.mean()), "ci": float(half), "n": len(v)}


def paired_comparison(a: list[float], b: list[float]) -> dict:
    """a - b per seed: mean difference, 95 % CI, paired t-test p-value."""
    d = np.asarray(a, float) - np.asarray(b, float)
    res = mean_ci(list(d))
    res["p_value"] = float(stats.ttest_rel(a, b).pvalue) if len(d) > 1 and d.std() > 0 else float("nan")
    return res
