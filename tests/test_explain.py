"""The report's UMAP: the neighbour graph it is fitted on, checked against a brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from cxraug.classify.explain import umap_reducer


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian clusters [90, 32], and 10 of their points again (duplicated images give equal features)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32)) * 4
    x = np.concatenate([c + rng.normal(size=(30, 32)) for c in centres]).astype(np.float32)  # [90, 32]
    y = np.repeat(np.arange(3), 30)
    twins = np.arange(0, 90, 9)
    return np.concatenate([x, x[twins]]), np.concatenate([y, y[twins]])  # [100, 32]


def test_umap_is_fitted_on_the_exact_neighbour_graph_and_keeps_clusters_apart():
    x, y = _clusters()
    k = 10
    r = umap_reducer(x, seed=0, n_neighbors=k)
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))  # [100, 100] brute force
    np.fill_diagonal(d, np.inf)
    nearest = np.sort(d, axis=1)[:, : k - 1]  # the k-1 nearest other points (a duplicate at distance 0 first)
    # UMAP's rho is the distance to the nearest point at a distance > 0 (local connectivity 1); a distance of ~1e-7
    # from the dot-product formula, for the point itself or its duplicate, used to stand in for it
    rho = np.array([row[row > 0][0] for row in nearest])
    np.testing.assert_allclose(r._rhos, rho, rtol=1e-5)
    assert (nearest[:, 0] == 0).sum() == 20  # the 10 duplicated points and their twins
    # sigma solves sum_j exp(-max(d_ij - rho_i, 0) / sigma_i) = log2(k) over the point's k-1 nearest others
    # (McInnes et al. 2018, eq. 3, with umap-learn's k counting the point itself); umap-learn bisects to 1e-5
    lhs = np.exp(-np.maximum(nearest - rho[:, None], 0) / r._sigmas[:, None]).sum(1)
    np.testing.assert_allclose(lhs, np.log2(k), rtol=1e-4)
    e = r.embedding_
    assert trustworthiness(x, e, n_neighbors=5) > 0.9  # scikit-learn's independent measure of kept neighbourhoods
    centroids = np.stack([e[y == c].mean(0) for c in range(3)])
    nearest_centroid = np.argmin(((e[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest_centroid == y).mean() > 0.95


def test_umap_refuses_fewer_than_three_points_or_neighbours():
    with pytest.raises(ValueError, match="at least 3 points"):
        umap_reducer(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="n_neighbors >= 2"):
        umap_reducer(np.zeros((20, 4), np.float32), n_neighbors=1)
