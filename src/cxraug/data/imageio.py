"""Decode any supported file (PNG/JPEG/BMP/TIFF/WebP/DICOM) to a grayscale float image in [0, 1].

Everything that can go wrong with a real collection becomes an :class:`ImageReadError` naming the
file: empty or truncated files, non-images with an image extension, images too small to be a
radiograph, decompression bombs, DICOMs without pixel data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxraug.errors import ImageReadError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DICOM_EXTS = {".dcm", ".dicom"}
SUPPORTED_EXTS = IMAGE_EXTS | DICOM_EXTS

MIN_SIDE = 16
#: Refuse images with more pixels than this (decompression-bomb guard); 10000x10000 is plenty for CXR.
MAX_PIXELS = 100_000_000


def is_dicom(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTS:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return a 2-D float32 array in [0, 1]; raise :class:`ImageReadError` on any bad input."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageReadError(path, f"cannot open ({e.strerror or e})") from e
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    img = _read_dicom(path) if is_dicom(path) else _read_pil(path, max_pixels)
    h, w = img.shape
    if min(h, w) < MIN_SIDE:
        raise ImageReadError(path, f"image is {w}x{h}, smaller than {MIN_SIDE} px: not a usable radiograph")
    if not np.isfinite(img).all():
        raise ImageReadError(path, "pixel values are not finite")
    return img


def _read_pil(path: Path, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageReadError(
                        path, f"{w}x{h} pixels exceeds the limit of {max_pixels:,} (decompression-bomb guard)"
                    )
                im.load()
                return _pil_to_gray(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError as e:
        raise ImageReadError(path, "not an image file (unrecognised format)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(path, "image too large (decompression-bomb guard)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"corrupt or truncated image ({e})") from e


def _pil_to_gray(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        return _minmax(a)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Transparent pixels carry no X-ray signal: flatten onto black (air) and drop alpha.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, rgba)
    if mode == "1":
        im = im.convert("L")
    a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return a


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"corrupt DICOM ({e})") from e
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({e})") from e
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB DICOM (rare): luminance
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif arr.ndim == 3:  # multi-frame: take the first frame
        arr = arr[0]
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else arr
    out = _minmax(np.asarray(arr, dtype=np.float64))
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are white; flip so bone is bright as in MONOCHROME2
    return out


def dicom_patient_id(path: str | os.PathLike) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        pid = str(ds.get("PatientID", "")).strip()
        return pid or None
    except Exception:
        return None
