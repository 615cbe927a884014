"""Quality metrics: FID / KID / precision-recall / density-coverage, memorization audit."""

from __future__ import annotations

import numpy as np

from cxraug.metrics.features import cached_features, extract, get_extractor
from cxraug.metrics.fid import all_metrics, fid_from_features, frechet_distance, kid, prdc
from cxraug.metrics.memorization import memorization_audit

__all__ = [
    "all_metrics",
    "evaluate_images",
    "fid_from_features",
    "frechet_distance",
    "kid",
    "memorization_audit",
    "prdc",
]


def evaluate_images(
    real_u8: np.ndarray,
    fake_u8: np.ndarray,
    features: str = "auto",
    n: int = 5000,
    k: int = 5,
    seed: int = 0,
    progress: bool = True,
    audit: bool = True,
    device: str = "cpu",
) -> dict:
    """All metrics for uint8 image sets [N,S,S]; the extractor and counts are always reported."""
    rng = np.random.default_rng(seed)
    if len(real_u8) > n:
        real_u8 = np.asarray(real_u8)[np.sort(rng.choice(len(real_u8), n, replace=False))]
    fake_u8 = np.asarray(fake_u8[:n])
    ext = get_extractor(features, real_images=np.asarray(real_u8), progress=progress, device=device)
    fr = cached_features(ext, np.asarray(real_u8), progress)
    ff = extract(ext, fake_u8, progress=progress)
    res = {"features": ext.name, "n_real": len(fr), "n_fake": len(ff), "feature_dim": int(fr.shape[1])}
    res.update(all_metrics(fr, ff, k=k, seed=seed))
    if audit:
        res["memorization"] = memorization_audit(np.asarray(real_u8), fake_u8, fr, ff)
    return res
