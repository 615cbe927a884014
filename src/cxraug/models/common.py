"""Small shared pieces: normalisation by name, weight init, parameter counts."""

from __future__ import annotations

import math

import torch
from torch import nn


def norm2d(kind: str, ch: int, momentum: float = 0.1) -> nn.Module:
    """``batch`` (DCGAN), ``instance`` (WGAN-GP critic, CycleGAN), or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(ch, momentum=momentum)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def dcgan_init(m: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); norm scales ~ N(1, 0.02), shifts 0."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def keras_param_count(m: nn.Module) -> int:
    """Parameters as Keras counts them: trainable weights + BatchNorm moving mean and variance."""
    bn = sum(b.running_mean.numel() + b.running_var.numel() for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    return n_params(m) + bn


def n_doublings(size: int, base: int = 4) -> int:
    k = math.log2(size / base)
    if k != int(k) or k < 1:
        raise ValueError(f"size must be {base}·2^k (e.g. 64, 128, 256), got {size}")
    return int(k)


def as_labels(y: torch.Tensor | None, batch: int, dim: int, device) -> torch.Tensor:
    if y is None:
        return torch.zeros(batch, dim, device=device)
    return torch.nan_to_num(y.float(), nan=0.0)
