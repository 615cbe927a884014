"""Power known before training: the smallest AUC difference a test split can detect, and the test size a margin needs.

A comparison of two classifiers scored on the same test images is planned the way Hanley & McNeil plan it:

* Hanley & McNeil, "The meaning and use of the area under a receiver operating characteristic (ROC) curve",
  Radiology 143 (1982): the variance of an empirical AUC from the AUC and the class counts alone,
  var(A) = (A(1-A) + (m-1)(Q1-A²) + (n-1)(Q2-A²)) / (m n), Q1 = A/(2-A), Q2 = 2A²/(1+A)
  (m positives, n negatives; Q1, Q2 are exact for exponentially distributed scores, close for binormal ones when
  the classes are balanced: see :func:`hanley_mcneil_variance`).
* Hanley & McNeil, "A method of comparing the areas under receiver operating characteristic curves derived from
  the same cases", Radiology 148 (1983): two AUCs measured on the same images are correlated (r), and the
  difference has var(A_a - A_b) = var(A_a) + var(A_b) - 2 r sd(A_a) sd(A_b).
* The usual normal-approximation power equation for a two-sided level-alpha test of A_a = A_b (the power of the
  test that compares the difference with its null standard error): a true difference delta is detected with
  probability ``power`` when  z_{1-alpha/2} SE_0 + z_{power} SE_delta = delta,  SE_0 with both AUCs at the
  assumed value, SE_delta with A_a = A_b + delta (the rejections on the wrong side are neglected); or, for the
  Wald test that DeLong's is (its variance estimated from the data), (z_{1-alpha/2} + z_{power}) SE_delta = delta
  (``null_variance=False``).
* Patients with several images: the variances are multiplied by a design effect (Kish, "Survey Sampling",
  Wiley 1965, the variance inflation of cluster sampling), 1 + (m~ - 1) icc with m~ the size-weighted mean
  number of images per patient; Obuchowski, "Nonparametric analysis of clustered ROC curve data",
  Biometrics 53 (1997) is why a patient's images are not independent evidence for an AUC (and the variance the
  study's patient-clustered DeLong test uses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from cxraug.errors import CXRAugError

DEFAULT_ICC = 0.5


# ------------------------------------------------------------------------------------------ checks
def _count(name: str, v: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
        raise CXRAugError(f"{name} {v!r}: expected a whole number of images, 0 or more")
    return int(v)


def _within(name: str, v: float, lo: float, hi: float, closed: bool = False) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    ok = (lo <= x <= hi) if closed else (lo < x < hi)
    if not ok:
        interval = f"[{lo:g}, {hi:g}]" if closed else f"({lo:g}, {hi:g})"
        raise CXRAugError(f"{name} {v!r}: expected a number within {interval}")
    return x


def _design(v: float) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not (np.isfinite(x) and x > 0):
        raise CXRAugError(f"design_effect {v!r}: expected a positive number (1 for one image per patient)")
    return x


# -------------------------------------------------------------------------------------- variances
def _hm_var(a: np.ndarray | float, m: int, n: int) -> np.ndarray:
    """Hanley & McNeil (1982) variance, vectorized over the AUC ``a`` (no checks)."""
    a = np.asarray(a, float)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (m - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / (m * n)


def hanley_mcneil_variance(auc: float, n_pos: int, n_neg: int) -> float:
    """Variance of the empirical AUC of a classifier whose true AUC is ``auc``, measured on ``n_pos`` positive and
    ``n_neg`` negative images (Hanley & McNeil, Radiology 1982, their eq. 2 with Q1 = A/(2-A), Q2 = 2A²/(1+A)).

    Exact (given Q1, Q2) for scores whose two classes are exponentially distributed, Hanley & McNeil's model. For
    binormal scores it is close when the classes are balanced and biased when not, because the model's Q2 > Q1 is
    weighted by the larger class: simulated at AUC 0.85, the true variance is 25-30 % below the formula with 3
    negatives per positive (a conservative detectable difference) and ~30 % above it with 3 positives per
    negative (an optimistic one; ``tests/test_power.py`` pins both). NaN when a class has no image (there is no
    AUC to measure)."""
    a = _within("auc", auc, 0.0, 1.0, closed=True)
    m, n = _count("n_pos", n_pos), _count("n_neg", n_neg)
    if m == 0 or n == 0:
        return float("nan")
    return float(max(_hm_var(a, m, n), 0.0))


def _diff_se(a: np.ndarray | float, b: float, m: int, n: int, r: float, deff: float) -> np.ndarray:
    """SE of A_a - A_b by Hanley & McNeil (1983): both variances by the 1982 formula, correlation r, design
    effect ``deff`` on both."""
    va, vb = np.maximum(_hm_var(a, m, n), 0.0), max(float(_hm_var(b, m, n)), 0.0)
    return np.sqrt(deff * np.maximum(va + vb - 2 * r * np.sqrt(va * vb), 0.0))


def min_detectable_difference(
    auc: float,
    n_pos: int,
    n_neg: int,
    *,
    correlation: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
    design_effect: float = 1.0,
    null_variance: bool = True,
) -> float:
    """The smallest AUC difference delta that a two-sided level-``alpha`` test of AUC_a = AUC_b, the two classifiers
    scored on the same ``n_pos`` + ``n_neg`` test images, detects with probability ``power`` when AUC_b = ``auc``
    and AUC_a = ``auc`` + delta.

    Solves z_{1-alpha/2} SE_0 + z_{power} SE_delta = delta with SE from Hanley & McNeil (1982, 1983):
    SE² = D (V(A_a) + V(A_b) - 2 r sqrt(V(A_a) V(A_b))), r = ``correlation`` of the two AUC estimates (not of the
    scores: Hanley & McNeil 1983 tabulate it from the score correlations; 0.5 is a middling value for two
    networks trained on the same images), D = ``design_effect`` (1 for one image per patient, see
    :func:`design_effect_from_clusters`). delta is capped at 1 - ``auc``: ``inf`` when no AUC up to 1 can be
    detected (too few images), NaN when a class has no image. The root is bracketed on a grid over [0, 1 - auc]
    (the first sign change, so the smallest delta) and refined by Brent's method.

    ``null_variance`` False solves (z_{1-alpha/2} + z_{power}) SE_delta = delta instead: the power of a Wald test
    whose variance is estimated from the data, i.e. at the true AUCs, which is what DeLong's test and a CI of the
    difference are. Above an AUC of about 0.5, SE_delta < SE_0, so the default (True, the textbook equation) is
    the more conservative: in the simulations of ``tests/test_power.py`` (power 0.8 asked) DeLong's test reaches
    0.80-0.87 at the default's delta, the more the larger delta is, and 0.77-0.83 at this one's; the two agree as
    delta becomes small against the room left above ``auc`` (a margin of 0.02 on a few thousand images)."""
    a = _within("auc", auc, 0.0, 1.0)
    m, n = _count("n_pos", n_pos), _count("n_neg", n_neg)
    r = _within("correlation", correlation, -1.0, 1.0)
    za = stats.norm.ppf(1 - _within("alpha", alpha, 0.0, 1.0) / 2)
    zp = stats.norm.ppf(_within("power", power, 0.0, 1.0))
    deff = _design(design_effect)
    if m == 0 or n == 0:
        return float("nan")
    se0 = float(_diff_se(a, a, m, n, r, deff))

    def gap(d: np.ndarray | float) -> np.ndarray:  # > 0: d is not yet detectable with that power
        se_d = _diff_se(a + np.asarray(d, float), a, m, n, r, deff)
        return (za * se0 if null_variance else za * se_d) + zp * se_d - d

    if gap(0.0) <= 0:  # z_power <= -z_alpha (power below alpha/2): any difference, even none, "reaches" it
        return 0.0
    grid = np.linspace(0.0, 1.0 - a, 1025)
    below = np.flatnonzero(gap(grid) <= 0)
    if len(below) == 0:
        return float("inf")
    i = int(below[0])
    if gap(grid[i]) == 0:
        return float(grid[i])
    return float(optimize.brentq(lambda d: float(gap(d)), grid[i - 1], grid[i], xtol=1e-12, rtol=1e-12))


def design_effect_from_clusters(groups: Sequence[str] | np.ndarray, icc: float = DEFAULT_ICC) -> float:
    """Variance inflation of a test split whose images come in patients: 1 + (m~ - 1) icc (Kish 1965), with
    m~ = sum m_i² / sum m_i the size-weighted mean number of images per patient (m_i: patient i's images).

    m~ is the plain mean when every patient has the same number of images; with unequal numbers it is larger,
    and it is what makes the formula exact for a mean over images that are correlated ``icc`` within a patient
    (var = sigma²/N (1 + icc (sum m_i²/N - 1))). ``groups``: one patient id per image.

    The default ``icc`` 0.5 is a planning value, not an estimate: repeated radiographs of one patient share the
    disease, the anatomy and often the machine, so their contributions to the AUC are far from independent (icc
    well above 0), yet they are not copies (icc 1 would count a patient as one image). Halfway keeps the power
    line from promising what one image per patient would give; a study with a better estimate (e.g. from its
    validation split) passes it. NaN for an empty list."""
    rho = _within("icc", icc, 0.0, 1.0, closed=True)
    g = np.asarray(groups)
    if g.size == 0:
        return float("nan")
    sizes = np.unique(g, return_counts=True)[1].astype(float)
    m_tilde = float((sizes**2).sum() / sizes.sum())
    return float(1 + (m_tilde - 1) * rho)


def _split(total: int, positive_fraction: float) -> tuple[int, int]:
    m = round(total * positive_fraction)
    return m, total - m


def required_test_size(
    auc: float,
    delta: float,
    *,
    positive_fraction: float,
    correlation: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
    design_effect: float = 1.0,
    null_variance: bool = True,
) -> int:
    """The smallest total number N of test images (round(N ``positive_fraction``) of them positive) at which
    :func:`min_detectable_difference` is at most ``delta``; the other arguments are passed on.

    Found by doubling N until it suffices, then bisection: the detectable difference falls as N grows (up to the
    rounding of the positives, so N is the bisection's answer: N suffices and N - 1 does not)."""
    a = _within("auc", auc, 0.0, 1.0)
    d = _within("delta", delta, 0.0, 1.0)
    f = _within("positive_fraction", positive_fraction, 0.0, 1.0)
    kw = dict(
        correlation=correlation, alpha=alpha, power=power, design_effect=design_effect, null_variance=null_variance
    )

    def enough(total: int) -> bool:
        m, n = _split(total, f)
        if m < 1 or n < 1:
            return False
        return min_detectable_difference(a, m, n, **kw) <= d  # NaN and inf compare False

    lo, hi = 1, 2
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > 2**40:
            raise CXRAugError(f"required_test_size: no test split below {2**40:,} images detects an AUC difference "
                              f"of {delta!r}")  # fmt: skip
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi  # enough(hi), not enough(hi - 1) = lo (total 1 never suffices: one class would be empty)


def _about(total: int) -> str:
    """2 significant figures with thousands separators: 2287 -> '2,300'."""
    return f"{total:,}" if total < 100 else f"{round(total, 2 - len(str(total))):,}"


def power_line(
    auc: float,
    n_pos: int,
    n_neg: int,
    *,
    margin: float | str,
    correlation: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
    design_effect: float = 1.0,
    null_variance: bool = True,
) -> dict:
    """What a study prints (and stores as JSON) before it trains: the smallest AUC difference its test split can
    detect (:func:`min_detectable_difference`) next to the smallest difference that matters, ``margin`` (a number,
    or ``"P%-of-headroom"`` taken against the assumed ``auc``, as :func:`cxraug.classify.stats.margin_value`).

    Keys: the inputs (``auc``, ``n_pos``, ``n_neg``, ``correlation``, ``design_effect``, ``alpha``, ``power``,
    ``null_variance``),
    ``mdd`` (inf: nothing below an AUC of 1 is detectable; NaN: a class has no test image), ``margin`` (the
    number), ``reachable`` (mdd <= margin), ``needed_test_size`` (total test images, class ratio kept, that
    would make the margin detectable; None when reachable or when the split has no image of a class) and
    ``text``, one line."""
    from cxraug.classify.stats import margin_value

    a = _within("auc", auc, 0.0, 1.0)
    m, n = _count("n_pos", n_pos), _count("n_neg", n_neg)
    x = margin_value(margin, a)
    kw = dict(
        correlation=correlation, alpha=alpha, power=power, design_effect=design_effect, null_variance=null_variance
    )
    mdd = min_detectable_difference(a, m, n, **kw)
    reachable = bool(mdd <= x)
    needed = None if reachable or m == 0 or n == 0 else required_test_size(a, x, positive_fraction=m / (m + n), **kw)
    deff = float(design_effect)
    setting = (f"with {m:,} positive and {n:,} negative test images, an AUC of {a:.3g} and correlation "
               f"{float(correlation):.3g}" + (f", design effect {deff:.3g}" if deff != 1 else ""))  # fmt: skip
    at = f"at α {float(alpha):.3g} with power {float(power):.3g}"
    if not np.isfinite(mdd) and m * n == 0:
        text = f"power: {setting}: not computable (the test split has no {'positive' if m == 0 else 'negative'} image)"
    else:
        found = (f"the smallest difference detectable {at} is {mdd:.3f}" if np.isfinite(mdd)
                 else f"no difference up to an AUC of 1 is detectable {at}")  # fmt: skip
        if reachable:
            verdict = "the test split can detect it"
        else:
            verdict = f"underpowered by design (about {_about(needed)} test images would be needed)"
        text = f"power: {setting}, {found}; the margin is {x:.3g}: {verdict}"
    return {"auc": a, "n_pos": m, "n_neg": n, "correlation": float(correlation), "design_effect": deff,
            "alpha": float(alpha), "power": float(power), "mdd": float(mdd), "margin": float(x),
            "null_variance": bool(null_variance), "reachable": reachable, "needed_test_size": needed,
            "text": text}  # fmt: skip


__all__ = [
    "DEFAULT_ICC",
    "design_effect_from_clusters",
    "hanley_mcneil_variance",
    "min_detectable_difference",
    "power_line",
    "required_test_size",
]
