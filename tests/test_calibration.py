"""Calibration metrics against hand-worked examples and second libraries: scikit-learn's ``brier_score_loss`` and
``roc_curve``, torchmetrics' ``binary_calibration_error``; and the reliability plot writes a PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, roc_curve
from torchmetrics.functional.classification import binary_calibration_error

from cxraug.classify.calibration import (
    brier_score,
    expected_calibration_error,
    reliability_curve,
    sensitivity_at_specificity,
)
from cxraug.errors import CXRAugError
from cxraug.report.plots import plot_reliability

NAN = float("nan")


# ------------------------------------------------------------------------------------------ Brier
def test_brier_by_hand_and_against_sklearn():
    # (0.1² + 0.2² + 0.4² + 0.5²) / 4 = 0.46 / 4
    assert brier_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]) == pytest.approx(0.115, abs=1e-15)
    assert brier_score([1, 0], [0.5, 0.5]) == pytest.approx(0.25)  # a constant 0.5
    rng = np.random.default_rng(0)
    for n in (1, 7, 200):
        p = rng.random(n)
        for y in (rng.integers(0, 2, n), np.zeros(n, int), np.ones(n, int)):  # one class: still defined
            assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p, pos_label=1), abs=1e-12)
    p32 = torch.sigmoid(torch.randn(50, generator=torch.Generator().manual_seed(0))).numpy()  # float32, as saved
    y = rng.integers(0, 2, 50)
    assert brier_score(y, p32) == pytest.approx(brier_score_loss(y, p32.astype(np.float64)), abs=1e-12)


def test_nan_safety_and_errors():
    for f in (brier_score, expected_calibration_error):
        assert np.isnan(f([], []))
        assert np.isnan(f([1, 0], [0.3, NAN]))  # a diverged classifier: no number, no crash
        with pytest.raises(CXRAugError, match="logit"):
            f([1, 0], [2.5, -1.0])
        with pytest.raises(CXRAugError, match="one per image"):
            f([1, 0, 1], [0.2, 0.4])
        with pytest.raises(CXRAugError, match="binary"):
            f([2, 0], [0.2, 0.4])
    with pytest.raises(CXRAugError, match="n_bins"):
        expected_calibration_error([1, 0], [0.2, 0.4], n_bins=0)
    assert expected_calibration_error([0, 0, 0], [0.1, 0.1, 0.4]) == pytest.approx(0.2)  # one class: defined
    curve = reliability_curve([], [], n_bins=4)
    assert curve["count"] == [0, 0, 0, 0] and len(curve["edges"]) == 5 and all(np.isnan(curve["confidence"]))


# -------------------------------------------------------------------------------------------- ECE
def test_ece_by_hand_with_a_probability_on_an_edge():
    """Two bins, [0, 0.5) and [0.5, 1]. Outcomes 1, 1, 0 at 0.5, 0.2, 0.9. The 0.5 on the edge belongs to the upper
    bin: lower {0.2 (1)}: |1 - 0.2| = 0.8, weight 1/3; upper {0.5 (1), 0.9 (0)}: |1/2 - 0.7| = 0.2, weight 2/3;
    ECE = 0.8/3 + 0.4/3 = 0.4. (Had 0.5 gone down, it would be |1 - 0.35| 2/3 + 0.9/3 = 2.2/3.)"""
    y, p = [1, 1, 0], [0.5, 0.2, 0.9]
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.4, abs=1e-15)
    tm = binary_calibration_error(torch.tensor(p, dtype=torch.float64), torch.tensor(y), n_bins=2, norm="l1")
    assert float(tm) == pytest.approx(0.4, abs=1e-15)  # torchmetrics' convention, the same
    # p = 1 lies in the last bin [0.5, 1]: {1.0 (0), 0.6 (1)} -> |1/2 - 0.8| = 0.3 (torchmetrics gives p = 1 a bin
    # of its own and reports (1 + 0.4) / 2 = 0.7 here; see the module's note)
    assert expected_calibration_error([0, 1], [1.0, 0.6], n_bins=2) == pytest.approx(0.3, abs=1e-15)
    assert expected_calibration_error([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0]) == 0.0  # perfectly sure and right


def _torchmetrics_ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    t = torch.from_numpy(np.ascontiguousarray(p))
    return float(binary_calibration_error(t, torch.from_numpy(np.asarray(y)), n_bins=n_bins, norm="l1"))


@pytest.mark.parametrize("n_bins", [1, 2, 4, 5, 8, 10, 15, 20])
def test_ece_matches_torchmetrics_including_probabilities_on_edges(n_bins):
    """Random probabilities (uniform, and piled near 0 and 1 as a confident network's are), plus probabilities
    exactly on every inner edge where torchmetrics' float64 ``linspace`` edge equals k/n (they differ by one
    rounding step at some k; see the module's note), plus float32 sigmoid outputs; never exactly 1."""
    rng = np.random.default_rng(n_bins)
    torch_edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64).numpy()
    ours = np.arange(n_bins + 1) / n_bins
    on_edge = ours[1:-1][torch_edges[1:-1] == ours[1:-1]]
    for _ in range(20):
        p = np.concatenate([rng.random(60), rng.beta(0.3, 0.3, 60) * (1 - 1e-9), np.repeat(on_edge, 3), [0.0]])
        y = (rng.random(len(p)) < np.clip(p + rng.normal(0, 0.2, len(p)), 0, 1)).astype(int)
        assert expected_calibration_error(y, p, n_bins) == pytest.approx(_torchmetrics_ece(y, p, n_bins), abs=1e-12)
    p32 = torch.sigmoid(torch.randn(300, generator=torch.Generator().manual_seed(n_bins)) * 2).numpy()
    p32 = p32[p32 < 1]
    y = rng.integers(0, 2, len(p32))
    assert expected_calibration_error(y, p32, n_bins) == pytest.approx(_torchmetrics_ece(y, p32, n_bins), abs=1e-6)


