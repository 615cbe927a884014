"""Distribution metrics on feature vectors: FID, KID, precision/recall, density/coverage.

All computed in float64. The Fréchet distance uses a symmetric, PSD-safe square root:
``tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))``, which never produces the complex or NaN
values that ``scipy.linalg.sqrtm`` can on near-singular covariances (few samples, many dims).
"""

from __future__ import annotations

import numpy as np
import torch


def mean_cov(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    r1 = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*mean_cov(real), *mean_cov(fake))


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al.): unbiased MMD^2 with the cubic polynomial kernel
    k(x,y) = (x.y/d + 1)^3, averaged over random subsets. Returns (mean, std)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = min(subset_size, len(real), len(fake))
    if m == min(len(real), len(fake)):  # small sets: half-size subsets, so that they differ
        m = max(2, m // 2)
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals.append(mmd - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def _kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) from
    k-NN balls around real and fake features."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    k = max(1, min(k, len(r) - 1, len(f) - 1))
    rr, fr = _kth_nn_radius(r, k), _kth_nn_radius(f, k)
    d_rf = torch.cdist(r, f)  # [R, F]
    in_real = d_rf <= rr[:, None]
    precision = in_real.any(0).double().mean()
    recall = (d_rf <= fr[None, :]).any(1).double().mean()
    density = in_real.double().sum(0).mean() / k
    coverage = (d_rf.min(1).values <= rr).double().mean()
    return {
        "precision": float(precision),
        "recall": float(recall),
        "density": float(density),
        "coverage": float(coverage),
    }


def all_metrics(real: np.ndarray, fake: np.ndarray, k: int = 5, kid_subsets: int = 50, seed: int = 0) -> dict:
    kid_mean, kid_std = kid(real, fake, kid_subsets, 1000, seed)
    return {"fid": fid_from_features(real, fake), "kid_mean": kid_mean, "kid_std": kid_std, **prdc(real, fake, k)}
