"""DCGAN (Radford, Metz & Chintala 2016), as used by Nguyen and by Ng & Hargreaves for CXR.

Generator: z [B, 100] -> ConvT 4x4 -> 4x4 map, then ConvT 4x4 stride 2 + BatchNorm + ReLU blocks
doubling the resolution, Tanh out. Discriminator: Conv 4x4 stride 2 + LeakyReLU(0.2), BatchNorm on
all but the first layer, a 4x4 conv to one logit. 64 px has 4 up/down blocks; 128 px one more.
The same shapes serve WGAN-GP (critic with InstanceNorm, no sigmoid) — see :mod:`wgangp`.
"""

from __future__ import annotations

import torch
from torch import nn

from cxraug.models.common import dcgan_init, n_doublings, norm2d


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 100, size: int = 64, width: int = 64, channels: int = 1, norm: str = "batch"):
        super().__init__()
        k = n_doublings(size)  # 64 -> 4 doublings from 4x4, 128 -> 5
        ch = [width * 2 ** min(i, 4) for i in range(k)][::-1]  # 64px: [512, 256, 128, 64]
        self.z_dim, self.size = z_dim, size
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch[0], 4, 1, 0, bias=False),  # [B, z, 1, 1] -> [B, ch0, 4, 4]
            norm2d(norm, ch[0]),
            nn.ReLU(True),
        ]
        for cin, cout in zip(ch[:-1], ch[1:]):  # each: H -> 2H
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), norm2d(norm, cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1), nn.Tanh()]  # -> [B, 1, size, size]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z.view(z.size(0), -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Outputs one unnormalised score per image: a logit (DCGAN, with BCE) or a critic value (WGAN)."""

    def __init__(self, size: int = 64, width: int = 64, channels: int = 1, norm: str = "batch"):
        super().__init__()
        k = n_doublings(size)
        ch = [width * 2 ** min(i, 4) for i in range(k)]  # 64px: [64, 128, 256, 512]
        layers: list[nn.Module] = [nn.Conv2d(channels, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]  # no norm first
        for cin, cout in zip(ch[:-1], ch[1:]):  # each: H -> H/2
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), norm2d(norm, cout), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)  # -> [B, ch[-1], 4, 4]
        self.head = nn.Conv2d(ch[-1], 1, 4, 1, 0)  # -> [B, 1, 1, 1]
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x)).flatten()
