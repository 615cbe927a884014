"""Decode any supported file (PNG/JPEG/BMP/TIFF/WebP/DICOM) to a grayscale float image in [0, 1].

Everything that can go wrong with a real collection becomes an :class:`ImageReadError` naming the
file: empty or truncated files, non-images with an image extension, images too small to be a
radiograph, decompression bombs, DICOMs without pixel data, FIFOs and devices (never opened, so a
named pipe in a data folder cannot hang a command).

Intensity scaling: 8-bit images are divided by 255. Images with more than 8 bits (16-bit PNG/TIFF,
DICOM) are windowed by their DICOM VOI LUT / window when they have a usable one (WindowWidth >= 1);
otherwise by a robust window, the [0.5, 99.5] percentiles of the pixel values, so that a few hot
pixels (burned-in labels, detector defects) cannot squash the anatomy into black as min-max would.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxraug.errors import ImageReadError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
DICOM_EXTS = {".dcm", ".dicom"}
SUPPORTED_EXTS = IMAGE_EXTS | DICOM_EXTS

MIN_SIDE = 16
#: Refuse images with more pixels than this (decompression-bomb guard); 10000x10000 is plenty for CXR.
MAX_PIXELS = 100_000_000
#: Percentiles of the robust window used for >8-bit images without a VOI LUT.
ROBUST_WINDOW = (0.5, 99.5)


def file_kind(mode: int) -> str:
    """'regular file', 'FIFO', 'character device', ... for an ``st_mode``."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):  # fmt: skip
        if test(mode):
            return name
    return "special file"


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file (after following symlinks); never opens the file."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_dicom(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTS:
        return True
    if not is_regular(p):  # opening a FIFO would block forever
        return False
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
        st = path.stat()
    except (OSError, ValueError) as e:
        raise ImageReadError(path, f"cannot open ({getattr(e, 'strerror', None) or e})") from e
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, f"not a regular file ({file_kind(st.st_mode)}), skipped")
    if st.st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        img = _read_dicom(path, max_pixels) if is_dicom(path) else _read_pil(path, max_pixels)
    except ImageReadError:
        raise
    except MemoryError as e:
        raise ImageReadError(path, "out of memory while decoding") from e
    except Exception as e:  # anything a decoder throws on a hostile file is still about this file
        raise ImageReadError(path, f"cannot decode ({type(e).__name__}: {e})") from e
    if img.ndim != 2:
        raise ImageReadError(path, f"decoded to a {img.ndim}-d array {img.shape}, expected one 2-d image")
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
        return robust_window(a)
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


def robust_window(a: np.ndarray, pct: tuple[float, float] = ROBUST_WINDOW) -> np.ndarray:
    """Map the [pct[0], pct[1]] percentiles of ``a`` to [0, 1] (clipped); min-max if they coincide."""
    lo, hi = (float(v) for v in np.percentile(a, pct))
    if hi <= lo:
        return _minmax(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _first(v) -> float | None:
    """First value of a (possibly multi-valued) DICOM number; None when absent or not a number."""
    if v is None:
        return None
    try:
        return float(v[0] if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue" else v)
    except (TypeError, ValueError, IndexError):
        return None


_MAGIC = {b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"II*\x00": "a TIFF image",
          b"MM\x00*": "a TIFF image", b"GIF8": "a GIF image", b"BM": "a BMP image"}  # fmt: skip


def _sniff_other(path: Path) -> str | None:
    """What a file named .dcm holds when pydicom found no pixels in it: another image format by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _read_dicom(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"corrupt DICOM ({e})") from e
    if "PixelData" not in ds:
        kind = _sniff_other(path)
        raise ImageReadError(path, f"not a DICOM file ({kind} by its content)" if kind else "DICOM has no pixel data")
    try:  # the header's size, before decoding: a deflated or compressed file of kilobytes can claim gigapixels
        rows, cols = int(_first(ds.get("Rows", 0)) or 0), int(_first(ds.get("Columns", 0)) or 0)
        frames = int(_first(ds.get("NumberOfFrames", 1)) or 1)
        spp = int(_first(ds.get("SamplesPerPixel", 1)) or 1)
    except (TypeError, ValueError, OverflowError) as e:
        raise ImageReadError(path, f"corrupt DICOM header ({e})") from e
    if rows * cols * max(frames, 1) * max(spp, 1) > max_pixels:
        raise ImageReadError(
            path, f"{cols}x{rows} pixels x {frames} frame(s) x {spp} sample(s) exceeds the limit of {max_pixels:,} "
            "(decompression-bomb guard)"
        )
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise ImageReadError(path, f"cannot decode DICOM pixel data ({e})") from e
    arr = np.asarray(arr)
    if frames > 1 or arr.ndim == (4 if spp > 1 else 3):  # [F, R, C(, S)]: the first frame
        arr = arr[0]
    if spp > 1:  # RGB/YBR (pydicom converts YBR to RGB): luminance, scaled by the stored bit depth
        if arr.ndim != 3:
            raise ImageReadError(path, f"DICOM says {spp} samples per pixel but decodes to shape {arr.shape}")
        bits = int(_first(ds.get("BitsStored", 8)) or 8)
        lum = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(lum / (2.0**bits - 1), 0.0, 1.0).astype(np.float32)
    if arr.ndim != 2:
        raise ImageReadError(path, f"DICOM pixel data has shape {arr.shape}; expected rows x columns")
    arr = apply_modality_lut(arr, ds)
    width = _first(ds.get("WindowWidth"))
    has_window = "WindowCenter" in ds and width is not None and width >= 1  # width < 1: no usable window
    if "VOILUTSequence" in ds or has_window:
        # prefer_lut: a VOI LUT sequence wins over the window (so a bogus window beside it is unused)
        out = _minmax(np.asarray(apply_voi_lut(arr, ds, index=0, prefer_lut=True), dtype=np.float64))
    else:
        out = robust_window(np.asarray(arr, dtype=np.float64))
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are white; flip so bone is bright as in MONOCHROME2
    return out


def dicom_patient_id(path: str | os.PathLike) -> str | None:
    import pydicom

    if not is_regular(path):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        pid = str(ds.get("PatientID", "")).strip()
        return pid or None
    except Exception:
        return None
