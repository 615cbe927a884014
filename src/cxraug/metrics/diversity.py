"""Within-set diversity: mean MS-SSIM over random pairs of images of one set (a mode-collapse signal,
as in MONAI Generative's practice, after Odena et al. 2017). Lower is more diverse; compare the
synthetic set's value with the real set's (a generator that collapses scores well above it).

MS-SSIM (Wang, Simoncelli & Bovik 2003) needs the image to survive ``len(betas) - 1`` halvings with
the Gaussian window still inside it: size > (kernel_size - 1) * 2^(scales - 1). At 64 px the
standard 5 scales with an 11-px window are invalid, so small images use 3 scales and a 7-px window
(the first three standard scale weights, renormalised).
"""

from __future__ import annotations

import numpy as np
import torch

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_config(size: int) -> tuple[int, tuple[float, ...]]:
    """(kernel_size, betas) valid for ``size``-px images: as many standard scales as fit (at most 5)."""
    for scales, kernel in ((5, 11), (4, 11), (3, 7), (2, 7), (1, 7)):
        if size > (kernel - 1) * 2 ** (scales - 1):
            b = np.asarray(STANDARD_BETAS[:scales])
            return kernel, tuple(float(x) for x in b / b.sum())
    raise ValueError(f"images of {size} px are too small for MS-SSIM")


def ms_ssim_pairs(a_u8: np.ndarray, b_u8: np.ndarray) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]) of uint8 images [N,S,S] -> [N]."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    kernel, betas = ms_ssim_config(np.asarray(a_u8).shape[-1])
    a = torch.as_tensor(np.asarray(a_u8), dtype=torch.float32)[:, None]
    b = torch.as_tensor(np.asarray(b_u8), dtype=torch.float32)[:, None]
    out = ms_ssim(a, b, data_range=255.0, kernel_size=kernel, betas=betas, reduction="none", normalize="relu")
    return out.double().numpy().reshape(-1)


def ms_ssim_diversity(images_u8: np.ndarray, pairs: int = 256, seed: int = 0) -> dict:
    """Mean MS-SSIM over ``pairs`` random pairs of distinct images of the set, with its standard error."""
    x = np.asarray(images_u8)
    if len(x) < 2:
        return {"ms_ssim": None, "se": None, "pairs": 0}
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), pairs)
    j = (i + rng.integers(1, len(x), pairs)) % len(x)  # j != i
    v = ms_ssim_pairs(x[i], x[j])
    kernel, betas = ms_ssim_config(x.shape[-1])
    return {
        "ms_ssim": float(v.mean()),
        "se": float(v.std(ddof=1) / np.sqrt(len(v))),
        "pairs": pairs,
        "scales": len(betas),
        "kernel_size": kernel,
    }
