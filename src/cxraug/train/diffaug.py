"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real *and* fake images
before the critic, which keeps GANs from overfitting small data sets (the limited-data regime)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + ty + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + tx + 1, 0, w + 1)
    xp = F.pad(x, [1, 1, 1, 1])  # out-of-frame pixels read the zero border
    idx = (gy * (w + 2) + gx).view(b, 1, -1).expand(-1, x.size(1), -1)
    return xp.flatten(2).gather(2, idx).view_as(x)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = ((gy[None] - oy + ch // 2).abs() < ch / 2) & ((gx[None] - ox + cw // 2).abs() < cw / 2)
    # keep pixels outside the box; inside becomes 0 (mid-grey in [-1,1])
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {"brightness": brightness, "translation": translation, "cutout": cutout}


class DiffAugment:
    def __init__(self, policy: str = "translation,cutout,brightness"):
        names = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = set(names) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown DiffAugment policies {sorted(unknown)}; choose from {sorted(POLICIES)}")
        self.fns = [POLICIES[n] for n in names]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.fns:
            x = f(x)
        return x

    def __bool__(self) -> bool:
        return bool(self.fns)
