"""Procedural chest X-ray phantoms: the embedded, offline default data set.

Each phantom is built on a real lung segmentation from torchxrayvision's wheel (517 v7labs lung
masks ship inside it), then adds what a frontal radiograph shows: soft-tissue body outline and
shoulders, dark aerated lungs with vascular markings, spine and mediastinum, heart shadow,
posterior ribs and clavicles, diaphragm domes (the lower lung border over the bright abdomen), and
quantum noise. Three classes:

- ``normal``;
- ``covid``: bilateral, peripheral, lower-zone ground-glass opacities (hazy, vessels still seen);
- ``pneumonia``: lobar consolidation — dense opacity filling one lobe, bounded by a fissure.

Deterministic by seed, any size 16..1024 (intended 64..299). Not a substitute for real data:
it makes the demo and the tests run offline with classes a classifier and a GAN can learn.
"""

from __future__ import annotations

import functools
import os
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from cxraug.data.sample import Collection, Sample

CLASSES = ("normal", "covid", "pneumonia")
_MASK_RES = 128


@functools.cache
def _mask_zip() -> tuple[zipfile.ZipFile, tuple[str, ...], threading.Lock]:
    """torchxrayvision's mask archive, opened once per process (reading its directory again for every mask was
    a sixth of a mask's time), its members, and a lock: a ZipFile reads through one shared file handle."""
    import torchxrayvision as xrv

    z = zipfile.ZipFile(os.path.join(os.path.dirname(xrv.__file__), "data", "semantic_masks_v7labs_lungs.zip"))
    return z, tuple(n for n in z.namelist() if not n.endswith("/")), threading.Lock()


# A forked child (a DataLoader worker, a multiprocessing pool) must not read through its parent's handle: the
# file offset is shared between processes, so concurrent reads corrupt each other, and a lock held at the fork
# stays held in the child. The child opens the archive again.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mask_zip.cache_clear)


def n_masks() -> int:
    return len(_mask_zip()[1])


def _mask_png(index: int) -> bytes:
    z, names, lock = _mask_zip()
    with lock:
        return z.read(names[index % len(names)])


