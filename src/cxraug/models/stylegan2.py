"""StyleGAN2 (Karras, Laine, Aittala, Hellsten, Lehtinen & Aila 2020, "Analyzing and Improving the Image
Quality of StyleGAN"), as used by StyleGAN2-ADA (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), written here for one-channel images from the papers' descriptions.

Generator (the paper's "skip" architecture, Fig. 7b):

- mapping network f: z [B, z_dim] (normalised to unit second moment) -> w [B, w_dim], ``map_layers``
  fully connected layers with leaky ReLU, learning rate x0.01 (the paper's lr multiplier). Class-
  conditional: the label vector y [B, K] is embedded (a linear layer to z_dim), normalised the same
  way and concatenated to z, so f sees [z ; e(y)] [B, 2 z_dim];
- synthesis network g: a learned constant 4x4 input, then per resolution 4, 8, ..., S: two modulated and
  demodulated 3x3 convolutions (one at 4x4; the first of each later pair upsamples x2), each followed by
  a per-pixel noise input with a learned per-layer strength, a bias and leaky ReLU; a 1x1 modulated
  "toRGB" convolution (no demodulation) per resolution whose outputs are upsampled and summed (skip).
  One w drives every layer: no style-mixing regularisation (the ADA paper's CIFAR-10 configuration has none).
- truncation: ``w' = w_avg + psi (w - w_avg)``, with ``w_avg`` a running mean of w kept during training.

Discriminator (the paper's "residual" architecture, Fig. 7c): fromRGB (1x1) at S px, then per resolution
a residual block [3x3 conv, 3x3 conv, /2] + [/2, 1x1 conv] scaled by 1/sqrt(2), down to 4x4; then
minibatch standard deviation (one extra feature map, groups of ``mbstd_group``), a 3x3 conv, a fully
connected layer and the output layer. Class-conditional: projection (Miyato & Koyama 2018), the output
plus <embed(y), h> / sqrt(C).

Every weight uses the equalized learning rate (Karras et al. 2018): stored N(0, 1) and scaled at run time
by lr_mul / sqrt(fan_in). Leaky ReLU(0.2) outputs are multiplied by sqrt(2) to keep unit variance.

Differences from the paper, all for simplicity: up- and down-sampling are bilinear interpolation and 2x2
average pooling instead of the paper's transposed/strided convolutions with a [1,3,3,1] FIR filter
(bilinear x2 upsampling is that same separable filter on a zero-stuffed grid, with edge replication instead
of zero padding); no path-length regularisation (nor in the ADA paper's CIFAR-10 configuration; its 256 px
configuration has both, docs/presets.md says what that changes).
Channels per resolution r: ``min(width * S / r, 8 * width)`` (the paper's channel_base / r capped at
channel_max; width 64 at 256 px gives the ADA paper's 256 px network: 64, 128, 256, 512, 512, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cxraug.models.common import ConfigSection, as_labels, n_doublings

LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGAN2Config(ConfigSection):
    """StyleGAN2-ADA's own options (flat config keys) and their defaults, the ADA paper's: the networks read
    them here, the training (families/stylegan2.py, families/ada.py) through TrainConfig, which takes these
    defaults. The family also reads z_dim, width (channels ``min(width * size / res, 8 * width)``) and data.size."""

    w_dim: int = 512  # the intermediate latent w
    map_layers: int = 8  # fully connected layers of the mapping network z -> w
    mbstd_group: int = 4  # minibatch-stddev group size (the discriminator)
    r1_gamma: float = 1.0  # R1 penalty weight gamma on the real images (0 = off)
    r1_every: int = 16  # lazy R1: on every k-th discriminator step, the term times k
    ada: str = "bgc"  # ADA pipeline: "bgc", some of its letters, or operation names (families/ada.py); "" = off
    ada_target: float = 0.6  # target of r_t = E[sign(D(real))]; 0 = p stays at ada_p
    ada_interval: int = 4  # discriminator steps between two adjustments of p
    ada_kimg: float = 500.0  # thousand real images over which p can move from 0 to 1
    ada_p: float = 0.0  # initial augmentation probability
    truncation: float = 1.0  # psi when sampling (1 = no truncation)
    class_cond: bool = False  # condition on the label vectors (mapping network and projection discriminator)


def channels(res: int, size: int, width: int) -> int:
    """Feature maps at resolution ``res`` of an ``size`` px network: channel_base / res, capped."""
    return int(min(width * size // res, 8 * width))


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:  # [B, D] -> [B, D]
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    """y = x (W * lr_mul / sqrt(in))^T + b * lr_mul; W ~ N(0, 1/lr_mul^2) so its effective init is N(0, 1/in)."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)  # [out, in]
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init) / lr_mul))
        self.w_gain, self.lr_mul, self.act = lr_mul / math.sqrt(cin), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in] -> [B, out]
        y = F.linear(x, self.weight * self.w_gain, self.bias * self.lr_mul)
        return lrelu(y) if self.act else y


