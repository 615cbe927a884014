"""Memorization / privacy audit: is any synthetic image a near-copy of a real training image?

For every generated image: its nearest real training image in feature space and in pixel space.
The feature distance is judged against how close real images are to *each other* (median
real-to-real nearest-neighbour distance), the pixel distance as RMSE in [0, 1] intensity units, and
(since a copy shifted by a few pixels, flipped or with its contrast changed passes both) the
maximum normalized cross-correlation over shifts and flips (``copying.copy_flags``).
Synthetic data is only "anonymous" (Zunair & Hamza's claim) if nothing is flagged here.
"""

from __future__ import annotations

import numpy as np
import torch


def _nn(a: np.ndarray, b: np.ndarray, exclude_self: bool = False, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a: (distance, index) of its nearest row in b (Euclidean)."""
    A, B = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    dist, idx = [], []
    for i in range(0, len(A), chunk):
        d = torch.cdist(A[i : i + chunk], B)
        if exclude_self:
            d[torch.arange(d.size(0)), torch.arange(i, i + d.size(0))] = float("inf")
        v, j = d.min(1)
        dist.append(v)
        idx.append(j)
    return torch.cat(dist).numpy().astype(np.float64), torch.cat(idx).numpy()


def memorization_audit(
    real_u8: np.ndarray,
    fake_u8: np.ndarray,
    real_feat: np.ndarray,
    fake_feat: np.ndarray,
    *,
    pixel_threshold: float = 0.04,
    feature_ratio: float = 0.25,
    ncc_threshold: float = 0.95,
) -> dict:
    """Returns the distance distributions, the flagged near-copies and the closest pairs."""
    r = np.asarray(real_u8, np.float32).reshape(len(real_u8), -1) / 255.0
    f = np.asarray(fake_u8, np.float32).reshape(len(fake_u8), -1) / 255.0
    pix_d, pix_i = _nn(f, r)
    pix_rmse = pix_d / np.sqrt(r.shape[1])
    feat_d, feat_i = _nn(fake_feat, real_feat)
    rr_d, _ = _nn(real_feat, real_feat, exclude_self=True)
    ref = float(np.median(rr_d)) if len(rr_d) else 1.0
    ratio = feat_d / max(ref, 1e-12)
    from cxraug.metrics.copying import max_ncc

    ncc, ncc_i = max_ncc(fake_u8, real_u8)
    flagged = np.nonzero((pix_rmse < pixel_threshold) | (ratio < feature_ratio) | (ncc >= ncc_threshold))[0]
    order = np.argsort(pix_rmse)

    def pct(a: np.ndarray) -> dict:
        return {f"p{q}": float(np.percentile(a, q)) for q in (0, 5, 25, 50, 75, 95)} if len(a) else {}

    return {
        "n_fake": len(f),
        "n_real": len(r),
        "pixel_rmse": pct(pix_rmse),
        "feature_distance": pct(feat_d),
        "feature_ratio_to_real_nn": pct(ratio),
        "real_to_real_nn_median": ref,
        "max_ncc": pct(ncc),
        "thresholds": {"pixel_rmse": pixel_threshold, "feature_ratio": feature_ratio, "ncc": ncc_threshold},
        "n_flagged": len(flagged),
        "flagged": [
            {
                "fake": int(k),
                "real_pixel_nn": int(pix_i[k]),
                "pixel_rmse": float(pix_rmse[k]),
                "real_feature_nn": int(feat_i[k]),
                "feature_ratio": float(ratio[k]),
                "real_ncc_nn": int(ncc_i[k]),
                "ncc": float(ncc[k]),
            }
            for k in flagged
        ],
        "closest_pairs": [(int(k), int(pix_i[k]), float(pix_rmse[k])) for k in order[:16]],
    }


def closest_pairs_grid(
    real_u8: np.ndarray,
    fake_u8: np.ndarray,
    audit: dict,
    dest,
    *,
    heldout_u8: np.ndarray | None = None,
    real_indices: list[int] | None = None,
) -> None:
    """Top row: the generated images closest to a real one; below: that real image. With ``heldout_u8`` and the
    audit's ``nearest_anywhere``, two more rows: the generated images nearest (copy space) to any real image
    given, and that image, from the training or the held-out set. ``real_indices``: the rows of ``real_u8`` the
    audit compared (``evaluate_images``' ``real_indices`` when it drew n of them; None: all)."""
    from cxraug.plotting import save_grid

    if real_indices is not None:
        real_u8 = real_u8[real_indices]

    pairs = audit["closest_pairs"][:8]
    if not pairs:
        return
    rows = [np.stack([fake_u8[k] for k, _, _ in pairs]), np.stack([real_u8[j] for _, j, _ in pairs])]
    near = (audit.get("nearest_anywhere") or {}).get("closest", [])[: len(pairs)]
    if heldout_u8 is not None and len(near) == len(pairs):
        pool = {"training": real_u8, "held-out": heldout_u8}
        rows += [np.stack([fake_u8[c["fake"]] for c in near]), np.stack([pool[c["set"]][c["index"]] for c in near])]
    save_grid(np.concatenate(rows), dest, nrow=len(pairs))
