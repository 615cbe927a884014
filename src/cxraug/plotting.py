"""Pictures every stage writes: image grids (PIL) and line plots (matplotlib).

A low utility module (it imports only :mod:`cxraug.io`), so training, synthesis, metrics and reports can
all draw without importing each other. Figures are plain :class:`matplotlib.figure.Figure` objects
rendered by the Agg canvas: nothing here selects a matplotlib backend or touches pyplot's global figure
list, so importing or calling it leaves a notebook's plotting setup as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cxraug.io import atomic_path


def save_grid(images: torch.Tensor | np.ndarray, dest: str | os.PathLike, *, nrow: int = 8, pad: int = 2) -> Path:
    """Images as [N,1,H,W] float in [-1,1] or [N,H,W] uint8 -> one grayscale PNG grid (atomic write)."""
    from PIL import Image
    from torchvision.utils import make_grid

    if isinstance(images, np.ndarray):  # uint8 [N,H,W] -> float [N,1,H,W] in [-1,1]
        t = torch.from_numpy(np.asarray(images, np.float32) / 127.5 - 1.0).unsqueeze(1)
    else:
        t = images.detach().float().cpu()
    grid = make_grid(t.clamp(-1, 1), nrow=nrow, padding=pad, normalize=True, value_range=(-1, 1))  # [3,H',W']
    arr = (grid[0].numpy() * 255).round().astype(np.uint8)
    with atomic_path(dest) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(dest)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with its own Agg canvas, outside pyplot (no backend, no global figure registry)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_fig(fig: Figure, dest: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG (atomic write)."""
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(dest)


def plot_curves(
    series: dict[str, list[tuple[float, float]]], dest: str | os.PathLike, *, title: str = "", xlabel: str = "step"
) -> Path:
    """One line per named series of (x, y) points, e.g. training losses against the step."""
    fig = new_figure((6, 3.5))
    ax = fig.subplots()
    for name, pts in series.items():
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, label=name, lw=1.2)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:  # a run shorter than one logging interval has no points yet: no empty legend (and no warning)
        ax.legend(fontsize=8)
    return save_fig(fig, dest)
