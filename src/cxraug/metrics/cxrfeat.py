"""One fixed chest-X-ray feature space, trained once by the project and shipped with the package.

``--features cxr`` (and ``auto`` when no Inception weights are on disk) maps a uint8 image set to features that
do not depend on the user's data: two people comparing FIDs at the same ``--size`` compare the same thing.
The model card (docs/cxr-features.md) records what it was trained on, how, and its sanity table.

A feature vector has two parts, both standardised by constants fixed at training time (the real training
images' mean and standard deviation of each dimension, at 64 and at 128 px):

- **content** (``CXRNet``, 256-d): a small residual CNN trained on every image in ``../shared/data`` with two
  objectives: the image's source and class (seven groups: three Kermany classes, COVID-CXNet, NIH normal and
  abnormal, Hannover), and VICReg (Bardes, Ponce & LeCun, ICLR 2022) between two views of one radiograph
  that differ by what a *copy* may differ by: crop, shift, flip, contrast and gamma, mild blur and noise. So
  the content part sees anatomy and acquisition and is nearly blind to mild degradations: this is the part the
  privacy checks (nearest-neighbour copy search, Meehan et al.'s test) use, where a blurred or shifted copy must
  stay a copy.
- **detail** (training-free): per image, the radial power spectrum in 16 bands (dB of shares, as the spectral
  check, ``cxraug.metrics.spectral``) and a 4-level Laplacian-pyramid's band energies, gradient energies and
  kurtosis (after Portilla & Simoncelli's texture statistics, IJCV 2000), each standardised, then amplified
  by ``GAIN`` and bounded by a soft clip at ``CLIP``: a degradation moves an image by at most ``CLIP`` per
  dimension, so a 16-px thumbnail is far from real, but a real image of another hospital can still be
  farther.

FID's features are the content embedding's ``CONTENT_PCS`` principal axes and the detail part; blur, JPEG and
lost resolution move the detail part, anatomy and source the content part. The privacy checks use the whole
standardised content embedding (``content``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxraug.errors import CheckpointError, show_path
from cxraug.metrics.encoder import _blur

NAME = "cxraug-cxr"
VERSION = "1"
#: the shipped weights, inside the package (model card: docs/cxr-features.md)
WEIGHTS = Path(__file__).with_name("weights") / f"cxr-features-v{VERSION}.safetensors"
#: each standardised detail dimension z enters FID as CLIP * tanh(GAIN * z / CLIP): GAIN times z for the small
#: shifts of mild degradations (visible above sampling noise at a few hundred images), at most CLIP for any
#: degradation (a thumbnail cannot outweigh content: another hospital's real images stay farther)
GAIN, CLIP = 2.0, 3.0
#: FID's content part: the embedding's first principal axes over the training images (not whitened: an axis
#: counts by its variance), which hold 96 % of its variance and a fraction of the sampling noise of all 256
CONTENT_PCS = 32
#: the sizes at which the standardising constants were measured; other sizes use the nearest (in log scale)
STAT_SIZES = (64, 128)
BANDS = 16  # radial-spectrum bands
LEVELS = 4  # pyramid levels
GROUPS = ("kermany-normal", "kermany-bacterial", "kermany-viral", "covid-cxnet", "nih-normal", "nih-abnormal",
          "hannover-covid")  # fmt: skip


# ----------------------------------------------------------------------------------------------- content part
class ResBlock(nn.Module):
    """conv3x3(stride) - GN - SiLU - conv3x3 - GN, plus a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(8, cout))
                     if stride != 1 or cin != cout else nn.Identity())  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + self.skip(x))


