"""Statistics for a verdict: the validation-chosen operating point, DeLong's test for two correlated
ROC-AUCs, the patient-clustered bootstrap, and the plain-words verdict.

References: DeLong, DeLong & Clarke-Pearson, "Comparing the areas under two or more correlated receiver
operating characteristic curves: a nonparametric approach", Biometrics 44 (1988); Sun & Xu, "Fast
implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
characteristic curves", IEEE Signal Processing Letters 21 (2014) (mid-ranks instead of the O(mn)
kernel); Obuchowski, "Nonparametric analysis of clustered ROC curve data", Biometrics 53 (1997) (the
structural components summed per patient, for patients with several images); Youden, "Index for rating diagnostic tests", Cancer 3 (1950); Holm (1979) for the exploratory comparisons; Field & Welsh, "Bootstrapping
clustered data", JRSS-B 69 (2007) (resample whole clusters, here patients).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from cxraug.errors import CXRAugError

OPERATING_POINTS = ("youden", "sensitivity:S", "fixed:T")


def parse_operating_point(rule: str) -> tuple[str, float | None]:
    """``youden`` | ``sensitivity:0.9`` | ``fixed:0.5`` -> (kind, value)."""
    kind, _, val = str(rule).partition(":")
    if kind == "youden" and not val:
        return kind, None
    if kind in ("sensitivity", "fixed"):
        try:
            v = float(val)
        except ValueError:
            v = float("nan")
        if 0 <= v <= 1:
            return kind, v
    raise CXRAugError(f"operating_point {rule!r}: expected one of {', '.join(OPERATING_POINTS)} with S, T in [0, 1]")


def choose_threshold(y_true: np.ndarray, score: np.ndarray, rule: str = "youden") -> float:
    """The decision threshold (predict positive when ``score >= t``) chosen on validation predictions.

    ``youden``: maximizes sensitivity + specificity - 1 (ties: the higher threshold);
    ``sensitivity:S``: the highest threshold whose sensitivity is at least S (the most specific
    operating point that reaches S); ``fixed:T``: T. Candidates are the observed scores, so a threshold
    is always a score the validation set actually produced."""
    kind, val = parse_operating_point(rule)
    if kind == "fixed":
        return float(val)
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, float)
    if y.all() or not y.any():
        return 0.5  # one class only: no operating point can be chosen from it
    cand = np.unique(s)[::-1]  # descending
    pred = s[None, :] >= cand[:, None]  # [T, N]
    tp, tn = (pred & y).sum(1), (~pred & ~y).sum(1)  # [T]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if kind == "youden":
        # sens + spec = (tp N + tn P) / (P N): compared as integers, so equal values tie exactly (in floats,
        # 3/5 + 3/5 and 4/5 + 2/5 differ in the last bit) and argmax takes the first = the highest threshold
        return float(cand[int(np.argmax(tp * n_neg + tn * n_pos))])
    sens = tp / n_pos
    ok = np.nonzero(sens >= val - 1e-12)[0]
    return float(cand[ok[0]])


# ----------------------------------------------------------------------------------------- DeLong
def _midrank(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties get their average rank) of a 1-D array, all NaN if any value is NaN: what
    ``scipy.stats.rankdata(x)`` gives (a test checks it), without its argument handling, which is most of its
    time at the few hundred images of a test set (~0.1 ms against ~0.03 ms, i.e. seconds over a study's
    thousands of bootstrap resamples)."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]  # NaN sorts last
    if len(xs) and np.isnan(xs[-1]):
        return np.full(len(x), np.nan)
    new = np.empty(len(x), bool)
    new[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    starts = np.flatnonzero(new)  # first sorted position of each distinct value
    ends = np.append(starts[1:], len(x))
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of the 1-based ranks starts+1..ends
    return ranks


def delong_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs [K] and the structural components V10 [K,m] (one per positive) and V01 [K,n] (per negative)
    of K score vectors on the same images, by Sun & Xu's mid-rank formulation."""
    y = np.asarray(y_true).astype(bool)
    s = np.atleast_2d(np.asarray(scores, float))  # [K, N]
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise CXRAugError("DeLong's test needs positive and negative images")
    v10, v01, aucs = np.empty((len(s), m)), np.empty((len(s), n)), np.empty(len(s))
    for k in range(len(s)):
        tx, ty, tz = _midrank(pos[k]), _midrank(neg[k]), _midrank(np.concatenate([pos[k], neg[k]]))
        aucs[k] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[k] = (tz[:m] - tx) / n  # share of negatives each positive out-scores (ties count 1/2)
        v01[k] = 1 - (tz[m:] - ty) / m  # share of positives that out-score each negative
    return aucs, v10, v01


