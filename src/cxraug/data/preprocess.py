"""Preprocessing: grayscale float [0,1] -> (CLAHE) -> resize -> uint8; tensors in [-1, 1]."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from cxraug.errors import ConfigError

SIZES = (64, 96, 128, 256, 299)


@dataclass(frozen=True)
class Preprocess:
    """Settings of the preprocessing pipeline; part of the cache key.

    size: output side in pixels (square). resize: ``pad`` keeps the aspect ratio and pads with
    black, ``crop`` keeps it and centre-crops, ``direct`` stretches. CLAHE follows Nguyen (seed 002).
    """

    size: int = 64
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    resize: str = "pad"

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"size must be within 16..1024, got {self.size}")
        if self.resize not in ("pad", "crop", "direct"):
            raise ConfigError(f"resize must be pad, crop or direct, got {self.resize!r}")
        # OpenCV divides by the tile count: a 0 tile grid kills the process with SIGFPE.
        if not 1 <= self.clahe_tile <= 64:
            raise ConfigError(f"CLAHE tile grid must be within 1..64, got {self.clahe_tile}")
        if not np.isfinite(self.clahe_clip) or self.clahe_clip <= 0:
            raise ConfigError(f"CLAHE clip limit must be a positive number, got {self.clahe_clip}")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return preprocess(img, self)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def apply_clahe(u8: np.ndarray, clip: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) on a uint8 image."""
    if tile < 1 or not clip > 0:  # checked here too: OpenCV's SIGFPE on a 0 grid cannot be caught
        raise ConfigError(f"CLAHE needs tile >= 1 and clip > 0, got tile={tile}, clip={clip}")
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile)).apply(u8)


def resize(u8: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    h, w = u8.shape
    if mode == "direct":
        return _resize(u8, size, size)
    if mode == "crop":
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        return _resize(u8[y : y + s, x : x + s], size, size)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size), np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    out[y : y + nh, x : x + nw] = _resize(u8, nh, nw)
    return out


def _resize(u8: np.ndarray, h: int, w: int) -> np.ndarray:
    if (h, w) == u8.shape:
        return u8
    interp = cv2.INTER_AREA if h < u8.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(u8, (w, h), interpolation=interp)


def preprocess(img: np.ndarray, p: Preprocess) -> np.ndarray:
    """float [0,1] HxW -> uint8 size x size."""
    u8 = to_uint8(img)
    if p.clahe:
        u8 = apply_clahe(u8, p.clahe_clip, p.clahe_tile)
    return resize(u8, p.size, p.resize)


def u8_to_tensor(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W] -> float32 [..., 1, H, W] in [-1, 1]."""
    t = u8 if isinstance(u8, torch.Tensor) else torch.from_numpy(np.array(u8, dtype=np.uint8, copy=True))
    return (t.float().div(127.5).sub(1.0)).unsqueeze(-3)


def tensor_to_u8(x: torch.Tensor) -> np.ndarray:
    """float [-1,1] [N,1,H,W] or [1,H,W] -> uint8 numpy [N,H,W] / [H,W]."""
    x = x.detach().float().cpu().clamp(-1, 1)
    return ((x + 1) * 127.5).round().to(torch.uint8).squeeze(-3).numpy()