class EqualConv2d(nn.Module):
    """A k x k convolution with equalized learning rate, 'same' padding, optional bias and leaky ReLU."""

    def __init__(self, cin: int, cout: int, k: int, bias: bool = True, act: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))  # [out, in, k, k]
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.w_gain, self.pad, self.act = 1 / math.sqrt(cin * k * k), k // 2, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in, H, W] -> [B, out, H, W]
        y = F.conv2d(x, self.weight * self.w_gain, self.bias, padding=self.pad)
        return lrelu(y) if self.act else y


def modulate(weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool, eps: float = 1e-8) -> torch.Tensor:
    """The paper's Eqs. 1-3: w'_ijk = s_i w_ijk, then w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps).

    weight [O, I, k, k], styles s [B, I] -> per-sample weights [B, O, I, k, k] (each output filter of unit
    L2 norm when ``demodulate``)."""
    w = weight.unsqueeze(0) * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + eps).rsqrt()
    return w


class ModulatedConv2d(nn.Module):
    """A modulated (and demodulated) k x k convolution: the style s = A(w) scales the input channels of the
    weight per sample. Two equal ways to run it: ``fused`` = one grouped convolution over the batch with the
    per-sample weights of :func:`modulate` (groups = B, the paper's implementation), else (default, several times
    faster on CPUs) the shared weight on s-scaled activations, the outputs times d_bj = 1 / sqrt(sum_i s_bi^2
    sum_k w_ijk^2 + eps): the same demodulation factor, since scaling input channels commutes with the
    convolution. ``up``: bilinear x2 first."""

    def __init__(
        self, cin: int, cout: int, k: int, w_dim: int, demodulate: bool = True, up: bool = False, fused: bool = False
    ):
        super().__init__()
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)  # A: w -> s, initialised around 1
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))  # [O, I, k, k]
        self.w_gain, self.pad, self.demodulate, self.up = 1 / math.sqrt(cin * k * k), k // 2, demodulate, up
        self.cin, self.cout, self.fused = cin, cout, fused

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # x [B, I, H, W], w [B, w_dim]
        b = x.size(0)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # [B, I, 2H, 2W]
        styles = self.affine(w)  # [B, I]
        weight = self.weight * self.w_gain  # [O, I, k, k]
        h, wd = x.shape[2:]
        if self.fused:
            wt = modulate(weight, styles, demodulate=self.demodulate)  # [B, O, I, k, k]
            y = F.conv2d(x.reshape(1, b * self.cin, h, wd), wt.reshape(b * self.cout, self.cin, *wt.shape[3:]),
                         padding=self.pad, groups=b)  # fmt: skip
            return y.reshape(b, self.cout, h, wd)  # [B, O, H, W]
        y = F.conv2d(x * styles.view(b, -1, 1, 1).to(x.dtype), weight.to(x.dtype), padding=self.pad)  # [B, O, H, W]
        if self.demodulate:
            d = (styles.square() @ weight.square().sum(dim=(2, 3)).T + 1e-8).rsqrt()  # [B, O]
            y = y * d.view(b, -1, 1, 1).to(y.dtype)
        return y


