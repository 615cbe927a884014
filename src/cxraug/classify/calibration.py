"""Calibration of a binary classifier's probabilities, and sensitivity at a fixed specificity.

References: Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather Review 78 (1950);
Naeini, Cooper & Hauskrecht, "Obtaining well calibrated probabilities using Bayesian binning", AAAI 2015 (the
expected calibration error over equal-width bins); Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural
networks", ICML 2017 (reliability diagrams, ECE over M bins); Fawcett, "An introduction to ROC analysis", Pattern
Recognition Letters 27 (2006) (the ROC curve as the points of all thresholds, tied scores one point).

Bins: ``n_bins`` equal-width bins with edges k / n_bins (the float nearest), closed on the left, [k/n, (k+1)/n): a
probability exactly on an inner edge falls in the upper bin, as in torchmetrics' ``binary_calibration_error``
(``torch.bucketize(p, edges, right=True) - 1``). The last bin is closed on both sides, so p = 1 falls in
[1 - 1/n, 1]; torchmetrics instead gives p = 1 a bin of its own, an (n+1)-th, which changes its ECE whenever a
probability is exactly 1 (a float32 sigmoid of a logit above about 17). torchmetrics' float64 edges come from
``torch.linspace`` and differ from k/n by one rounding step at some k; only a probability within that step of an
edge can land differently, which a float32 probability (one step of float32 is ~2^29 of float64's) never is unless
it sits exactly on a dyadic edge such as 0.5, where both agree.

NaN-safety follows :mod:`cxraug.classify.metrics`: an empty set gives NaN everywhere; a set of one class still
has a Brier score and an ECE (they compare probabilities with outcomes, whichever class those are), but no
sensitivity at a specificity (it needs both classes). A NaN probability or score gives NaN (a diverged
classifier); a probability outside [0, 1] (e.g. a logit passed by mistake) is an error.
"""

from __future__ import annotations

import numpy as np

from cxraug.errors import CXRAugError


def _inputs(y_true: np.ndarray, prob: np.ndarray, what: str = "probability") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise CXRAugError(f"{len(y)} labels for {len(p)} {what} values: expected one per image")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise CXRAugError(f"labels must be 0 or 1 (binary), got {sorted(set(np.unique(y).tolist()) - {0, 1})[:3]}")
    return y.astype(bool), p


def _probabilities(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Checked (labels, probabilities), or None when the result is NaN (empty set, a NaN probability)."""
    y, p = _inputs(y_true, prob)
    if len(p) == 0 or np.isnan(p).any():
        return None
    if ((p < 0) | (p > 1)).any():
        bad = p[(p < 0) | (p > 1)][0]
        raise CXRAugError(f"probability {bad:g} outside [0, 1]: pass the positive-class probability, not a logit")
    return y, p


def _bins(n_bins: int) -> np.ndarray:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise CXRAugError(f"n_bins {n_bins!r}: expected a whole number of bins, 1 or more")
    return np.arange(int(n_bins) + 1) / int(n_bins)  # k / n correctly rounded


def _bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each probability: edges[k] <= p < edges[k+1], the last bin also holding p = 1."""
    return np.minimum(np.searchsorted(edges, p, side="right") - 1, len(edges) - 2)


def brier_score(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared difference between the positive-class probability and the outcome (1 positive, 0 negative),
    Brier (1950) for two classes in the form scikit-learn's ``brier_score_loss`` computes; 0 is perfect, 0.25 is
    what a constant 0.5 scores. NaN for an empty set or a NaN probability."""
    checked = _probabilities(y_true, prob)
    if checked is None:
        return float("nan")
    y, p = checked
    return float(np.mean((p - y) ** 2))


def reliability_curve(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> dict:
    """Per bin of the positive-class probability (equal width, see the module's note on edges): ``confidence`` (the
    mean probability), ``accuracy`` (the fraction of positives), ``count`` (images), and ``edges`` (n_bins + 1
    numbers), all plain lists. Every bin is kept, so index k is the bin [edges[k], edges[k+1]); an empty bin has
    count 0 and NaN confidence and accuracy (they are not measured). An empty set, or a NaN probability: all counts
    0 (the same shapes, nothing measured)."""
    edges = _bins(n_bins)
    count = np.zeros(len(edges) - 1)
    conf_sum, pos_sum = np.zeros_like(count), np.zeros_like(count)
    checked = _probabilities(y_true, prob)
    if checked is not None:
        y, p = checked
        k = _bin_index(p, edges)
        count = np.bincount(k, minlength=len(count)).astype(float)
        conf_sum = np.bincount(k, weights=p, minlength=len(count))
        pos_sum = np.bincount(k, weights=y.astype(float), minlength=len(count))
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, accuracy = conf_sum / count, pos_sum / count  # 0/0 -> NaN for the empty bins
    return {"confidence": confidence.tolist(), "accuracy": accuracy.tolist(), "count": count.astype(int).tolist(),
            "edges": edges.tolist()}  # fmt: skip


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum over bins b of (n_b / N) |fraction positive in b - mean probability in b| (Naeini et al. 2015, Guo
    et al. 2017), ``n_bins`` equal-width bins of the positive-class probability, left-closed (see the module's note:
    torchmetrics' ``binary_calibration_error(norm="l1")`` except when a probability is exactly 1). Empty bins weigh
    0. NaN for an empty set or a NaN probability."""
    curve = reliability_curve(y_true, prob, n_bins)
    count = np.asarray(curve["count"], float)
    if count.sum() == 0:
        return float("nan")
    used = count > 0
    gap = np.abs(np.asarray(curve["accuracy"])[used] - np.asarray(curve["confidence"])[used])
    return float(np.sum(count[used] / count.sum() * gap))


def sensitivity_at_specificity(y_true: np.ndarray, score: np.ndarray, specificity: float = 0.9) -> float:
    """The ROC curve's sensitivity at ``specificity``: the largest true-positive rate among the curve's points (one
    per distinct score, tied scores one point, plus the origin) whose specificity 1 - FPR is at least
    ``specificity``, compared as specificities with 1e-12 slack (as FPR <= 1 - 0.9, 1 of 10 negatives would fail:
    1 - 0.9 < 0.1 in floats). Threshold-free like the AUC: it reads the curve of this set, it does not carry a
    threshold from elsewhere. NaN when the set lacks a class or a score is NaN (±inf scores are ordered like any
    other)."""
    try:
        spec = float(specificity)
    except (TypeError, ValueError):
        spec = float("nan")
    if not 0 <= spec <= 1:
        raise CXRAugError(f"specificity {specificity!r}: expected a number within [0, 1]")
    y, s = _inputs(y_true, score, "score")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # the last image of each group of tied scores
    tp = np.r_[0, np.cumsum(y)[last]]  # predicting positive at score >= each distinct score, and at +inf
    fp = np.r_[0, np.cumsum(~y)[last]]
    ok = 1 - fp / n_neg >= spec - 1e-12
    return float(tp[ok].max() / n_pos)  # the origin always qualifies


__all__ = ["brier_score", "expected_calibration_error", "reliability_curve", "sensitivity_at_specificity"]
