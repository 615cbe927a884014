"""The study's statistics against references: a hand-computed Youden point, sklearn's ROC, an O(mn)
structural-components DeLong written here, Obuchowski's clustered AUC variance written here with loops
(and worked by hand on a three-patient example), and coverage simulations for the clustered bootstrap
and the clustered DeLong test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cxraug.classify.stats import (
    _midrank,
    auc_of,
    average_precision,
    choose_threshold,
    cluster_bootstrap,
    clustered_auc_cov,
    delong_test,
    verdict,
)
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


def test_average_precision_by_hand_and_against_sklearn():
    # Y/S above, thresholds from the top: 0.9 (P 1, R 1/3), 0.8 (1, 2/3), 0.75 (2/3, 2/3), 0.6 (3/4, 1)
    assert average_precision(Y, S) == pytest.approx(1 / 3 + 1 / 3 + 0 + 1 / 3 * 3 / 4)
    rng = np.random.default_rng(0)
    for n in (2, 7, 50, 400):
        y = rng.integers(0, 2, n)
        y[0] = 1
        for s in (rng.random(n), rng.integers(0, 5, n) / 4.0, np.zeros(n)):  # continuous, many ties, all tied
            assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert np.isnan(average_precision(np.zeros(5), rng.random(5)))
    s = np.array([0.1, 0.2, 0.3, np.nan, 0.6, 0.7, 0.8, 0.9])  # sklearn refuses a NaN score; so does this
    with pytest.raises(ValueError):
        average_precision_score(Y, s)
    assert np.isnan(average_precision(Y, s)) and np.isnan(average_precision(Y, np.where(S > 0.5, np.inf, S)))


def test_youden_ties_go_to_the_highest_threshold_in_exact_arithmetic():
    """Five positives, five negatives. Worked by hand: t = 1.7 gives sensitivity 1/5, specificity 5/5;
    t = 0.4: 2/5, 4/5 (the negative at 0.8 above it); t = -0.2: 4/5, 2/5. All three reach sens + spec = 6/5,
    the maximum, so the rule's tie-break picks 1.7. In floats 1/5 + 5/5 = 1.2 but 2/5 + 4/5 is
    1.2000000000000002, which made 0.4 win."""
    y = np.array([1, 0, 1, 0, 0, 1, 1, 0, 1, 0])
    s = np.array([1.7, 0.1, 0.4, -0.5, 0.8, -1.5, 0.1, 0.2, -0.2, -0.3])
    assert 1 / 5 + 5 / 5 != 2 / 5 + 4 / 5  # the float rounding this test is about
    assert choose_threshold(y, s, "youden") == 1.7
    from fractions import Fraction

    rng = np.random.default_rng(1)
    for _ in range(300):  # against the rule in exact rational arithmetic, many ties
        n = int(rng.integers(4, 40))
        yy = rng.integers(0, 2, n)
        yy[:2] = [1, 0]
        ss = np.round(rng.normal(yy * 0.8, 1), 1)
        cand = np.unique(ss)[::-1]
        j = [Fraction(int(((ss >= t) & (yy == 1)).sum()), int(yy.sum()))
             + Fraction(int(((ss < t) & (yy == 0)).sum()), int((1 - yy).sum())) for t in cand]  # fmt: skip
        assert choose_threshold(yy, ss, "youden") == cand[j.index(max(j))]


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


def _obuchowski_loops(y: np.ndarray, s: np.ndarray, groups: np.ndarray) -> float:
    """Obuchowski (1997), eqs. for S10, S01, S11, straight from the kernel psi over every (positive,
    negative) pair, patient by patient: var(A) = S10/M + S01/N + 2 S11/(M N), with her small-sample factors
    I10/(I10-1), I01/(I01-1) and I/(I-1) (I10, I01: patients with a positive / a negative image)."""
    y = y.astype(bool)
    pos, neg = s[y], s[~y]
    gp, gn = groups[y], groups[~y]
    m, n = len(pos), len(neg)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # [M, N]
    a = psi.mean()
    clusters = sorted(set(groups.tolist()))
    big_i = len(clusters)
    s10 = s01 = s11 = 0.0
    for c in clusters:
        xi = sum(psi[j].sum() / n for j in range(m) if gp[j] == c)  # X_i: V10 summed over i's positives
        yi = sum(psi[:, k].sum() / m for k in range(n) if gn[k] == c)  # Y_i
        mi, ni = int((gp == c).sum()), int((gn == c).sum())
        s10 += (xi - mi * a) ** 2
        s01 += (yi - ni * a) ** 2
        s11 += (xi - mi * a) * (yi - ni * a)
    i10, i01 = len(set(gp.tolist())), len(set(gn.tolist()))
    s10 *= i10 / ((i10 - 1) * m)
    s01 *= i01 / ((i01 - 1) * n)
    s11 *= big_i / (big_i - 1)
    return s10 / m + s01 / n + 2 * s11 / (m * n)


def _clustered_data(rng: np.random.Generator, patients: int, k: int) -> tuple:
    """Patients with k images each, all of one label (a sick or a healthy patient); a patient effect shared
    by its images."""
    g = np.repeat(np.arange(patients), k)
    y = np.repeat(rng.integers(0, 2, patients), k)
    u = np.repeat(rng.normal(0, 1, patients), k)
    return g, y, u


def test_clustered_delong_hand_example():
    """Three patients. P1: positives 0.9, 0.4 and a negative 0.3; P2: a positive 0.8; P3: negatives 0.5, 0.1.
    V10 = 1, 2/3, 1 and V01 = 1, 2/3, 1 (A = 8/9); per patient X = 5/3, 1, 0 and Y = 1, 0, 5/3, so
    X - mA = -1/9, 1/9, 0 and Y - nA = 1/9, 0, -1/9. Obuchowski's factors: I10 = 2 (P1, P2 hold positives),
    I01 = 2 (P1, P3), I = 3, so S10 = S01 = 2 (2/81) / 3 = 4/243 and S11 = (3/2)(-1/81) = -1/54:
    var = (4/243)/3 + (4/243)/3 - 2 (1/54)/9 = 5/729 (her published code gives the same).
    Images as independent: s10 = s01 = 1/27, var = 1/81 + 1/81 = 18/729."""
    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.4, 0.3, 0.8, 0.5, 0.1])
    g = np.array(["P1", "P1", "P1", "P2", "P3", "P3"])
    aucs, cov, n_cl = clustered_auc_cov(y, s, g)
    assert aucs[0] == pytest.approx(8 / 9) and n_cl == 3
    assert cov[0, 0] == pytest.approx(5 / 729, rel=1e-12)
    assert clustered_auc_cov(y, s, None)[1][0, 0] == pytest.approx(18 / 729, rel=1e-12)
    assert _obuchowski_loops(y, s, g) == pytest.approx(5 / 729, rel=1e-12)
    # against the second classifier (the scores reversed within P3): the difference's variance
    b = np.array([0.9, 0.4, 0.3, 0.8, 0.1, 0.5])
    res = delong_test(y, s, b, groups=g)
    _, cov2, _ = clustered_auc_cov(y, np.stack([s, b]), g)
    assert res["se"] ** 2 == pytest.approx(cov2[0, 0] + cov2[1, 1] - 2 * cov2[0, 1], abs=1e-15)
    assert res["variance"].startswith("patient-clustered") and res["clusters"] == 3


def test_clustered_delong_matches_obuchowski_written_with_loops():
    rng = np.random.default_rng(4)
    for _ in range(5):
        sizes = rng.integers(1, 5, 25)
        g = np.repeat(np.arange(25), sizes)
        y = rng.integers(0, 2, len(g))
        s = np.round(y * 0.7 + np.repeat(rng.normal(0, 1, 25), sizes) + rng.normal(0, 0.5, len(g)), 1)  # ties
        _, cov, _ = clustered_auc_cov(y, s, g)
        assert cov[0, 0] == pytest.approx(_obuchowski_loops(y, s, g), rel=1e-10)


def test_clustered_delong_with_one_image_per_patient_is_delong():
    """Singleton patients: DeLong's variance exactly (the existing test and the O(mn) reference)."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 90)
    common = rng.normal(size=90)
    a = y + common + rng.normal(0, 0.8, 90)
    b = np.round(y * 0.6 + common + rng.normal(0, 0.8, 90), 1)
    ids = [f"patient-{i}" for i in range(90)]
    plain, clustered = delong_test(y, a, b), delong_test(y, a, b, groups=ids)
    for k in ("difference", "se", "z", "p_value"):
        assert clustered[k] == pytest.approx(plain[k], rel=1e-12)
    assert clustered["z"] == pytest.approx(_delong_quadratic(y, a, b)[0], rel=1e-9)
    assert plain["variance"].startswith("image-level")
    yb = y.astype(bool)
    psi = (a[yb][:, None] > a[~yb][None]) + 0.5 * (a[yb][:, None] == a[~yb][None])
    s10, s01 = psi.mean(1).var(ddof=1), psi.mean(0).var(ddof=1)  # DeLong's S10, S01
    var = clustered_auc_cov(y, a, ids)[1][0, 0]
    assert var == pytest.approx(s10 / yb.sum() + s01 / (~yb).sum(), rel=1e-12) == _obuchowski_loops(y, a, np.arange(90))