@functools.lru_cache(maxsize=1024)
def lung_mask(index: int) -> np.ndarray | None:
    """Mask ``index`` cropped to the lungs' bounding box, ``_MASK_RES``² float32, or None when the
    mask is unusable (empty, or not two lungs of plausible size)."""
    png = np.frombuffer(_mask_png(index), np.uint8)
    m = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) > 127  # the masks are 8-bit grey PNGs: as PIL reads them
    if m.sum() < 100:
        return None
    small = cv2.resize(m.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(small, connectivity=8)
    areas = sorted(stats[1:, cv2.CC_STAT_AREA], reverse=True)
    if n < 3 or areas[1] < 0.35 * areas[0]:
        return None
    keep = np.isin(lab, 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:2])
    ys, xs = np.nonzero(keep)
    crop = keep[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    h, w = crop.shape
    if not 0.5 < h / w < 1.6:
        return None
    return cv2.resize(crop, (_MASK_RES, _MASK_RES), interpolation=cv2.INTER_LINEAR)


def pick_mask(rng: np.random.Generator) -> np.ndarray:
    """A usable mask chosen by ``rng``: a random start, then the next usable one (decoded lazily)."""
    n = n_masks()
    start = int(rng.integers(n))
    for k in range(n):
        m = lung_mask((start + k) % n)
        if m is not None:
            return m
    raise RuntimeError("no usable lung mask in torchxrayvision's mask archive")


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigmaX=max(sigma, 0.3))


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    n = _blur(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return n / (n.std() + 1e-6)


def phantom(cls: str = "normal", size: int = 128, seed: int = 0) -> np.ndarray:
    """One phantom radiograph: float32 ``size x size`` in [0, 1]."""
    if cls not in CLASSES:
        raise ValueError(f"phantom class must be one of {CLASSES}, got {cls!r}")
    rng = np.random.default_rng([seed, CLASSES.index(cls)])
    S = size
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S  # [S,S] each, in [0,1)

    # Lungs: a real segmentation placed in a jittered box.
    m = pick_mask(rng)
    top, left = 0.12 + rng.uniform(-0.03, 0.03), 0.12 + rng.uniform(-0.03, 0.03)
    lh, lw = 0.66 + rng.uniform(-0.05, 0.05), 0.76 + rng.uniform(-0.05, 0.05)
    y0, x0, h, w = int(top * S), int(left * S), max(4, int(lh * S)), max(4, int(lw * S))
    lung = np.zeros((S, S), np.float32)
    lung[y0 : y0 + h, x0 : x0 + w] = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)[: S - y0, : S - x0]
    lung = _blur(lung, S / 160)
    right_lung = lung * (xx < 0.5)  # image left = patient's right
    left_lung = lung * (xx >= 0.5)

    # Body: thorax ellipse + shoulders, soft tissue over a dark background.
    cx = 0.5 + rng.uniform(-0.02, 0.02)
    body = ((xx - cx) / 0.47) ** 2 + ((yy - 0.62) / 0.62) ** 2 < 1.0
    shoulders = (yy < 0.2) & (np.abs(xx - cx) < 0.5)
    img = 0.08 + 0.42 * _blur((body | shoulders).astype(np.float32), S / 40)

    # Spine and mediastinum (bright midline), heart (bright, lower, patient's left).
    spine = np.exp(-(((xx - cx) / 0.045) ** 2)) * (yy > 0.05)
    heart_x, heart_y = cx + 0.07 + rng.uniform(-0.02, 0.02), 0.57 + rng.uniform(-0.03, 0.03)
    heart = ((xx - heart_x) / (0.17 + rng.uniform(-0.02, 0.03))) ** 2 + ((yy - heart_y) / 0.14) ** 2 < 1
    mediastinum = 0.1 * spine * (1 - 0.4 * yy) + 0.18 * _blur(heart.astype(np.float32), S / 30)

    # Aerated lungs: dark, with vascular markings denser towards the hila.
    hilum = np.exp(-(((xx - cx) / 0.18) ** 2 + ((yy - 0.45) / 0.25) ** 2))
    vessels = np.abs(_smooth_noise(rng, S, S / 90)) * (0.03 + 0.05 * hilum)
    img = img - 0.34 * lung + lung * vessels + mediastinum * (1 - 0.2 * lung)

    # Posterior ribs (curved bands over the lungs) and clavicles.
    ribs = np.zeros((S, S), np.float32)
    spacing = 0.062 + rng.uniform(-0.005, 0.005)
    for k in range(10):
        yk = 0.12 + k * spacing - 0.25 * np.abs(xx - cx) + 0.9 * (xx - cx) ** 2  # rises, then falls laterally
        ribs += np.exp(-(((yy - yk) / 0.017) ** 2)) * (0.6 + 0.4 * np.exp(-(((yy - yk + 0.012) / 0.006) ** 2)))
    for side in (-1, 1):
        yc = 0.13 + 0.12 * np.abs(xx - cx) + rng.uniform(-0.01, 0.01)
        ribs += 1.5 * np.exp(-(((yy - yc) / 0.012) ** 2)) * (np.sign(xx - cx) == side) * (np.abs(xx - cx) < 0.35)
    img += 0.045 * _blur(ribs, S / 256) * _blur((lung > 0.05).astype(np.float32) + 0.3 * body, S / 80)

    # Pathology.
    if cls == "covid":  # bilateral, peripheral, lower-zone ground-glass
        gg = np.zeros((S, S), np.float32)
        for side_mask, sx in ((right_lung, -1), (left_lung, 1)):
            for _ in range(int(rng.integers(2, 5))):
                bx = cx + sx * rng.uniform(0.22, 0.33)  # peripheral: near the lateral lung edge
                by = rng.uniform(0.48, 0.72)  # lower zones
                s = rng.uniform(0.06, 0.1)
                gg += rng.uniform(0.6, 1.0) * np.exp(-(((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s))) * side_mask
        texture = 0.75 + 0.25 * _smooth_noise(rng, S, S / 70)
        img += 0.22 * np.clip(gg, 0, 1.2) * texture
    elif cls == "pneumonia":  # lobar consolidation in one lung, sharp at the fissure
        side_mask = right_lung if rng.random() < 0.6 else left_lung
        lower = rng.random() < 0.7
        slope = rng.uniform(0.3, 0.6) * (1 if side_mask is right_lung else -1)
        fissure = yy - (0.42 + rng.uniform(-0.04, 0.04) + slope * (xx - cx))
        lobe = (fissure > 0) if lower else (fissure < 0)
        lobe = _blur(lobe.astype(np.float32), S / 200) * side_mask
        bronchogram = np.clip(_smooth_noise(rng, S, S / 100), -1, 1) * 0.04
        img += (0.36 + bronchogram) * lobe

    # Acquisition: exposure, gamma, quantum noise.
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15) * rng.uniform(0.9, 1.05) + rng.uniform(-0.03, 0.03)
    img += rng.normal(0, 0.015, (S, S)).astype(np.float32) + 0.01 * _smooth_noise(rng, S, 1.0)
    return np.clip(img, 0, 1).astype(np.float32)


def phantom_collection(counts: dict[str, int], size: int = 64, seed: int = 0) -> Collection:
    """In-memory collection: ``counts`` maps class name -> number of images."""
    classes = [c for c in CLASSES if c in counts]
    unknown = set(counts) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown phantom classes {sorted(unknown)}; choose from {CLASSES}")
    samples = []
    for i, c in enumerate(classes):
        for k in range(counts[c]):
            lab = np.zeros(len(classes), np.float32)
            lab[i] = 1
            pid = f"phantom-{c}-{seed}-{k:05d}"
            samples.append(Sample(phantom(c, size, seed * 1_000_003 + k), lab, pid, "phantom", f"phantom://{c}/{k}"))
    return Collection(samples, classes, root="phantom")


def write_phantom_folder(out: str | os.PathLike, counts: dict[str, int], *, size: int = 64, seed: int = 0) -> Path:
    """Write a folder-per-class PNG collection (``out/<class>/<class>-00000.png``)."""
    out = Path(out)
    coll = phantom_collection(counts, size, seed)
    for s in coll.samples:
        c = coll.class_names[s.label_index]
        (out / c).mkdir(parents=True, exist_ok=True)
        k = int(s.path.rsplit("/", 1)[1])
        Image.fromarray(np.rint(s.image * 255).astype(np.uint8)).save(out / c / f"{c}-{k:05d}.png")
    return out
