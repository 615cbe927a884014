"""Distribution metrics on feature vectors: FID, KID, precision/recall, density/coverage.

All computed in float64. The Fréchet distance uses a symmetric, PSD-safe square root:
``tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))``, which never produces the complex or NaN
values that ``scipy.linalg.sqrtm`` can on near-singular covariances (few samples, many dims).

FID is biased upwards at small n (Chong & Forsyth, "Effectively Unbiased FID and Inception Score
and where to find them", CVPR 2020): alongside FID at n we report a bootstrap CI and their
extrapolated FID-infinity (FID at several n, a linear fit in 1/n, the intercept).
"""

from __future__ import annotations

from collections.abc import Sequence

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
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    s1 = np.atleast_2d(np.asarray(s1, np.float64))
    return _RealStats(mu1, s1).fid_to(mu2, s2)


class _RealStats:
    """The reference side of FID with its covariance square root computed once (for many fake sets)."""

    def __init__(self, mu: np.ndarray, s: np.ndarray):
        self.mu, self.s, self.r = mu, s, _psd_sqrt(s)

    def fid_to(self, mu2: np.ndarray, s2: np.ndarray) -> float:
        mu2, s2 = np.atleast_1d(np.asarray(mu2, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
        eig = np.linalg.eigvalsh(self.r @ s2 @ self.r)
        tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
        diff = self.mu - mu2
        return float(max(diff @ diff + np.trace(self.s) + np.trace(s2) - 2 * tr_covmean, 0.0))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*mean_cov(real), *mean_cov(fake))


def fid_bootstrap(
    real: np.ndarray, fake: np.ndarray, *, reps: int = 50, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Bootstrap CI of FID, both sets resampled with replacement (same sizes). Resampling repeats
    images, which biases a bootstrap FID upwards (often by more than the CI's half-width at a few
    hundred images), so the percentile interval is re-centred: shifted by (FID - bootstrap median)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    rng = np.random.default_rng(seed)
    vals = [
        fid_from_features(real[rng.integers(0, len(real), len(real))], fake[rng.integers(0, len(fake), len(fake))])
        for _ in range(reps)
    ]
    a = (1 - level) / 2
    shift = fid_from_features(real, fake) - float(np.median(vals))
    return max(float(np.quantile(vals, a)) + shift, 0.0), float(np.quantile(vals, 1 - a)) + shift


def fid_infinity(
    real: np.ndarray, fake: np.ndarray, *, points: int = 8, reps: int = 3, min_n: int | None = None, seed: int = 0
) -> dict:
    """Chong & Forsyth's FID-infinity: FID of ``reps`` random fake subsets at each of ``points`` sizes
    n_i (evenly spaced from ``min_n`` to n, against the whole real set), a least-squares line
    FID = a + b / n, and its intercept ``a`` (the FID of infinitely many fake samples)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    n = len(fake)
    min_n = min_n or max(n // 4, 2)
    if n < 8 or min_n >= n:
        return {"fid_inf": None, "slope": None, "ns": [], "fids": []}
    ref = _RealStats(*mean_cov(real))
    rng = np.random.default_rng(seed)
    ns = np.unique(np.linspace(min_n, n, points).round().astype(int))
    fids = []
    for m in ns:
        r = 1 if m == n else reps  # at n itself every subset is the whole set
        fids.append(np.mean([ref.fid_to(*mean_cov(fake[rng.choice(n, m, replace=False)])) for _ in range(r)]))
    b, a = np.polyfit(1.0 / ns, np.asarray(fids), 1)  # FID(n) = a + b / n
    return {"fid_inf": float(a), "slope": float(b), "ns": ns.tolist(), "fids": [float(x) for x in fids]}


def kid_subset_size(n_real: int, n_fake: int, subset_size: int = 1000) -> int:
    """KID's subset size adapted to n: at most ``subset_size`` and at most half the smaller set
    (so that random subsets differ and the spread across them means something); at least 2."""
    return max(2, min(subset_size, min(n_real, n_fake) // 2))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate with the cubic polynomial kernel k(a,b) = (a.b/d + 1)^3 (equal sizes)."""
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off - 2 * kxy.sum() / (m * m))


def kid(
    real: np.ndarray, fake: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
    kernel, averaged over ``subsets`` random subset pairs of size ``kid_subset_size(...)``.
    Subsets are drawn as torch-fidelity draws them (legacy RandomState(seed), real then fake), so the
    two agree on the same features. Returns (mean, std)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    m = kid_subset_size(len(real), len(fake), subset_size)
    rng = np.random.RandomState(seed)
    vals = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        vals.append(mmd2_unbiased(x, y))
    return float(np.mean(vals)), float(np.std(vals))


def _kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def prdc(
    real: np.ndarray, fake: np.ndarray, *, k: int = 5, parts: Sequence[int] | None = None
) -> dict[str, float]:
    """Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) from
    k-NN balls around real and fake features.

    ``parts``: where the feature vector splits into groups measured on different scales (column boundaries,
    e.g. ``[32]`` for columns 0-31 and 32-end). Each group then gets its own k-NN balls, and a sample counts
    only if it counts in every group: a fake is precise if it lies in some real ball of each group, a real
    image is recalled (covered) if it is so in each group; density is the lowest group's. In the CXR feature
    space (content ; detail), a GAN's early texture noise lies among the real images' content balls but far
    outside their detail balls; one ball over both groups let it count as realistic (precision 1.0). With
    ``parts=None`` (one group) this is the published estimator."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    k = max(1, min(k, len(r) - 1, len(f) - 1))
    edges = [0, *(parts or []), r.shape[1]]
    precise = torch.ones(len(f), dtype=torch.bool)
    recalled = torch.ones(len(r), dtype=torch.bool)
    covered = torch.ones(len(r), dtype=torch.bool)
    density = float("inf")
    for a, b in zip(edges[:-1], edges[1:]):
        rp, fp = r[:, a:b], f[:, a:b]
        d_rf = torch.cdist(rp, fp)  # [R, F]
        in_real = d_rf <= _kth_nn_radius(rp, k)[:, None]  # fake f inside real r's ball
        precise &= in_real.any(0)
        recalled &= (d_rf <= _kth_nn_radius(fp, k)[None, :]).any(1)
        covered &= in_real.any(1)  # r's nearest fake inside r's ball
        density = min(density, float(in_real.double().sum(0).mean() / k))
    return {
        "precision": float(precise.double().mean()),
        "recall": float(recalled.double().mean()),
        "density": density,
        "coverage": float(covered.double().mean()),
    }


def all_metrics(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    k: int = 5,
    kid_subsets: int = 50,
    seed: int = 0,
    fid_reps: int = 50,
    parts: Sequence[int] | None = None,
) -> dict:
    """FID (+ bootstrap CI + FID-infinity), KID (mean, std, subset size), PRDC (per feature group: ``prdc``'s
    ``parts``), with the n they used."""
    kid_mean, kid_std = kid(real, fake, subsets=kid_subsets, subset_size=1000, seed=seed)
    lo, hi = fid_bootstrap(real, fake, reps=fid_reps, seed=seed)
    inf = fid_infinity(real, fake, seed=seed)
    return {
        "fid": fid_from_features(real, fake),
        "fid_ci95": [lo, hi],
        "fid_inf": inf["fid_inf"],
        "fid_inf_fit": {"ns": inf["ns"], "fids": inf["fids"], "slope": inf["slope"]},
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": kid_subset_size(len(real), len(fake)),
        "kid_subsets": kid_subsets,
        "k": k,
        **prdc(real, fake, k=k, parts=parts),
    }