class StyleLayer(nn.Module):
    """Modulated 3x3 conv + noise (learned strength, init 0) + bias + leaky ReLU."""

    def __init__(self, cin: int, cout: int, w_dim: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        y = self.conv(x, w) + noise * self.noise_strength  # noise [B, 1, H, W] broadcast over channels
        return lrelu(y + self.bias.view(1, -1, 1, 1))


class ToRGB(nn.Module):
    """1x1 modulated conv to one channel, no demodulation, + bias, linear."""

    def __init__(self, cin: int, w_dim: int, channels: int = 1):
        super().__init__()
        self.conv = ModulatedConv2d(cin, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, n_labels: int = 0, layers: int = 8, lr_mul: float = 0.01):
        super().__init__()
        self.n_labels = n_labels
        self.embed = EqualLinear(n_labels, z_dim) if n_labels else None  # y [B, K] -> [B, z_dim]
        dims = [z_dim * (2 if n_labels else 1)] + [w_dim] * layers
        self.fc = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, act=True) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # [B, z] -> [B, w]
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            e = self.embed(as_labels(y, z.size(0), self.n_labels, z.device))
            x = torch.cat([x, normalize_2nd_moment(e)], dim=1)  # [B, 2 z]
        return self.fc(x)


class StyleGAN2Generator(nn.Module):
    """G(z, y) -> [B, 1, S, S]: mapping, then the skip synthesis network (tanh-free, as the paper; samples are
    clamped to [-1, 1] by the sampler). ``noise``: one map per style layer (``noise_shapes``), else drawn
    from ``generator``. ``psi`` < 1 truncates w toward its running mean."""

    def __init__(self, z_dim: int = 512, size: int = 64, width: int = 64, w_dim: int = 512, n_labels: int = 0,
                 map_layers: int = 8, channels_out: int = 1, w_avg_beta: float = 0.995):  # fmt: skip
        super().__init__()
        k = n_doublings(size)  # resolutions 4, 8, ..., size: k doublings
        self.z_dim, self.w_dim, self.size, self.n_labels, self.w_avg_beta = z_dim, w_dim, size, n_labels, w_avg_beta
        self.mapping = MappingNetwork(z_dim, w_dim, n_labels, map_layers)
        self.register_buffer("w_avg", torch.zeros(w_dim))  # running mean of w (truncation)
        ch = [channels(4 * 2**i, size, width) for i in range(k + 1)]  # 4 px .. size px
        self.const = nn.Parameter(torch.randn(ch[0], 4, 4))  # the learned constant input [C4, 4, 4]
        self.layers = nn.ModuleList([StyleLayer(ch[0], ch[0], w_dim)])  # 4x4
        self.torgb = nn.ModuleList([ToRGB(ch[0], w_dim, channels_out)])
        self.res = [4]  # resolution of each style layer
        for i in range(1, k + 1):  # 8x8 .. size: conv up, conv, toRGB
            self.layers.extend([StyleLayer(ch[i - 1], ch[i], w_dim, up=True), StyleLayer(ch[i], ch[i], w_dim)])
            self.torgb.append(ToRGB(ch[i], w_dim, channels_out))
            self.res += [4 * 2**i] * 2

    def noise_shapes(self, n: int) -> list[tuple[int, int, int, int]]:
        return [(n, 1, r, r) for r in self.res]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, noise: list[torch.Tensor] | None = None,
                generator: torch.Generator | None = None, psi: float = 1.0) -> torch.Tensor:  # fmt: skip
        b = z.size(0)
        w = self.mapping(z.flatten(1), y)  # [B, w_dim]
        if self.training:
            with torch.no_grad():  # track E[w] for truncation (a buffer: averaged by the EMA and checkpointed)
                self.w_avg.lerp_(w.detach().mean(0).to(self.w_avg.dtype), 1 - self.w_avg_beta)
        if psi != 1.0:
            w = self.w_avg.to(w.dtype) + psi * (w - self.w_avg.to(w.dtype))
        if noise is None:
            noise = [torch.randn(s, device=z.device, dtype=z.dtype, generator=generator) for s in self.noise_shapes(b)]
        x = self.const.unsqueeze(0).expand(b, -1, -1, -1)  # [B, C4, 4, 4]
        x = self.layers[0](x, w, noise[0])
        img = self.torgb[0](x, w)  # [B, 1, 4, 4]
        for i in range(1, len(self.torgb)):
            x = self.layers[2 * i - 1](x, w, noise[2 * i - 1])  # up: [B, C, 2H, 2W]
            x = self.layers[2 * i](x, w, noise[2 * i])
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False) + self.torgb[i](x, w)
        return img  # [B, 1, size, size]