def test_duplicated_images_shrink_the_naive_variance_not_the_clustered_one():
    """Every patient's images copied k times: the image-level variance falls about k-fold (a test that
    treats copies as new evidence), the patient-clustered one stays at the one-copy value."""
    rng = np.random.default_rng(6)
    k = 4
    for _ in range(10):
        y = rng.integers(0, 2, 60)
        a = y * 0.8 + rng.normal(size=60)
        b = y * 0.5 + rng.normal(size=60)
        once = delong_test(y, a, b)
        yd, ad, bd = (np.repeat(v, k) for v in (y, a, b))
        naive = delong_test(yd, ad, bd)
        clustered = delong_test(yd, ad, bd, groups=np.repeat(np.arange(60), k))
        assert naive["difference"] == pytest.approx(once["difference"])
        assert naive["se"] ** 2 / once["se"] ** 2 == pytest.approx(1 / k, rel=0.05)
        assert clustered["se"] == pytest.approx(once["se"], rel=1e-9)


def test_clustered_delong_false_positive_rate_is_nominal_where_the_naive_one_is_not():
    """Two equally good classifiers whose disagreement is shared by a patient's images (a patient effect on
    one of them): the clustered test rejects about 5 % of the time, the image-level one far more often."""
    rng = np.random.default_rng(7)
    reps, hits_c, hits_n = 300, 0, 0
    for _ in range(reps):
        g, y, u = _clustered_data(rng, 40, 5)
        v = np.repeat(rng.normal(0, 1, 40), 5)
        a = y + u + v + rng.normal(0, 0.5, len(y))
        b = y + u - v + rng.normal(0, 0.5, len(y))
        hits_c += delong_test(y, a, b, groups=g)["p_value"] < 0.05
        hits_n += delong_test(y, a, b)["p_value"] < 0.05
    assert 0.02 <= hits_c / reps <= 0.09
    assert hits_n / reps > 0.15


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
    assert v["word"] == "no difference that matters" and "±0.02" in v["text"]
    v = verdict([-0.1, 0.08], 0.02)
    assert v["word"] == "underpowered" and "±0.02" in v["text"]
    assert verdict([float("nan"), float("nan")], 0.02)["word"] == "underpowered"


