"""Small shared pieces: normalisation by name, weight init, parameter counts, device and memory, a family's config
section."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, Self

import torch
from torch import nn
from torch.nn import functional as F


def instance_norm_plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Instance norm from plain tensor ops (var_mean, rsqrt, multiply-add); [B, C, H, W] -> same.
    Statistics in float32, the result in ``x``'s dtype."""
    xf = x.float()
    var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)  # [B, C, 1, 1]
    y = (xf - mean) * torch.rsqrt(var + eps)
    return (y * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)).to(x.dtype)


def instance_norm_native(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """The same maths through torch's own kernel (``F.instance_norm``: batch norm on a [1, B*C, H, W] view,
    as ``nn.InstanceNorm2d``); statistics in float32, the result in ``x``'s dtype."""
    return F.instance_norm(x.float(), weight=weight, bias=bias, eps=eps).to(x.dtype)


# Which kernel runs on which device type, from measurements of a WGAN-GP-64 critic update (forward on real and
# fake, the penalty's double backward, Adam): on an H100 the plain ops made the step faster (torch's kernels for
# that many tiny channels, and their channels_last copies, took much of the GPU time; BENCHMARKS.md §6); on CPUs
# torch's kernel is as fast or a little faster (AVX-512-BF16 EPYC in bf16 and float32, §1b and
# §8b; AVX2-only EPYC in float32, §8b), so CPUs take torch's stock kernel. Devices not listed take the plain ops.
INSTANCE_NORM_KERNEL = {"cpu": instance_norm_native, "cuda": instance_norm_plain}


class InstanceNorm2d(nn.Module):
    """Instance normalisation (Ulyanov et al.) with a per-channel affine, as ``nn.InstanceNorm2d(affine=True)``
    (same parameters and state-dict keys, biased variance, eps 1e-5, no running statistics). The kernel is
    chosen per device type (:data:`INSTANCE_NORM_KERNEL`); both compute the same function and gradients,
    double backward included. Statistics are taken in float32 also under bf16/fp16 autocast."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        kernel = INSTANCE_NORM_KERNEL.get(x.device.type, instance_norm_plain)
        return kernel(x, self.weight, self.bias, self.eps)


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
        from cxraug.errors import ConfigError  # a ValueError too; the CLI prints it as one line

        raise ConfigError(f"image size must be {base}·2^k for this model (e.g. 64, 128, 256), got {size} (--size)")
    return int(k)


def as_labels(y: torch.Tensor | None, batch: int, dim: int, device) -> torch.Tensor:
    if y is None:
        return torch.zeros(batch, dim, device=device)
    return torch.nan_to_num(y.float(), nan=0.0)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU; anything else is passed to ``torch.device``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def tensor_bytes(*nets: nn.Module | None) -> int:
    """Bytes of every parameter and buffer of ``nets`` at float32 (built on the meta device, nothing is allocated)."""
    n = 0
    for net in nets:
        if net is not None:
            n += sum(t.numel() for t in (*net.parameters(), *net.buffers()))
    return 4 * n


def memory_bytes(device: str | torch.device = "cpu") -> int:
    """The memory of the device a network would live on: the GPU's, else the machine's RAM (0: unknown)."""
    import os

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(dev.index or 0).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 / 10 else f"{n / 2**20:,.1f} MB"


@dataclasses.dataclass(frozen=True)
class ConfigSection:
    """A family's own options, as typed fields whose defaults are the one place those defaults are written
    (:class:`cxraug.train.config.TrainConfig` takes its defaults for them from here). Subclasses: a network's
    section next to it (:class:`cxraug.models.stylegan2.StyleGAN2Config`, :class:`cxraug.models.ddpm.DDPMConfig`).

    Every run's ``config.yaml`` and the dict the networks read stay flat (``w_dim: 128``); a user may write the
    keys flat or nested in the section (``stylegan2: {w_dim: 128}``, ``--set stylegan2.w_dim=128``), which
    :func:`cxraug.config.load_config` flattens (``TrainConfig.config_sections``).
    """

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The section's fields from a flat config dict; a key that is absent or None (a config written before
        the field existed) takes the default. Values are converted to the field's type (``int``, ``float``,
        ``bool``, ``str``, or a list of one of them), as the networks have always read them."""
        hints = typing.get_type_hints(cls)
        given = {f.name: _convert(hints[f.name], config[f.name])
                 for f in dataclasses.fields(cls) if config.get(f.name) is not None}  # fmt: skip
        return cls(**given)


def _convert(tp: Any, value: Any) -> Any:
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return [item(v) for v in value]
    return tp(value)