class ResBlock(nn.Module):
    """Residual discriminator block: (conv3x3, conv3x3, avgpool/2) + (avgpool/2, conv1x1), times 1/sqrt(2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0, self.conv1 = EqualConv2d(cin, cin, 3), EqualConv2d(cin, cout, 3)
        self.skip = EqualConv2d(cin, cout, 1, bias=False, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, I, H, W] -> [B, O, H/2, W/2]
        y = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Appends one feature map: the std over each group of ``group`` samples (samples b, b + B/G, ...),
    averaged over channels and pixels. [B, C, H, W] -> [B, C+1, H, W]. G divides B (gcd with the batch)."""
    b, c, h, w = x.shape
    g = math.gcd(b, group)
    y = x.reshape(g, b // g, c, h, w).float()  # [G, M, C, H, W]
    y = (y.var(dim=0, correction=0) + 1e-8).sqrt()  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # [M]
    y = y.view(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(nn.Module):
    """D(x, y) -> one logit per image [B]."""

    def __init__(self, size: int = 64, width: int = 64, n_labels: int = 0, mbstd_group: int = 4,
                 channels_in: int = 1):  # fmt: skip
        super().__init__()
        k = n_doublings(size)
        ch = [channels(size // 2**i, size, width) for i in range(k + 1)]  # size px .. 4 px
        self.n_labels, self.mbstd_group = n_labels, mbstd_group
        self.fromrgb = EqualConv2d(channels_in, ch[0], 1)
        self.blocks = nn.Sequential(*[ResBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])  # -> [B, C4, 4, 4]
        c4 = ch[-1]
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, act=True)
        self.out = EqualLinear(c4, 1)
        self.embed = EqualLinear(n_labels, c4) if n_labels else None  # projection: y [B, K] -> [B, C4]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.blocks(self.fromrgb(x))  # [B, C4, 4, 4]
        h = self.fc(self.conv(minibatch_stddev(h, self.mbstd_group)).flatten(1))  # [B, C4]
        out = self.out(h).flatten()  # [B]
        if self.embed is not None:
            e = self.embed(as_labels(y, x.size(0), self.n_labels, x.device))  # [B, C4]
            out = out + (e * h).sum(1) / math.sqrt(h.size(1))
        return out


def build_generator(config: dict, n_labels: int) -> StyleGAN2Generator:
    """The generator a (training) config describes; class-conditional when ``config["class_cond"]``."""
    opts = StyleGAN2Config.from_config(config)
    return StyleGAN2Generator(
        int(config["z_dim"]),
        int(config["data"]["size"]),
        int(config["width"]),
        opts.w_dim,
        n_labels if opts.class_cond else 0,
        opts.map_layers,
    )


def build_discriminator(config: dict, n_labels: int) -> StyleGAN2Discriminator:
    opts = StyleGAN2Config.from_config(config)
    return StyleGAN2Discriminator(int(config["data"]["size"]), int(config["width"]),
                                  n_labels if opts.class_cond else 0, opts.mbstd_group)  # fmt: skip
