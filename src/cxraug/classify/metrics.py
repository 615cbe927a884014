"""Classification metrics from fixed predictions (binary, multi-class, multi-label)."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from cxraug.classify.calibration import brier_score, expected_calibration_error, sensitivity_at_specificity


def _safe_div(a: float, b: float) -> float:
    """a / b, 0 when nothing was counted (precision with no positive call, F1 with nothing right: scikit-learn's
    ``zero_division`` default)."""
    return float(a / b) if b else 0.0


def _rate(a: float, b: float) -> float:
    """A rate over one true class (sensitivity, specificity, a class's recall): NaN when the set holds none of
    that class, which is no measurement (an external source of one class: its specificity or sensitivity)."""
    return float(a / b) if b else float("nan")


def _mean_present(*rates: float) -> float:
    """Balanced accuracy: the mean recall over the classes the set holds (scikit-learn's
    ``balanced_accuracy_score``); NaN for an empty set."""
    r = [x for x in rates if np.isfinite(x)]
    return float(np.mean(r)) if r else float("nan")


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    """At ``threshold`` (positive when ``score >= threshold``, compared in float64 so that float32 scores meet
    the threshold as stored): accuracy, precision, recall (sensitivity), specificity, balanced accuracy, F1,
    FN, confusion matrix; threshold-free: ROC-AUC and PR-AUC (average precision). On a set of one class the
    other class's rate (and AUC) is NaN and balanced accuracy is the present class's rate."""
    y_true = np.asarray(y_true).astype(int)
    score = np.asarray(score, dtype=np.float64)
    pred = (score >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    precision, recall, specificity = _safe_div(tp, tp + fp), _rate(tp, tp + fn), _rate(tn, tn + fp)
    return {
        "accuracy": _rate(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "sensitivity": recall,
        "specificity": specificity,
        "balanced_accuracy": _mean_present(recall, specificity),
        "f1": _safe_div(2 * precision * recall, precision + recall) if np.isfinite(recall) else float("nan"),
        "auc": float(roc_auc_score(y_true, score)) if len(set(y_true)) == 2 else float("nan"),
        "pr_auc": float(average_precision_score(y_true, score)) if y_true.any() else float("nan"),
        "threshold": float(threshold),
        "false_negatives": int(fn),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        # calibration of the score as a probability, and the ROC's sensitivity at 90 % specificity (threshold-free)
        "brier": brier_score(y_true, score) if len(y_true) and _in_unit(score) else float("nan"),
        "ece": expected_calibration_error(y_true, score) if len(y_true) and _in_unit(score) else float("nan"),
        "sensitivity_at_90_specificity": sensitivity_at_specificity(y_true, score, 0.9),
    }


def _in_unit(score: np.ndarray) -> bool:
    return bool(np.isfinite(score).all() and (score >= 0).all() and (score <= 1).all())


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray, class_names: list[str]) -> dict:
    """Per-class one-vs-rest metrics and their macro averages. Every thresholded number (precision,
    recall, specificity, F1, accuracy) uses one decision rule, the argmax; AUC and PR-AUC are threshold-free."""
    y_true = np.asarray(y_true).astype(int)
    pred = prob.argmax(1)
    per = {}
    for k, c in enumerate(class_names):
        m = binary_metrics(y_true == k, prob[:, k])
        m["precision"] = _safe_div(((pred == k) & (y_true == k)).sum(), (pred == k).sum())
        m["recall"] = m["sensitivity"] = _rate(((pred == k) & (y_true == k)).sum(), (y_true == k).sum())
        m["accuracy"] = float(((pred == k) == (y_true == k)).mean())
        m["specificity"] = _rate(((pred != k) & (y_true != k)).sum(), (y_true != k).sum())
        m["balanced_accuracy"] = _mean_present(m["recall"], m["specificity"])
        m["f1"] = (_safe_div(2 * m["precision"] * m["recall"], m["precision"] + m["recall"])
                   if np.isfinite(m["recall"]) else float("nan"))  # fmt: skip
        tn, fp = int(((pred != k) & (y_true != k)).sum()), int(((pred == k) & (y_true != k)).sum())
        fn, tp = int(((pred != k) & (y_true == k)).sum()), int(((pred == k) & (y_true == k)).sum())
        m["false_negatives"], m["confusion_matrix"] = fn, [[tn, fp], [fn, tp]]
        m.pop("threshold")
        per[c] = m
    keys = ("precision", "recall", "specificity", "balanced_accuracy", "f1", "auc", "pr_auc")
    out = {f"macro_{k}": _mean_present(*(per[c][k] for c in class_names)) for k in keys}  # over present classes
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
