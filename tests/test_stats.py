"""The study's statistics against references: a hand-computed Youden point, sklearn's ROC, an O(mn)
structural-components DeLong written here, and a coverage simulation for the clustered bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from cxraug.classify.stats import auc_of, choose_threshold, cluster_bootstrap, delong_test, verdict
from cxraug.errors import CXRAugError

# five negatives, three positives; worked by hand:
#   t=0.60 -> sensitivity 3/3, specificity 4/5 (the negative at 0.75 is a false positive): J = 0.800
#   t=0.75 -> sensitivity 2/3, specificity 4/5: J = 0.467
#   t=0.80 -> sensitivity 2/3, specificity 5/5: J = 0.667
Y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
S = np.array([0.1, 0.2, 0.3, 0.4, 0.75, 0.6, 0.8, 0.9])


def test_youden_and_sensitivity_operating_points_by_hand():
    assert choose_threshold(Y, S, "youden") == pytest.approx(0.6)
    assert choose_threshold(Y, S, "sensitivity:0.9") == pytest.approx(0.6)  # only t <= 0.6 reaches 0.9
    assert choose_threshold(Y, S, "sensitivity:0.6") == pytest.approx(0.8)  # 2/3 >= 0.6 at the higher 0.8
    assert choose_threshold(Y, S, "fixed:0.5") == 0.5
    for bad in ("youden:1", "sensitivity:2", "fixed:x", "best"):
        with pytest.raises(CXRAugError, match="operating_point"):
            choose_threshold(Y, S, bad)


def test_youden_threshold_matches_sklearn_roc():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 120)
        s = rng.normal(y * 0.8, 1.0)
        fpr, tpr, thr = roc_curve(y, s)
        ref = thr[int(np.argmax(tpr - fpr))]
        assert choose_threshold(y, s, "youden") == pytest.approx(ref)


def _delong_quadratic(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) directly: the Mann-Whitney kernel psi over every (positive, negative)
    pair, structural components V10/V01, their covariances; returns (z, p)."""
    y = y.astype(bool)
    comps = []
    for s in (a, b):
        x, z = s[y][:, None], s[~y][None, :]
        psi = (x > z) + 0.5 * (x == z)  # [m, n]
        comps.append((psi.mean(), psi.mean(1), psi.mean(0)))
    m, n = y.sum(), (~y).sum()
    s10 = np.cov(np.stack([comps[0][1], comps[1][1]]))
    s01 = np.cov(np.stack([comps[0][2], comps[1][2]]))
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    zz = (comps[0][0] - comps[1][0]) / np.sqrt(var)
    return zz, 2 * stats.norm.sf(abs(zz))


def test_delong_matches_quadratic_structural_components():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 150)
    common = rng.normal(size=150)
    a = y * 1.0 + common + rng.normal(0, 0.7, 150)
    b = np.round(y * 0.6 + common + rng.normal(0, 0.7, 150), 1)  # rounded: ties exercise the mid-ranks
    res = delong_test(y, a, b)
    z_ref, p_ref = _delong_quadratic(y, a, b)
    assert res["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert res["auc_b"] == pytest.approx(roc_auc_score(y, b))
    assert res["z"] == pytest.approx(z_ref, rel=1e-9)
    assert res["p_value"] == pytest.approx(p_ref, rel=1e-9)
    assert 0 < res["p_value"] < 1
    assert auc_of(y, b) == pytest.approx(roc_auc_score(y, b))


def test_delong_false_positive_rate_is_nominal():
    """Two equally good, correlated classifiers: p < 0.05 in about 5 % of simulated test sets."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(400):
        y = rng.integers(0, 2, 80)
        common = rng.normal(size=80)
        a = y + common + rng.normal(0, 1, 80)
        b = y + common + rng.normal(0, 1, 80)
        hits += delong_test(y, a, b)["p_value"] < 0.05
    assert 0.025 <= hits / 400 <= 0.085


def test_cluster_bootstrap_covers_the_known_mean():
    """Patients share a random effect: the patient bootstrap's 95 % CI covers the true mean (0) about
    95 % of the time; an image-level bootstrap that ignores the clusters covers it far less often."""
    rng = np.random.default_rng(3)
    cover_cluster = cover_naive = 0
    reps = 100
    for r in range(reps):
        sizes = rng.integers(1, 8, 40)
        effect = np.repeat(rng.normal(0, 1, 40), sizes)
        vals = effect + rng.normal(0, 0.5, len(effect))
        groups = np.repeat(np.arange(40), sizes)
        ci = cluster_bootstrap(lambda i, v=vals: v[i].mean(), groups, n_boot=200, seed=r)["ci"]
        cover_cluster += ci[0] <= 0 <= ci[1]
        ci = cluster_bootstrap(lambda i, v=vals: v[i].mean(), np.arange(len(vals)), n_boot=200, seed=r)["ci"]
        cover_naive += ci[0] <= 0 <= ci[1]
    assert 0.88 <= cover_cluster / reps <= 0.99
    assert cover_naive / reps < 0.8


def test_verdict_words():
    assert verdict([0.01, 0.05], 0.02)["word"] == "better"
    assert verdict([-0.05, -0.01], 0.02)["word"] == "worse"
    v = verdict([-0.015, 0.012], 0.02)
    assert v["word"] == "no detectable difference" and "larger than 0.02" in v["text"]
    v = verdict([-0.1, 0.08], 0.02)
    assert v["word"] == "underpowered" and "±0.02" in v["text"]
    assert verdict([float("nan"), float("nan")], 0.02)["word"] == "underpowered"
