"""A feature extractor cxraug trains itself on real CXRs, so every metric works fully offline.

A small convolutional encoder trained on real images; its pooled activations are the features
(``encoder:PATH``). Two objectives:

- ``texture`` (default): a denoising autoencoder (content) plus a "degraded vs real" head that must
  tell a real image from its own Gaussian-blurred or down-and-up-sampled copy, so the features see
  texture and sharpness, not just layout (an autoencoder alone scores a 16-pixel thumbnail as a
  near-perfect CXR);
- ``autoencoder``: the denoising autoencoder alone (the encoder before issue 13; kept to reproduce
  the before/after table in BENCHMARKS.md).

The file records fingerprints of the images it was trained on, so that an evaluation can refuse a
reference set the encoder has seen. Scores are comparable only within one encoder file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from cxraug.data.preprocess import u8_to_tensor
from cxraug.errors import CheckpointError, CXRAugError, show_path

# names `--features auto`'s cached encoders: change it whenever train_encoder's defaults change, so that
# an encoder cached with an older recipe is retrained instead of reused
AUTO_RECIPE = "texture-s150-b32-w16"


class ConvEncoder(nn.Module):
    """[B,1,S,S] -> features [B, 4*width] (global average + max pooled last stage)."""

    def __init__(self, size: int = 64, width: int = 32):
        super().__init__()
        self.size, self.width = size, width
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, 2, 1), nn.GroupNorm(8, b), nn.SiLU()]
        self.net = nn.Sequential(*layers)  # S -> S/16
        self.dim = 8 * width
        self.trained_on: list[str] = []  # fingerprints of the training images (image_fingerprints)
        self.objective = "texture"

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.feature_map(x)
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)


class _Decoder(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        chans = [4 * width, 4 * width, 2 * width, width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.GroupNorm(8, b), nn.SiLU()]
        layers += [nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def image_fingerprints(images_u8: np.ndarray) -> list[str]:
    """One 16-hex SHA-256 digest per uint8 image [N,S,S] (its bytes): what an encoder was trained on."""
    return [hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest()[:16] for im in np.asarray(images_u8)]


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of x [B,1,S,S] with sigma [B] (pixels), reflect padding."""
    r = int(np.ceil(3 * float(sigma.max())))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t[None] / sigma.to(x.device)[:, None]) ** 2)
    g = g / g.sum(1, keepdim=True)  # [B, 2r+1]
    b, _, s, _ = x.shape
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect").view(1, b, s, s + 2 * r), g.view(b, 1, 1, -1), groups=b)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), g.view(b, 1, -1, 1), groups=b)
    return y.view(b, 1, s, s)


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of x [B,1,S,S] blurred (sigma 0.5-2 px) or shrunk by 2-6x and scaled back up."""
    b, s = x.shape[0], x.shape[-1]
    sigma = 0.5 + 1.5 * torch.rand(b, generator=gen)
    out = _blur(x, sigma)
    down = torch.rand(b, generator=gen) < 0.5
    if down.any():
        f = int(torch.randint(2, 7, (1,), generator=gen))
        small = F.interpolate(x[down], size=(s // f, s // f), mode="area")
        out[down] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    return out


def train_encoder(
    images: np.ndarray,
    *,
    steps: int = 150,
    batch_size: int = 32,
    width: int = 16,
    seed: int = 0,
    progress: bool = True,
    objective: str = "texture",
    texture_weight: float = 0.05,
    label_smoothing: float = 0.1,
) -> ConvEncoder:
    """Train on uint8 images [N,S,S] (real images disjoint from any evaluation reference).
    ``enc.trained_on`` holds their fingerprints.

    The defaults (150 steps of 32 images, width 16: 128-d features) are the size at which the
    texture objective ranks real < blurred, downsampled < another class with disjoint bootstrap CIs
    on real CXRs (tests/test_metric_sanity.py; BENCHMARKS.md section 7). Longer or wider training
    is not better here: the degraded-vs-real head keeps separating degraded images further along
    its direction of feature space (label smoothing bounds the head's logit, not the feature
    distance: the same logit is reached with a smaller head weight and a larger displacement), so
    at 400 steps and width 32 a blurred copy scored as far from real as another class."""
    if objective not in ("texture", "autoencoder"):
        raise CXRAugError(f"unknown encoder objective {objective!r}: texture | autoencoder")
    size = images.shape[-1]
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        enc, dec = ConvEncoder(size, width), _Decoder(width)
        head = nn.Linear(enc.dim, 1)  # degraded (0) vs real (1), on the pooled features
    opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters(), *head.parameters()], lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy (the cache is a read-only memmap)
    for _ in tqdm(range(steps), desc="encoder", disable=not progress, leave=False):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        x = u8_to_tensor(data[idx])
        shift = torch.randint(-4, 5, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        noisy = x + 0.1 * torch.randn(x.shape, generator=gen)
        h = enc.feature_map(noisy)
        loss = F.mse_loss(dec(h), x)
        if objective == "texture":
            both = torch.cat([x, degrade(x, gen)])  # [2B,1,S,S]: real, then degraded
            # smoothed targets (0.9 / 0.1) bound the logits, so that degraded images are pushed a limited
            # distance along one direction of feature space instead of ever farther from the real ones
            target = torch.cat([torch.full((len(x),), 1 - label_smoothing), torch.full((len(x),), label_smoothing)])
            loss = loss + texture_weight * F.binary_cross_entropy_with_logits(head(enc(both))[:, 0], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    enc.trained_on = image_fingerprints(images)
    enc.objective = objective
    return enc.eval()


def save_encoder(enc: ConvEncoder, dest: str | os.PathLike) -> Path:
    from cxraug.io import atomic_path

    meta = {
        "size": str(enc.size),
        "width": str(enc.width),
        "objective": getattr(enc, "objective", "autoencoder"),
        "trained_on": json.dumps(getattr(enc, "trained_on", [])),
    }
    with atomic_path(dest) as tmp:
        save_file(enc.state_dict(), str(tmp), metadata=meta)
    return Path(dest)


def load_encoder(path: str | os.PathLike) -> ConvEncoder:
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"encoder not found: {show_path(p)} (make one with `cxraug encoder train`)")
    try:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
        enc = ConvEncoder(int(meta["size"]), int(meta["width"]))
        enc.load_state_dict(load_file(str(p)))
        enc.trained_on = json.loads(meta.get("trained_on", "[]"))
        enc.objective = meta.get("objective", "autoencoder")
    except Exception as e:
        raise CheckpointError(f"{show_path(p)} is not a cxraug encoder ({e})") from e
    return enc.eval()


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
