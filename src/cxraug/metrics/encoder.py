"""A feature extractor cxraug trains itself on real CXRs, so every metric works fully offline.

A small convolutional autoencoder (denoising, with random shifts) trained on the user's real
images; its encoder's pooled activations are the features (``encoder:PATH``). Scores from it are
comparable only with other scores from the same encoder file — the report always names it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from cxraug.data.preprocess import u8_to_tensor
from cxraug.errors import CheckpointError, show_path


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


def train_encoder(
    images: np.ndarray, steps: int = 400, batch_size: int = 64, width: int = 32, seed: int = 0, progress: bool = True
) -> ConvEncoder:
    """Train on uint8 images [N,S,S] (the real training split). ~1 min on 2 CPU cores at 64 px."""
    torch.manual_seed(seed)
    size = images.shape[-1]
    enc, dec = ConvEncoder(size, width), _Decoder(width)
    opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy (the cache is a read-only memmap)
    for _ in tqdm(range(steps), desc="encoder", disable=not progress, leave=False):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        x = u8_to_tensor(data[idx])
        shift = torch.randint(-4, 5, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        noisy = x + 0.1 * torch.randn(x.shape, generator=gen)
        loss = F.mse_loss(dec(enc.feature_map(noisy)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return enc.eval()


def save_encoder(enc: ConvEncoder, dest: str | os.PathLike) -> Path:
    from cxraug.io import atomic_path

    with atomic_path(dest) as tmp:
        save_file(enc.state_dict(), str(tmp), metadata={"size": str(enc.size), "width": str(enc.width)})
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
    except Exception as e:
        raise CheckpointError(f"{show_path(p)} is not a cxraug encoder ({e})") from e
    return enc.eval()


def file_digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
