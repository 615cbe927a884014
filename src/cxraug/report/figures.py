"""Figures people would rather look at than read: sample grids, loss curves."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid

from cxraug.data.preprocess import u8_to_tensor
from cxraug.io import atomic_path


def save_grid(images: torch.Tensor | np.ndarray, dest: str | os.PathLike, nrow: int = 8, pad: int = 2) -> Path:
    """Images as [N,1,H,W] float in [-1,1] or [N,H,W] uint8 -> one PNG grid."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        t = u8_to_tensor(images)
    else:
        t = images.detach().float().cpu()
    grid = make_grid(t.clamp(-1, 1), nrow=nrow, padding=pad, normalize=True, value_range=(-1, 1))
    arr = (grid[0].numpy() * 255).round().astype(np.uint8)
    with atomic_path(dest) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(dest)


def save_fig(fig, dest: str | os.PathLike) -> Path:
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(dest)


def plot_curves(
    series: dict[str, list[tuple[float, float]]], dest: str | os.PathLike, title: str = "", xlabel: str = "step"
) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, pts in series.items():
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, label=name, lw=1.2)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_fig(fig, dest)
