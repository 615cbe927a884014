"""Data-copying tests (issue 13): Meehan et al.'s three-sample test and shift/flip/contrast-invariant copy flags."""

from __future__ import annotations

import numpy as np
import pytest

from cxraug.metrics.copying import copy_flags, mann_whitney_z, three_sample_test


def test_mann_whitney_z_matches_scipy_u_statistic_with_ties():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    q, p = rng.integers(0, 6, 40).astype(float), rng.integers(1, 7, 55).astype(float)  # many ties
    u = mannwhitneyu(q, p, alternative="two-sided", method="asymptotic").statistic  # U of q: #(q > p) + ties / 2
    m, n = len(q), len(p)
    assert mann_whitney_z(q, p) == pytest.approx((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12), rel=1e-12)


def _mixture(rng, n, d=6):
    centres = np.eye(d)[:3] * 6.0  # three well-separated clusters
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))


def test_three_sample_test_on_copies_and_on_independent_samples():
    rng = np.random.default_rng(1)
    train, held = _mixture(rng, 300), _mixture(rng, 120)
    copies = train[rng.choice(300, 120, replace=False)] + 0.05 * rng.normal(size=(120, 6))
    r = three_sample_test(train, held, copies, cells=3)
    assert r["z_u"] < -8 and r["p_copying"] < 1e-10
    assert r["c_t"] < -4 and r["c_t_p_copying"] < 1e-6 and r["cells_used"] == 3
    # independent samples from the same distribution: Z_U ~ N(0, 1) (the null the test is built on)
    zs = [three_sample_test(train, _mixture(rng, 120), _mixture(rng, 120), cells=3)["z_u"] for _ in range(30)]
    assert abs(np.mean(zs)) < 0.6 and 0.6 < np.std(zs) < 1.5 and max(abs(z) for z in zs) < 3.5


def test_cells_catch_copying_that_the_global_statistic_averages_away():
    """Meehan et al.'s motivation for cells: copying in one region, under-fitting (samples far from
    the training data) elsewhere. The copied cell's Z_U is strongly negative."""
    rng = np.random.default_rng(2)
    d, centres = 6, np.eye(6)[:2] * 10.0
    train = np.concatenate([centres[0] + rng.normal(size=(200, d)), centres[1] + rng.normal(size=(200, d))])
    held = np.concatenate([centres[0] + rng.normal(size=(60, d)), centres[1] + rng.normal(size=(60, d))])
    copied = train[:200][rng.choice(200, 60, replace=False)] + 0.02 * rng.normal(size=(60, d))
    spread = centres[1] + 1.6 * rng.normal(size=(60, d))  # over-dispersed: farther from T than real data
    r = three_sample_test(train, held, np.concatenate([copied, spread]), cells=2)
    per = sorted(c["z_u"] for c in r["per_cell"])
    assert per[0] < -5 and per[1] > 3  # one cell copies, the other under-fits
    assert r["c_t"] == pytest.approx(np.mean(per), abs=0.3)  # equal held-out weights


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift by (dy, dx) pixels, the uncovered border filled with the edge row/column."""
    out = np.roll(a, (dy, dx), (0, 1))
    if dy > 0:
        out[:dy] = out[dy]
    elif dy < 0:
        out[dy:] = out[dy - 1]
    if dx > 0:
        out[:, :dx] = out[:, dx : dx + 1]
    elif dx < 0:
        out[:, dx:] = out[:, dx - 1 : dx]
    return out


def test_copy_flags_catch_shifted_flipped_and_contrast_changed_copies():
    from cxraug.data.phantom import phantom
    from cxraug.data.preprocess import Preprocess

    pp = Preprocess(64)
    imgs = np.stack([pp(phantom(c, 64, s)) for s in range(18) for c in ("normal", "covid")])
    train, held = imgs[:24], imgs[24:]  # held-out "real" images: new, never flagged
    stretched = np.clip((train[3].astype(float) - 40) * 1.6, 0, 255).astype(np.uint8)
    copies = np.stack([
        train[0],  # exact
        _shift(train[1], 4, -4),  # 4-px shift
        train[2][:, ::-1],  # horizontal flip
        stretched,  # contrast stretch
        _shift(train[4][:, ::-1], -3, 5),  # flipped and shifted
    ])  # fmt: skip
    gen = np.concatenate([held[:6], copies, held[6:]])
    r = copy_flags(gen, train)
    got = {f["fake"]: f["real"] for f in r["flagged"]}
    assert got == {6 + i: i for i in range(5)}, r["flagged"]
    # the old audit's pixel-RMSE rule (< 0.04) misses every copy but the exact one
    rmse = [np.sqrt(((c / 255.0 - train[i] / 255.0) ** 2).mean()) for i, c in enumerate(copies)]
    assert sum(x < 0.04 for x in rmse) == 1
