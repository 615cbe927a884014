"""DCGAN (Radford, Metz & Chintala 2016), as used by Nguyen and by Ng & Hargreaves for CXR.

Generator: z [B, 100] -> ConvT 4x4 -> 4x4 map, then ConvT 4x4 stride 2 + BatchNorm + ReLU blocks
doubling the resolution, Tanh out. Discriminator: Conv 4x4 stride 2 + LeakyReLU(0.2), BatchNorm on
all but the first layer, a 4x4 conv to one logit. 64 px has 4 up/down blocks; 128 px one more.
The same shapes serve WGAN-GP (critic with InstanceNorm, no sigmoid) — see :mod:`wgangp`.

The defaults are the project's networks (channel widths ``width * 2**i``, capped at ``16 * width``).
The paper presets (``train/config.py``, ``docs/presets.md``) pass the papers' exact layouts:
``widths`` (the channel list, e.g. Nguyen's 128 px WGAN-GP: generator 512..32, critic 16..256),
``bias`` (the PyTorch DCGAN tutorial that Ng & Hargreaves and Nguyen follow has no conv biases;
Nguyen's 128 px networks have them everywhere), and for critics ``norm_first`` / ``affine``
(Nguyen's critics normalise after every conv, with parameter-free InstanceNorm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cxraug.models.common import dcgan_init, n_doublings, norm2d


def _widths(size: int, width: int, widths: Sequence[int] | None) -> list[int]:
    """Channels after each stride-2 conv of the discriminator, input side first (64 px: [64, 128, 256, 512])."""
    k = n_doublings(size)  # 64 -> 4 doublings from 4x4, 128 -> 5
    if widths is None:
        return [width * 2 ** min(i, 4) for i in range(k)]
    if len(widths) != k:
        raise ValueError(f"{size} px needs {k} channel widths, got {list(widths)}")
    return [int(w) for w in widths]


def _norm(kind: str, ch: int, affine: bool) -> nn.Module:
    if kind == "instance" and not affine:  # parameter-free, as Nguyen's critics (nn.InstanceNorm2d defaults)
        return nn.InstanceNorm2d(ch, affine=False)
    return norm2d(kind, ch)


class DCGANGenerator(nn.Module):
    """``widths``: channels from the 4x4 map up (Nguyen 128 px: [512, 256, 128, 64, 32]); ``bias``: None = no
    bias but on the output conv (project default), True/False = on every / no transposed conv."""

    def __init__(
        self,
        z_dim: int = 100,
        size: int = 64,
        width: int = 64,
        channels: int = 1,
        norm: str = "batch",
        widths: Sequence[int] | None = None,
        bias: bool | None = None,
    ):
        super().__init__()
        ch = _widths(size, width, None if widths is None else list(widths)[::-1])[::-1]  # 64px: [512, 256, 128, 64]
        inner, outer = bool(bias), bias is not False
        self.z_dim, self.size = z_dim, size
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch[0], 4, 1, 0, bias=inner),  # [B, z, 1, 1] -> [B, ch0, 4, 4]
            norm2d(norm, ch[0]),
            nn.ReLU(True),
        ]
        for cin, cout in zip(ch[:-1], ch[1:]):  # each: H -> 2H
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=inner), norm2d(norm, cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1, bias=outer), nn.Tanh()]  # -> [B, 1, size, size]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z.view(z.size(0), -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Outputs one unnormalised score per image: a logit (DCGAN, with BCE) or a critic value (WGAN).

    ``widths``: channels after each stride-2 conv; ``bias``: None = bias on the first and the output conv only
    (project default), True/False = on every / no conv; ``norm_first``: normalise after the first conv too;
    ``affine``: learnable InstanceNorm scale and shift (False: parameter-free)."""

    def __init__(
        self,
        size: int = 64,
        width: int = 64,
        channels: int = 1,
        norm: str = "batch",
        widths: Sequence[int] | None = None,
        bias: bool | None = None,
        norm_first: bool = False,
        affine: bool = True,
    ):
        super().__init__()
        ch = _widths(size, width, widths)  # 64px: [64, 128, 256, 512]
        inner, outer = bool(bias), bias is not False
        layers: list[nn.Module] = [nn.Conv2d(channels, ch[0], 4, 2, 1, bias=outer)]
        if norm_first:
            layers.append(_norm(norm, ch[0], affine))
        layers.append(nn.LeakyReLU(0.2, True))
        for cin, cout in zip(ch[:-1], ch[1:]):  # each: H -> H/2
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=inner), _norm(norm, cout, affine), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)  # -> [B, ch[-1], 4, 4]
        self.head = nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=outer)  # -> [B, 1, 1, 1]
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x)).flatten()
