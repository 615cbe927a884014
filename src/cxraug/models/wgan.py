"""WGAN with weight clipping as specified by Hussain et al. (Keras layers, 96x96 COVID CXR).

The paper gives per-block parameter counts that pin the architecture down:

Generator (20 Keras layers, 2,040,705 parameters)::

    Dense(100 -> 4*4*256) 413,696 -> Reshape [256, 4, 4]
    4 x [UpSampling2D, Conv2D 3x3 same, BatchNorm(momentum 0.8), ReLU]
        256->256 591,104 | 256->256 591,104 | 256->128 295,552 | 128->128 148,096
    Conv2D 3x3 128->1 (1,153), Tanh

Critic (22 Keras layers, 1,658,369 parameters)::

    Conv 3x3/2 1->32, LReLU, Dropout | Conv 3x3/2 32->64, ZeroPadding((0,1),(0,1)), BN, LReLU, Dropout
    Conv 3x3/2 64->128, BN, ... | Conv 3x3/1 128->256, BN, ... | Conv 3x3/1 256->512, BN, ...
    Flatten (13*13*512) -> Dense(1) 86,529

Keras counts BatchNorm's moving mean/variance as parameters; :func:`keras_param_count` does too
(PyTorch's ``parameters()`` gives 2,039,169 and 1,656,449). The paper says "the filter size is
decreased to 1" and 96x96 output, which 4 upsamplings by 2 from the 4x4 the Dense count implies
cannot give (4*2^4 = 64): 96 needs one upsampling by 3 (4*2*2*2*3 = 96), which changes no
parameter count, so that is what the ``wgan-hussain-96`` preset uses. The critic's 13x13 flatten
size is exactly what strides 2,2,2,1,1 with the Keras-GAN ZeroPadding give on a 96 px input — the
only layout we found that reproduces 1,658,369. The paper's "Sigmoid" critic output contradicts
the WGAN loss; we use the linear score the issue and Arjovsky et al. specify.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cxraug.errors import ConfigError

KERAS_BN_MOMENTUM = 0.8  # Keras momentum m keeps m of the old average; PyTorch's momentum is 1 - m


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, momentum=1 - KERAS_BN_MOMENTUM, eps=1e-3)


class HussainGenerator(nn.Module):
    def __init__(
        self,
        z_dim: int = 100,
        size: int = 96,
        filters: tuple[int, ...] = (256, 256, 128, 128),
        channels: int = 1,
    ):
        super().__init__()
        factors = {96: (2, 2, 2, 3), 64: (2, 2, 2, 2), 128: (2, 2, 2, 4)}.get(size)
        if factors is None:
            raise ConfigError(f"the Hussain WGAN is built for 64, 96 or 128 px images, got {size} (--size)")
        self.z_dim, self.size, self.start = z_dim, size, 4
        self.fc = nn.Linear(z_dim, self.start * self.start * filters[0])  # Dense + Reshape -> [B, 256, 4, 4]
        blocks, cin = [], filters[0]
        for f, cout in zip(factors, filters):
            blocks += [
                nn.Upsample(scale_factor=f, mode="nearest"),
                nn.Conv2d(cin, cout, 3, padding=1),
                _bn(cout),
                nn.ReLU(True),
            ]
            cin = cout
        self.blocks = nn.Sequential(*blocks)  # -> [B, 128, size, size]
        self.to_img = nn.Sequential(nn.Conv2d(cin, channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z.flatten(1)).view(z.size(0), -1, self.start, self.start)
        return self.to_img(self.blocks(h))


class HussainCritic(nn.Module):
    def __init__(
        self,
        size: int = 96,
        filters: tuple[int, ...] = (32, 64, 128, 256, 512),
        strides: tuple[int, ...] = (2, 2, 2, 1, 1),
        channels: int = 1,
        dropout: float = 0.25,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for i, (cout, s) in enumerate(zip(filters, strides)):
            layers.append(_SameConv(cin, cout, 3, s))
            if i == 1:
                layers.append(nn.ZeroPad2d((0, 1, 0, 1)))  # Keras ZeroPadding2D(((0,1),(0,1)))
            if i > 0:
                layers.append(_bn(cout))
            layers += [nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.features(torch.zeros(1, channels, size, size)).numel()  # 96 px: 13*13*512
        self.fc = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1)).flatten()


class _SameConv(nn.Conv2d):
    """Conv2d with Keras/TensorFlow ``padding='same'`` (asymmetric for stride 2 on even sizes)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__(cin, cout, k, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s, k = self.stride[0], self.kernel_size[0]
        ph = max((-(-h // s) - 1) * s + k - h, 0)
        pw = max((-(-w // s) - 1) * s + k - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)
