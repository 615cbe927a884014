"""Copies of a radiograph as collections republish them: cropped, bordered, rescaled, labelled, re-windowed,
recompressed, rotated, flipped, alone or combined. Used to measure the duplicate detector
(:mod:`cxraug.data.dedupe`): tests/test_dedupe.py and benchmarks/dedupe_accuracy.py, and by anyone who wants to
check it on their own images.

Each transform takes a uint8 image [H,W] and a numpy ``Generator`` and returns a new uint8 image; the ranges are
those seen in public COVID collections that republish each other's images (other crops of up to a quarter per
side, letterboxing, burnt-in labels and side markers, other windows, JPEG recompression)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def crop(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to 25 % off each side, independently."""
    h, w = im.shape
    f = rng.uniform(0, 0.25, 4)
    return im[int(f[0] * h) : h - int(f[1] * h), int(f[2] * w) : w - int(f[3] * w)]


def border(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black or white bars: letterboxed to a square, or 3-20 % added on each side."""
    h, w = im.shape
    v = int(rng.choice([0, 255]))
    if rng.random() < 0.5:
        s = max(h, w)
        out = np.full((s, s), v, np.uint8)
        out[(s - h) // 2 : (s - h) // 2 + h, (s - w) // 2 : (s - w) // 2 + w] = im
        return out
    t, b, left, r = (int(x) for x in rng.uniform(0.03, 0.2, 4) * [h, h, w, w])
    return cv2.copyMakeBorder(im, t, b, left, r, cv2.BORDER_CONSTANT, value=v)


def rescale(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resized by 0.6-1.5, the aspect ratio changed by up to 25 %."""
    h, w = im.shape
    s, a = rng.uniform(0.6, 1.5), rng.uniform(0.8, 1.25)
    size = (max(16, round(w * s * a)), max(16, round(h * s)))
    return cv2.resize(im, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def text(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three burnt-in labels and a side marker (a white box with an L)."""
    im = im.copy()
    h, w = im.shape
    for _ in range(int(rng.integers(1, 4))):
        s = "".join(rng.choice(list("ABCDEFGHRL0123456789 "), int(rng.integers(1, 12))))
        cv2.putText(im, s, (int(rng.uniform(0, 0.6) * w), int(rng.uniform(0.08, 1) * h)), cv2.FONT_HERSHEY_SIMPLEX,
                    rng.uniform(0.3, 1.0) * w / 256, int(rng.choice([0, 255])), max(1, w // 200))  # fmt: skip
    x, y = int(rng.uniform(0.7, 0.9) * w), int(rng.uniform(0.05, 0.3) * h)
    cv2.rectangle(im, (x, y), (x + w // 14, y + h // 12), 255, -1)
    cv2.putText(im, "L", (x + 2, y + h // 14), cv2.FONT_HERSHEY_SIMPLEX, w / 500, 0, 2)
    return im


def window(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another window (levels 0-40 and 200-255 stretched to black and white) and gamma 0.5-2."""
    g, lo, hi = rng.uniform(0.5, 2.0), rng.uniform(0, 40), rng.uniform(200, 255)
    x = np.clip((im.astype(np.float32) - lo) / (hi - lo), 0, 1) ** g
    return np.rint(x * 255).astype(np.uint8)


def jpeg(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Recompressed as JPEG, quality 30-90."""
    _, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def rotate(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated by up to 5 degrees either way, the corners filled black or white."""
    h, w = im.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-5, 5), 1.0)
    return cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=int(rng.choice([0, 255])))


def flip(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flipped left-right."""
    return cv2.flip(im, 1)


TRANSFORMS: dict[str, Transform] = {"crop": crop, "border": border, "rescale": rescale, "text": text,
                                    "window": window, "jpeg": jpeg, "rotate": rotate, "flip": flip}  # fmt: skip
ORDER = ("rotate", "crop", "rescale", "window", "text", "border", "flip", "jpeg")  # the order they combine in


def combined(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two or more of the transforms, each applied with probability one half (at least two), in :data:`ORDER`."""
    pick = rng.random(len(ORDER)) < 0.5
    while pick.sum() < 2:
        pick[rng.integers(len(ORDER))] = True
    for name, p in zip(ORDER, pick):
        if p:
            im = TRANSFORMS[name](im, rng)
    return im


def every(im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All eight transforms, in :data:`ORDER` (harsher than most republished copies)."""
    for name in ORDER:
        im = TRANSFORMS[name](im, rng)
    return im


KINDS: dict[str, Transform] = {**TRANSFORMS, "combined": combined, "all": every}


def make_copy(im: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A copy of the uint8 image ``im`` made by transform ``kind`` (a key of :data:`KINDS`), reproducible by seed."""
    return KINDS[kind](np.ascontiguousarray(im), np.random.default_rng(seed))