class CXRNet(nn.Module):
    """[B,1,S,S] in [-1,1] -> content embedding [B, 256], always seen at ``SIZE`` px (area-resized) and smoothed
    by a fixed Gaussian of ``SMOOTH`` px: anatomy and source live at that scale, pixel noise is not content, and
    the content part of the features is then the same at every ``--size``."""

    SIZE, SMOOTH = 64, 1.5

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 2, 1, bias=False), nn.GroupNorm(8, widths[0]), nn.SiLU())
        blocks, cin = [], widths[0]
        for w in widths[1:]:  # 32 -> 16 -> 8 -> 4 px
            blocks.append(ResBlock(cin, w, 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > self.SIZE:
            x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="area")
        elif x.shape[-1] < self.SIZE:
            x = F.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear", align_corners=False)
        x = _blur(x, torch.full((x.shape[0],), self.SMOOTH))  # the encoder's separable Gaussian, reflect padding
        return self.blocks(self.stem(x)).mean((2, 3))  # [B, 256]: global average pool of 4x4


# ------------------------------------------------------------------------------------------------ detail part
@functools.lru_cache(maxsize=8)
def _spectrum_tables(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``size``-px images, once (CPU float32): the periodic Hann window [S, S]; the matrix [S*(S//2+1), R]
    that sums an rfft2 power half-plane into radii 1..R = S/2; the matrix [R, BANDS] averaging radii into bands."""
    from cxraug.metrics.spectral import _bin_matrix, hann_window

    m = _bin_matrix(size)  # [F, R] radii 1..R
    r = m.shape[1]
    edges = np.linspace(0, r, BANDS + 1).round().astype(int)
    band = np.zeros((r, BANDS))
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        band[lo:hi, b] = 1.0 / max(hi - lo, 1)
    return tuple(torch.from_numpy(a).float() for a in (hann_window(size), m, band))


def detail_stats(x: torch.Tensor) -> torch.Tensor:
    """[B,1,S,S] in [-1,1] -> [B, BANDS + 4*LEVELS + 1] training-free detail statistics (see module doc)."""
    from cxraug.metrics.spectral import _EPS

    b, s = x.shape[0], x.shape[-1]
    x = x.float()
    hann, per_radius, to_band = (t.to(x.device) for t in _spectrum_tables(s))
    # radial spectrum, as cxraug.metrics.spectral: mean removed, Hann window, shares of power per radius, dB
    z = (x[:, 0] - x.mean((1, 2, 3))[:, None, None]) * hann
    power = torch.fft.rfft2(z).abs().pow(2).reshape(b, -1)
    pr = power @ per_radius + _EPS
    share = pr / pr.sum(1, keepdim=True)
    spec = (10 * torch.log10(share)) @ to_band  # [B, BANDS]: mean dB over each band's radii
    # Laplacian pyramid of the contrast-normalised image
    sd = x.std((1, 2, 3), keepdim=True)
    cur = (x - x.mean((1, 2, 3), keepdim=True)) / (sd + 1e-3)
    out = [spec, torch.log(sd[:, :, 0, 0] + 1e-3)]
    for _ in range(LEVELS):
        low = F.avg_pool2d(cur, 2)
        band = cur - F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        e = band.pow(2).mean((1, 2, 3))
        dx = (cur[..., :, 1:] - cur[..., :, :-1]).pow(2).mean((1, 2, 3))
        dy = (cur[..., 1:, :] - cur[..., :-1, :]).pow(2).mean((1, 2, 3))
        kurt = band.pow(4).mean((1, 2, 3)) / (e * e + 1e-12)
        out.append(torch.stack([torch.log(e + 1e-6), torch.log(dx + 1e-6), torch.log(dy + 1e-6),
                                torch.log(kurt + 1e-6)], 1))  # fmt: skip
        cur = low
    return torch.cat(out, 1)


DETAIL_DIM = BANDS + 1 + 4 * LEVELS


# ------------------------------------------------------------------------------------------- the whole extractor
class CXRFeatures(nn.Module):
    """The fixed extractor: [B,1,S,S] in [-1,1] -> standardised [content (256) ; soft-clipped detail] features.

    ``mean`` / ``std`` hold one row per size in ``STAT_SIZES`` (measured on the training images)."""

    def __init__(self):
        super().__init__()
        self.net = CXRNet()
        d = self.net.dim + DETAIL_DIM
        self.register_buffer("mean", torch.zeros(len(STAT_SIZES), d))
        self.register_buffer("std", torch.ones(len(STAT_SIZES), d))
        self.register_buffer("pcs", torch.eye(self.net.dim)[:, :CONTENT_PCS].clone())  # [256, CONTENT_PCS]
        self.register_buffer("pc_mean", torch.zeros(self.net.dim))
        self.trained_on: list[str] = []  # not used to refuse references: a fixed space, like Inception's
        self.card: dict = {}

    @property
    def dim(self) -> int:
        return CONTENT_PCS + DETAIL_DIM

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unstandardised [content ; detail], float32."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.cat([self.net(x.float()), detail_stats(x)], 1)

    def _row(self, size: int) -> int:
        return int(np.argmin([abs(np.log(size / s)) for s in STAT_SIZES]))

    def content(self, x: torch.Tensor) -> torch.Tensor:
        """The content part alone, standardised: the space the copy searches use."""
        i, c = self._row(x.shape[-1]), self.net.dim
        return (self.net(x.float()) - self.mean[i, :c]) / self.std[i, :c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """FID's features [B, CONTENT_PCS + DETAIL_DIM]."""
        i, c = self._row(x.shape[-1]), self.net.dim
        z = (self.raw(x) - self.mean[i]) / self.std[i]
        content = (z[:, :c] - self.pc_mean) @ self.pcs
        detail = CLIP * torch.tanh(GAIN * z[:, c:] / CLIP)
        return torch.cat([content, detail], 1)


def weights_digest(path: str | os.PathLike = WEIGHTS) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_features(model: CXRFeatures, dest: str | os.PathLike, card: dict) -> Path:
    from safetensors.torch import save_file

    from cxraug.io import atomic_path

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(dest) as tmp:
        save_file(
            state, str(tmp), metadata={"name": NAME, "version": VERSION, "card": json.dumps(card, sort_keys=True)}
        )
    return Path(dest)


def load_features(path: str | os.PathLike = WEIGHTS) -> CXRFeatures:
    """The shipped extractor (or another file of the same format), in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"the CXR feature weights are missing: {show_path(p)} (reinstall cxraug)")
    try:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        model = CXRFeatures()
        model.load_state_dict(load_file(str(p)), strict=True)
        model.card = json.loads(meta.get("card", "{}"))
    except Exception as e:
        raise CheckpointError(f"{show_path(p)} is not a cxraug CXR feature file ({type(e).__name__}: {e})") from e
    for q in model.parameters():
        q.requires_grad_(False)
    return model.eval()