def test_a_ci_that_excludes_0_inside_the_margin_is_no_difference_that_matters():
    """The margin is the smallest difference that matters: a CI [+0.004, +0.015] is a real but negligible
    difference (it was "better" before), on either side of 0."""
    for ci in ([0.004, 0.015], [-0.015, -0.004]):
        assert verdict(ci, 0.02)["word"] == "no difference that matters"
    assert verdict([0.004, 0.025], 0.02)["word"] == "better"  # reaches beyond X: it may matter


def test_margin_relative_to_headroom():
    from cxraug.classify.stats import margin_value, parse_margin

    assert parse_margin(0.02) == ("absolute", 0.02) and parse_margin("0.05") == ("absolute", 0.05)
    assert parse_margin("10%-of-headroom") == ("headroom", 0.1)
    assert margin_value("10%-of-headroom", 0.95) == pytest.approx(0.005)  # 10 % of the 0.05 left to a perfect AUC
    assert margin_value("25%-of-headroom", 0.6) == pytest.approx(0.1)
    assert np.isnan(margin_value("10%-of-headroom", float("nan")))
    for bad in ("10%", "-5%-of-headroom", "150%-of-headroom", 0, 1.5, float("inf"), True, "x"):
        with pytest.raises(CXRAugError, match="margin"):
            parse_margin(bad)


def test_holm_adjustment_matches_the_definition_worked_by_hand():
    """Holm's step-down adjustment against values computed by hand from the definition (p sorted: 0.01, 0.02,
    0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06 (monotone), 0.06 (monotone)); NaN stays out of m."""
    from cxraug.classify.stats import holm_adjust

    adj = holm_adjust([0.03, 0.01, 0.04, 0.02])
    np.testing.assert_allclose(adj, [0.06, 0.04, 0.06, 0.06])
    adj = holm_adjust([0.5, float("nan"), 0.01])
    assert adj[2] == pytest.approx(0.02) and adj[0] == pytest.approx(0.5) and np.isnan(adj[1])
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]  # 2 x 0.8 capped at 1; monotone after it
    assert holm_adjust([]) == []


def test_midranks_match_scipy_rankdata_ties_nan_and_empty():
    rng = np.random.default_rng(5)
    cases = [np.round(rng.normal(size=n), d) for n in (1, 2, 7, 300) for d in (0, 1, 6)]  # many ties at d=0
    cases += [np.zeros(5), np.array([3.0, 1.0, 3.0, np.nan]), np.array([]), np.array([-np.inf, 0.0, np.inf, 0.0])]
    for x in cases:
        np.testing.assert_array_equal(_midrank(x), stats.rankdata(x), err_msg=str(x))