# ------------------------------------------------------------------------------------ reliability
def test_reliability_curve_by_hand():
    """Four bins of width 0.25: {0.1 (0), 0.2 (0)}, nothing in [0.25, 0.5), {0.5 (1), 0.6 (0)}, {0.9 (1), 1.0 (1)}."""
    y, p = [0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.5, 0.6, 0.9, 1.0]
    c = reliability_curve(y, p, n_bins=4)
    assert c["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert c["count"] == [2, 0, 2, 2]
    assert c["confidence"][0] == pytest.approx(0.15) and c["accuracy"][0] == 0.0
    assert np.isnan(c["confidence"][1]) and np.isnan(c["accuracy"][1])  # empty: kept, not measured
    assert c["confidence"][2] == pytest.approx(0.55) and c["accuracy"][2] == 0.5
    assert c["confidence"][3] == pytest.approx(0.95) and c["accuracy"][3] == 1.0
    # ECE from the curve: (2 * 0.15 + 2 * 0.05 + 2 * 0.05) / 6
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(0.5 / 6, abs=1e-15)
    back = json.loads(json.dumps(c))  # plain lists (NaN as JSON's NaN, as the study's results.json writes it)
    assert back["count"] == c["count"] and all(isinstance(v, float) for v in back["confidence"])


# -------------------------------------------------------------------------- sensitivity at specificity
def test_sensitivity_at_specificity_by_hand():
    # five negatives, three positives (tests/test_stats.py's example): from the top, 0.9 (TP 1), 0.8 (TP 2),
    # 0.75 (FP 1), 0.6 (TP 3), 0.4 (FP 2) ...
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.75, 0.6, 0.8, 0.9])
    assert sensitivity_at_specificity(y, s, 0.9) == pytest.approx(2 / 3)  # no false positive allowed
    assert sensitivity_at_specificity(y, s, 0.8) == pytest.approx(1.0)  # one allowed (4/5 = 0.8 exactly)
    assert sensitivity_at_specificity(y, s, 1.0) == pytest.approx(2 / 3)
    assert sensitivity_at_specificity(y, s, 0.0) == 1.0
    # a tie across the classes is one ROC point: at specificity 1 the tied positive cannot be taken alone
    assert sensitivity_at_specificity([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1], 1.0) == 0.5
    assert sensitivity_at_specificity([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1], 0.5) == 1.0
    # 9 of 10 negatives is specificity 0.9, although FPR 1/10 <= 1 - 0.9 is false in floats
    assert not 1 / 10 <= 1 - 0.9
    y10 = np.r_[np.ones(2), np.zeros(10)]
    s10 = np.r_[0.95, 0.85, 0.9, np.arange(9) / 10]  # one negative (0.9) between the two positives
    assert sensitivity_at_specificity(y10, s10, 0.9) == 1.0
    assert sensitivity_at_specificity(y10, s10, 0.91) == 0.5
    # NaN when it cannot be measured; errors a user can make
    assert np.isnan(sensitivity_at_specificity([1, 1], [0.2, 0.3])) and np.isnan(sensitivity_at_specificity([], []))
    assert np.isnan(sensitivity_at_specificity([1, 0], [0.2, NAN]))
    with pytest.raises(CXRAugError, match="specificity"):
        sensitivity_at_specificity([1, 0], [0.2, 0.3], 1.5)


def test_sensitivity_at_specificity_matches_sklearn_roc_curve_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 120))
        y = rng.integers(0, 2, n)
        y[:2] = [1, 0]
        s = np.round(y * rng.uniform(0, 2) + rng.normal(0, 1, n), int(rng.integers(0, 3)))  # 0-2 decimals: ties
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for spec in (0.0, 0.5, 0.8, 0.9, 0.95, 1.0, float(rng.random())):
            ref = tpr[1 - fpr >= spec - 1e-12].max()
            assert sensitivity_at_specificity(y, s, spec) == pytest.approx(ref, abs=1e-15)


# ------------------------------------------------------------------------------------------ plot
def test_plot_reliability_writes_a_png(tmp_path):
    rng = np.random.default_rng(4)
    p = rng.random(300)
    y = (rng.random(300) < p**1.5).astype(int)
    curves = {
        "real only": reliability_curve(y, p),
        "real + synthetic": reliability_curve(y, np.sqrt(p), n_bins=5),
        "no test images": reliability_curve([], []),  # all bins empty: drawn as nothing, not an error
    }
    out = plot_reliability(curves, tmp_path / "reliability.png")
    data = out.read_bytes()
    assert out == tmp_path / "reliability.png" and len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
