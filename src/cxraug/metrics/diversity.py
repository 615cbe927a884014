"""Within-set diversity: mean MS-SSIM over random pairs of images of one set (a mode-collapse signal,
as in MONAI Generative's practice, after Odena et al. 2017). Lower is more diverse; compare the
synthetic set's value with the real set's (a generator that collapses scores well above it).

MS-SSIM as Wang, Simoncelli & Bovik define it ("Multi-scale structural similarity for image
quality assessment", Asilomar 2003; their reference MATLAB code): an 11-tap Gaussian window
(sigma 1.5), C1 = (0.01 L)^2, C2 = (0.03 L)^2, statistics over the *valid* part of the image only
(no padding), 2 x 2 average pooling between scales, and
    MS-SSIM = prod_{j < M} cs_j^beta_j * ssim_M^beta_M
with cs_j the mean contrast-structure term at scale j and ssim_M the mean SSIM at the coarsest.
Two conventions shared with torchmetrics and pytorch_msssim: a negative mean cs/ssim is clamped
to 0 (a real power of a negative number is undefined), and odd sizes are pooled by flooring.

The valid region must survive ``len(betas) - 1`` halvings: size / 2^(M-1) >= 11. At 64 px the
standard 5 scales do not fit, so small images use the first 3 standard scale weights, renormalised
(``ms_ssim_config``).

``padding="reflect"`` reproduces torchmetrics' convention instead (its
``multiscale_structural_similarity_index_measure``): the image is reflect-padded by 5 px before
filtering, the cs terms are still averaged over the valid region, but the coarsest scale's SSIM is
averaged over the whole (padded) map, so border pixels whose window reaches into the mirrored
padding count too. It exists to cross-check this implementation against torchmetrics
(tests/test_metrics.py); at 64 px, where the coarsest scale is 16 px and its valid part 6 px, the
two conventions differ by a few hundredths, and the default follows the published definition.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL_SIZE, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def ms_ssim_config(size: int) -> tuple[int, tuple[float, ...]]:
    """(kernel_size, betas) valid for ``size``-px images: as many standard scales as keep the coarsest
    scale at least one window wide (at most 5), their weights renormalised to sum to 1."""
    for scales in (5, 4, 3, 2, 1):
        if size // 2 ** (scales - 1) >= KERNEL_SIZE:
            b = np.asarray(STANDARD_BETAS[:scales])
            return KERNEL_SIZE, tuple(float(x) for x in b / b.sum())
    raise ValueError(f"images of {size} px are too small for MS-SSIM (at least {KERNEL_SIZE} px)")


def _gaussian_window(size: int = KERNEL_SIZE, sigma: float = SIGMA) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()  # [size]


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of x [B,1,H,W] -> [B,1,H-k+1,W-k+1]."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, data_range: float, padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term of each pair (x[i], y[i]) [B,1,H,W] -> ([B], [B])."""
    g = _gaussian_window()
    p = (KERNEL_SIZE - 1) // 2
    if padding == "reflect":
        x, y = F.pad(x, (p, p, p, p), mode="reflect"), F.pad(y, (p, p, p, p), mode="reflect")
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = _filter(x, g), _filter(y, g)
    vx = (_filter(x * x, g) - mx * mx).clamp_min(0)
    vy = (_filter(y * y, g) - my * my).clamp_min(0)
    cxy = _filter(x * y, g) - mx * my
    cs_map = (2 * cxy + c2) / (vx + vy + c2)
    ssim_map = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs_map
    if padding == "reflect":  # torchmetrics: cs over the valid region, ssim over the whole padded map
        cs_map = cs_map[..., p:-p, p:-p]
    return ssim_map.mean((1, 2, 3)), cs_map.mean((1, 2, 3))


def ms_ssim(
    a: np.ndarray | torch.Tensor,
    b: np.ndarray | torch.Tensor,
    *,
    data_range: float = 255.0,
    betas: tuple[float, ...] | None = None,
    padding: str = "valid",
) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]) of grayscale images [N,S,S] (any numeric dtype) -> float64 [N].
    ``betas`` default to ``ms_ssim_config(S)``; ``padding``: "valid" (Wang et al.) or "reflect"
    (torchmetrics' convention, see the module docstring)."""
    if padding not in ("valid", "reflect"):
        raise ValueError(f"padding must be 'valid' or 'reflect', got {padding!r}")
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64)[:, None]  # [N,1,S,S]
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64)[:, None]
    if betas is None:
        betas = ms_ssim_config(min(x.shape[-2:]))[1]
    if min(x.shape[-2:]) // 2 ** (len(betas) - 1) < KERNEL_SIZE:
        raise ValueError(f"{len(betas)} scales need images of at least {KERNEL_SIZE * 2 ** (len(betas) - 1)} px")
    out = torch.ones(len(x), dtype=torch.float64)
    for j, beta in enumerate(betas):
        ssim, cs = _ssim_cs(x, y, data_range, padding)
        term = ssim if j == len(betas) - 1 else cs
        out = out * term.clamp_min(0) ** beta
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out.numpy()


def ms_ssim_pairs(a_u8: np.ndarray, b_u8: np.ndarray) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]) of uint8 images [N,S,S] -> [N]."""
    return ms_ssim(a_u8, b_u8, data_range=255.0)


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
