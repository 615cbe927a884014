"""Small shared pieces: normalisation by name, weight init, parameter counts."""

from __future__ import annotations

import math

import torch
from torch import nn


class InstanceNorm2d(nn.Module):
    """Instance normalisation (Ulyanov et al.) with a per-channel affine, as ``nn.InstanceNorm2d(affine=True)``
    (same parameters and state-dict keys, biased variance, eps 1e-5), written with plain tensor ops.

    torch's module runs batch norm on a [1, B*C, H, W] view. Its CUDA kernels are slow for that many
    tiny channels, it copies channels_last inputs, and the WGAN-GP penalty differentiates it twice
    (on an H100 those kernels and copies were 45 % of a WGAN-GP step's GPU time; this module made the step
    29-46 % faster there, BENCHMARKS.md §6; the same speed on CPU). Statistics are taken in float32 also under
    bf16/fp16 autocast."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)  # [B, C, 1, 1]
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        return (y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)).to(x.dtype)


def norm2d(kind: str, ch: int, momentum: float = 0.1) -> nn.Module:
    """``batch`` (DCGAN), ``instance`` (WGAN-GP critic, CycleGAN), or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(ch, momentum=momentum)
    if kind == "instance":
        return InstanceNorm2d(ch)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def dcgan_init(m: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); norm scales ~ N(1, 0.02), shifts 0."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d | InstanceNorm2d) and m.weight is not None:
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
