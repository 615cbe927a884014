"""The report's UMAP: the neighbour graph it is fitted on, checked against a brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from cxraug.classify.explain import umap_reducer


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32)) * 4
    x = np.concatenate([c + rng.normal(size=(30, 32)) for c in centres]).astype(np.float32)  # [90, 32]
    return x, np.repeat(np.arange(3), 30)


def test_umap_is_fitted_on_the_exact_neighbour_graph_and_keeps_clusters_apart():
    x, y = _clusters()
    k = 10
    r = umap_reducer(x, seed=0, n_neighbors=k)
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))  # [90, 90] brute force
    np.fill_diagonal(d, np.inf)
    nearest = np.sort(d, axis=1)[:, : k - 1]  # the k-1 nearest other points
    # UMAP's rho is the distance to the nearest other point (local connectivity 1); a self-distance of 1e-7
    # from the dot-product formula used to stand in for it
    np.testing.assert_allclose(r._rhos, nearest[:, 0], rtol=1e-5)
    # sigma solves sum_j exp(-(d_ij - rho_i) / sigma_i) = log2(k) over the point's k-1 nearest others (McInnes
    # et al. 2018, eq. 3, with umap-learn's k counting the point itself); umap-learn bisects to 1e-5
    lhs = np.exp(-(nearest - nearest[:, :1]) / r._sigmas[:, None]).sum(1)
    np.testing.assert_allclose(lhs, np.log2(k), rtol=1e-4)
    e = r.embedding_
    assert trustworthiness(x, e, n_neighbors=5) > 0.9  # scikit-learn's independent measure of kept neighbourhoods
    centroids = np.stack([e[y == c].mean(0) for c in range(3)])
    nearest_centroid = np.argmin(((e[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest_centroid == y).mean() > 0.95


def test_umap_refuses_fewer_than_three_points():
    with pytest.raises(ValueError, match="at least 3"):
        umap_reducer(np.zeros((2, 4), np.float32))