def clustered_auc_cov(
    y_true: np.ndarray, scores: np.ndarray, groups: list[str] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """AUCs [K] and their covariance [K,K] when images are clustered in patients (Obuchowski 1997).

    Each image's structural component (V10 of a positive, V01 of a negative, as in DeLong) is summed per
    patient: X_i = sum of V10 over patient i's positives (m_i of them), Y_i = sum of V01 over its
    negatives (n_i). With M, N the totals and A the AUC, patient i contributes P_i = (X_i - m_i A) / M and
    Q_i = (Y_i - n_i A) / N to the linearized A - AUC, and patients are independent. Obuchowski's
    var = S10/M + S01/N + 2 S11/(MN), with the small-sample factors of her paper: I10/(I10-1) on S10 and
    I01/(I01-1) on S01 (I10, I01 the patients holding positive / negative images), I/(I-1) on S11 (I all
    patients); as a covariance

        cov(A_a, A_b) = c10 sum_i P_i^a P_i^b + c01 sum_i Q_i^a Q_i^b + c11 sum_i (P_i^a Q_i^b + Q_i^a P_i^b).

    With one image per patient the cross term is 0 and the result is exactly DeLong's variance.
    ``groups`` None: every image its own patient. Returns (aucs, cov, number of patients)."""
    aucs, v10, v01 = delong_components(y_true, scores)  # [K], [K,m], [K,n]
    y = np.asarray(y_true).astype(bool)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(g) != len(y):
        raise CXRAugError(f"clustered DeLong: {len(g)} patient ids for {len(y)} images")
    _, inv = np.unique(g, return_inverse=True)
    n_clusters = int(inv.max()) + 1
    m, n = v10.shape[1], v01.shape[1]
    mi = np.bincount(inv[y], minlength=n_clusters)  # positives per patient [I]
    ni = np.bincount(inv[~y], minlength=n_clusters)  # negatives per patient [I]
    x = np.stack([np.bincount(inv[y], weights=v, minlength=n_clusters) for v in v10])  # X_i [K,I]
    yy = np.stack([np.bincount(inv[~y], weights=v, minlength=n_clusters) for v in v01])  # Y_i [K,I]
    p = (x - mi[None] * aucs[:, None]) / m  # [K,I]
    q = (yy - ni[None] * aucs[:, None]) / n  # [K,I]

    def factor(k: int) -> float:
        return k / (k - 1) if k > 1 else float("nan")

    c10, c01, c11 = factor(int((mi > 0).sum())), factor(int((ni > 0).sum())), factor(n_clusters)
    cross = p @ q.T
    cov = c10 * (p @ p.T) + c01 * (q @ q.T) + c11 * (cross + cross.T)  # [K,K]
    return aucs, cov, n_clusters


def delong_test(
    y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, *, groups: list[str] | np.ndarray | None = None
) -> dict:
    """Two-sided DeLong test of AUC(a) = AUC(b) for two classifiers scored on the same images.

    ``groups`` (patient id per image): the variance is the patient-clustered one of
    :func:`clustered_auc_cov` (a patient's images are not independent evidence); without it, every image
    is independent (DeLong 1988). The result says which under ``variance``."""
    if groups is None:
        aucs, v10, v01 = delong_components(y_true, np.stack([score_a, score_b]))
        m, n = v10.shape[1], v01.shape[1]
        cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n  # [2, 2]
        kind, n_clusters = "image-level (DeLong 1988)", len(np.asarray(y_true))
    else:
        aucs, cov, n_clusters = clustered_auc_cov(y_true, np.stack([score_a, score_b]), groups)
        kind = "patient-clustered (Obuchowski 1997)"
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if not np.isfinite(var):
        z, p = float("nan"), float("nan")
    elif var <= 0:
        z, p = (0.0, 1.0) if diff == 0 else (float("inf") * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = float(2 * stats.norm.sf(abs(z)))
    se = float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else float("nan")
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "se": se, "z": float(z),
            "p_value": p, "ci": [diff - 1.959964 * se, diff + 1.959964 * se], "variance": kind,
            "clusters": int(n_clusters)}  # fmt: skip


# -------------------------------------------------------------------------------------- bootstrap
def cluster_bootstrap(
    stat: Callable[[np.ndarray], float],
    groups: list[str] | np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile CI of ``stat(index array)`` with whole clusters (patients) resampled with replacement.

    ``stat`` gets the image indices of one resample (a patient drawn twice contributes its images
    twice) and returns a number; resamples where it is not finite (e.g. one class only) are skipped."""
    g = np.asarray(groups)
    uniq, inv = np.unique(g, return_inverse=True)
    order = np.argsort(inv, kind="stable")  # images grouped by cluster
    sizes = np.bincount(inv, minlength=len(uniq))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    est = float(stat(np.arange(len(g))))
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))  # clusters drawn with replacement
        sz = sizes[pick]
        offset = np.arange(sz.sum()) - np.repeat(np.cumsum(sz) - sz, sz)  # position inside its cluster
        v = stat(order[np.repeat(starts[pick], sz) + offset])
        if np.isfinite(v):
            vals.append(v)
    if len(vals) < max(10, n_boot // 2):
        return {"estimate": est, "ci": [float("nan"), float("nan")], "n_boot": len(vals), "clusters": len(uniq)}
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return {"estimate": est, "ci": [float(lo), float(hi)], "n_boot": len(vals), "clusters": len(uniq)}


def auc_of(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC (Mann-Whitney, ties 1/2); NaN when one class is missing."""
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return float("nan")
    r = _midrank(np.asarray(s, float))
    return float((r[y].sum() - m * (m + 1) / 2) / (m * n))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """PR-AUC as average precision, sum over score thresholds of (R_n - R_(n-1)) P_n with tied scores one
    threshold: scikit-learn's ``average_precision_score`` (a test checks it), without its per-call argument
    validation, which costs milliseconds, i.e. seconds over a study's thousands of bootstrap resamples.
    NaN when there is no positive, or a score is not finite (scikit-learn refuses those)."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    s = np.asarray(s, float)
    if n_pos == 0 or not np.isfinite(s).all():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last image of each group of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


# ---------------------------------------------------------------------------------------- verdict
VERDICT_WORDS = ("better", "worse", "no difference that matters", "underpowered", "underpowered by design",
                 "cannot conclude")  # fmt: skip


def parse_margin(margin: float | str) -> tuple[str, float]:
    """The smallest AUC difference that matters: a number in (0, 1) -> ("absolute", X); ``"P%-of-headroom"`` ->
    ("headroom", P/100): X = P/100 x (1 - the comparator's AUC), so that near the ceiling, where a fixed 0.02 can
    no longer be exceeded, the margin shrinks with the room left."""
    if isinstance(margin, int | float) and not isinstance(margin, bool):
        if np.isfinite(margin) and 0 < margin < 1:
            return "absolute", float(margin)
    elif isinstance(margin, str):
        text = margin.strip()
        if text.endswith("%-of-headroom"):
            try:
                pct = float(text.removesuffix("%-of-headroom"))
            except ValueError:
                pct = float("nan")
            if np.isfinite(pct) and 0 < pct < 100:
                return "headroom", pct / 100
        else:
            try:
                return parse_margin(float(text))
            except ValueError:
                pass
    raise CXRAugError(f"margin {margin!r}: expected a number within (0, 1) such as 0.02, or P%-of-headroom such as "
                      "10%-of-headroom")  # fmt: skip


def margin_value(margin: float | str, reference_auc: float) -> float:
    """X for a comparison whose comparator's AUC is ``reference_auc`` (see :func:`parse_margin`); a headroom margin
    of a comparator without an AUC (NaN) is NaN."""
    kind, v = parse_margin(margin)
    if kind == "absolute":
        return v
    return float(v * (1 - reference_auc)) if np.isfinite(reference_auc) else float("nan")


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm, "A simple sequentially rejective multiple test procedure",
    Scand. J. Statist. 6, 1979): sorted ascending, p_(i) x (m - i + 1), made monotone, capped at 1; NaN p-values
    are left out of m and stay NaN. Rejecting where the adjusted p < alpha controls the family-wise error rate."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    running = 0.0
    for rank, j in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[j]))
        out[j] = running
    return out.tolist()


def verdict(ci: list[float] | tuple[float, float], margin: float, metric: str = "AUC") -> dict:
    """Plain words for a difference's 95 % CI [lo, hi] against the smallest difference that matters (X).

    no difference that matters: the CI lies inside (-X, X), whichever side of 0 (an equivalence reading, as in
    two one-sided tests: a CI that excludes 0 but stays within X is a difference too small to matter);
    better / worse: the CI excludes 0 and reaches beyond X; underpowered: the CI includes 0 and reaches beyond
    ±X, so the data cannot tell."""
    lo, hi = float(ci[0]), float(ci[1])
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return {"word": "underpowered", "text": f"underpowered (no confidence interval for the {metric} difference)"}
    if not np.isfinite(margin):
        return {"word": "underpowered", "text": f"underpowered (no margin: the comparator has no {metric})"}
    if -margin < lo and hi < margin:
        return {"word": "no difference that matters",
                "text": f"no difference that matters (the CI [{lo:+.3f}, {hi:+.3f}] lies within ±{margin:.3g}, the "
                        f"smallest {metric} difference that matters)"}  # fmt: skip
    if lo > 0:
        return {"word": "better", "text": f"better ({metric} difference CI [{lo:+.3f}, {hi:+.3f}] excludes 0)"}
    if hi < 0:
        return {"word": "worse", "text": f"worse ({metric} difference CI [{lo:+.3f}, {hi:+.3f}] excludes 0)"}
    return {"word": "underpowered",
            "text": f"underpowered (the CI [{lo:+.3f}, {hi:+.3f}] is wider than ±{margin:.3g}: more seeds or test "
                    "images are needed to tell)"}  # fmt: skip
