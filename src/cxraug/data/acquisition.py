"""Acquisition features: what an image's file and pixels say about how it was acquired, not about anatomy.

DeGrave et al. (Nat. Mach. Intell. 2021, "AI for radiographic COVID-19 detection selects shortcuts over
signal") showed that classifiers trained on collections assembled from different sources learn the acquisition
(image size, borders, text markers, processing) instead of the disease. :func:`acquisition_features` describes
every image by properties that carry no anatomy, so that :func:`cxraug.classify.acquisition.acquisition_cue_check`
can test whether they alone tell the classes apart, also inside one folder-per-class collection.

From the file's header (:func:`image_header`, no pixel is decoded): native height and width, aspect ratio, log
pixel count, bit depth, colour channels and the file format (one-hot). From the preprocessed 8-bit images (the
study's cache, all at one size):

- ``border_fraction``: the share of the image area taken by near-constant black or white lines at its edges
  (letterboxing, padding, collimator masks);
- ``sharpness``: the variance of the Laplacian (Pech-Pacheco et al., "Diatom autofocusing in brightfield
  microscopy: a comparative study", ICPR 2000), inside the border;
- ``noise``: the standard deviation of the noise from the Laplacian-difference operator of Immerkær ("Fast noise
  variance estimation", CVIU 1996), averaged over the flatter half of the pixels as Tai and Yang propose
  ("A fast method for image noise estimation using Laplacian operator and adaptive edge detection", ISCCSP 2008).

Keeping the disease out. The phantoms' classes differ in anatomy (ground-glass opacities, lobar consolidation),
and features measured on the preprocessed pixels can see it. Measured on 150 phantoms per class saved at 256 px,
preprocessed to 64 px (single-feature AUC against ``normal``; two sets of normals give 0.50-0.54):

- noise: Immerkær's mean over the whole image 0.55 (covid) / 0.66 (pneumonia), with Tai and Yang's 10 % edge
  cut 0.67 / 0.66, over the flatter half (used) 0.51 / 0.53. The opacities' texture and the consolidation's
  fissure are structure, which the strongest-gradient half holds. The median (MAD) of the residual was as
  disease-blind, but on 8-bit images downsampled from large originals it takes one integer value for all images;
  the trimmed mean stays continuous;
- sharpness: the Laplacian variance 0.61 / 0.54 (0.52 / 0.51 for 1024-px phantoms), a weak dependence that
  remains: an opacity lowers the contrast of the edges it covers (the diaphragm). The alternatives tried depend on
  the disease more: contrast-free ratios of band energies, locally normalised Laplacians and edge widths (up to
  0.95), robust quantiles of the Laplacian (up to 0.71), its variance away from the strongest edges (up to 0.86).
"""

from __future__ import annotations

import math
import os
import re
import warnings

import cv2
import numpy as np

from cxraug.data.imageio import is_dicom, is_regular
from cxraug.errors import CXRAugError

#: File formats with their own one-hot column; any other readable format counts as ``other``.
FORMATS = ("png", "jpeg", "dicom", "tiff", "bmp", "webp", "other")
#: A line at the edge is border when this share of its pixels lies within ``BORDER_TOL`` grey levels of 0 or 255.
BORDER_SHARE = 0.98
BORDER_TOL = 12
#: Immerkær's 3x3 noise operator: the difference of two Laplacians; white noise of std s gives a response of std 6 s.
IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)

_PIL_FORMATS = {"png": "png", "jpeg": "jpeg", "mpo": "jpeg", "tiff": "tiff", "bmp": "bmp", "webp": "webp"}
_MODE_BITS = {"1": 1.0, "I": 32.0, "F": 32.0}
_LABELS = {
    "native_height": "native height",
    "native_width": "native width",
    "aspect_ratio": "aspect ratio",
    "log_pixels": "pixel count",
    "bit_depth": "bit depth",
    "channels": "colour channels",
    "border_fraction": "border (letterbox) fraction",
    "sharpness": "sharpness",
    "noise": "noise level",
}


def feature_names() -> list[str]:
    """The columns of :func:`acquisition_features`, in order."""
    return [
        "native_height", "native_width", "aspect_ratio", "log_pixels", "bit_depth", "channels",
        *(f"format_{f}" for f in FORMATS), "border_fraction", "sharpness", "noise",
    ]  # fmt: skip


def feature_label(name: str) -> str:
    """Readable name of a feature column for reports (``format_png`` -> ``PNG file format``)."""
    if name.startswith("format_"):
        f = name.removeprefix("format_")
        return f"{f.upper() if f != 'other' else 'other'} file format"
    return _LABELS.get(name, name.replace("_", " "))


def _unknown() -> dict:
    return {"height": math.nan, "width": math.nan, "bit_depth": math.nan, "channels": math.nan, "format": "unknown"}


def image_header(path: str | os.PathLike) -> dict:
    """Native size, bit depth, channels and format of an image file, from its header where the format allows.

    Returns ``{"height", "width", "bit_depth", "channels"}`` (floats, NaN when unknown) and ``"format"`` (``png``,
    ``jpeg``, ``dicom``, ``tiff``, ``bmp``, ``webp``, another PIL format name, or ``unknown``). PNG/JPEG/...
    are opened with PIL, which reads the header and decodes no pixel; DICOM with pydicom's
    ``dcmread(stop_before_pixels=True)`` (Rows, Columns, BitsStored, SamplesPerPixel). Never raises and never
    writes: a missing, unreadable, truncated or non-image file (or a FIFO, which is never opened) gives NaNs
    and ``unknown``.
    """
    try:
        if not is_regular(path):
            return _unknown()
        return _dicom_header(path) if is_dicom(path) else _pil_header(path)
    except Exception:  # a header reader's error on a hostile file only means: unknown
        return _unknown()


def _pil_header(path: str | os.PathLike) -> dict:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a decompression-bomb warning is about decoding, which this never does
        with Image.open(path) as im:
            w, h = im.size
            mode, fmt, bands = im.mode, str(im.format or "").lower(), len(im.getbands())
    if mode.startswith("I;16") or (mode == "I" and fmt == "png"):  # a PNG holds at most 16 bits
        bits = 16.0
    else:
        bits = _MODE_BITS.get(mode, 8.0)
    if min(w, h) <= 0:
        return _unknown()
    return {"height": float(h), "width": float(w), "bit_depth": bits, "channels": float(bands),
            "format": _PIL_FORMATS.get(fmt, fmt or "unknown")}  # fmt: skip


def _dicom_header(path: str | os.PathLike) -> dict:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)

    def num(key: str) -> float:
        v = ds.get(key)
        try:
            v = float(v[0] if type(v).__name__ == "MultiValue" else v)
        except (TypeError, ValueError, IndexError):
            return math.nan
        return v if math.isfinite(v) and v > 0 else math.nan

    rows, cols = num("Rows"), num("Columns")
    if math.isnan(rows) or math.isnan(cols):
        return _unknown()
    spp = num("SamplesPerPixel")
    return {"height": rows, "width": cols, "bit_depth": num("BitsStored"),
            "channels": 1.0 if math.isnan(spp) else spp, "format": "dicom"}  # fmt: skip


def border_lines(u8: np.ndarray, share: float = BORDER_SHARE, tol: int = BORDER_TOL) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): how many lines at each edge of a uint8 image are near-constant black or white.

    A line is border when ``share`` of its pixels lie within ``tol`` grey levels of 0, or of 255. Rows are
    peeled first, then columns within the rows left, so black bars above and below do not make every column
    look like border."""
    a = np.asarray(u8)

    def is_border(line: np.ndarray) -> bool:
        n = line.size
        return bool(n) and ((line <= tol).sum() >= share * n or (line >= 255 - tol).sum() >= share * n)

    h, w = a.shape
    top = 0
    while top < h and is_border(a[top]):
        top += 1
    if top == h:  # all border (a blank image)
        return h, 0, w, 0
    bottom = 0
    while is_border(a[h - 1 - bottom]):
        bottom += 1
    inner = a[top : h - bottom]
    left = 0
    while left < w and is_border(inner[:, left]):
        left += 1
    if left == w:
        return top, bottom, w, 0
    right = 0
    while is_border(inner[:, w - 1 - right]):
        right += 1
    return top, bottom, left, right


def image_quality(u8: np.ndarray) -> tuple[float, float, float]:
    """(border fraction, sharpness, noise) of one uint8 image; sharpness and noise are measured inside the border
    and are NaN when less than 8x8 pixels are left. See the module docstring for the estimators."""
    a = np.asarray(u8)
    h, w = a.shape
    top, bottom, left, right = border_lines(a)
    inner_h, inner_w = max(h - top - bottom, 0), max(w - left - right, 0)
    border = 1.0 - inner_h * inner_w / float(h * w)
    if inner_h < 8 or inner_w < 8:
        return border, math.nan, math.nan
    f = a[top : h - bottom, left : w - right].astype(np.float32)
    lap = cv2.Laplacian(f, cv2.CV_32F, ksize=1)[1:-1, 1:-1]
    sharp = float(lap.var())
    resid = np.abs(cv2.filter2D(f, cv2.CV_32F, IMMERKAER)[1:-1, 1:-1])
    gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    grad = (np.abs(gx) + np.abs(gy))[1:-1, 1:-1]
    flat = grad <= np.median(grad)  # the flatter half: noise, not the edges and texture of anatomy or disease
    noise = float(math.sqrt(math.pi / 2) * resid[flat].mean() / 6.0)
    return border, sharp, noise


def _in_memory(path: str) -> bool:
    """A sample decoded from something other than a file of its own (``phantom://normal/3``, ``xrv://...``)."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", str(path)) is not None and not os.path.exists(path)


def acquisition_features(paths: list[str], images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Acquisition features of a collection: a float64 matrix ``[N, F]`` and its ``F`` column names.

    ``paths[i]`` is the file image ``i`` was read from, ``images`` the preprocessed uint8 ``[N, S, S]`` array
    (a study's cache). Columns (:func:`feature_names`): native height, width, aspect ratio (width / height),
    log10 pixel count, bit depth, channels and the one-hot file format from the file header
    (:func:`image_header`); border fraction, sharpness and noise from the preprocessed image
    (:func:`image_quality`). A sample with no file of its own (an in-memory phantom's ``phantom://normal/3``)
    takes the preprocessed image's shape as native size, with unknown bit depth, channels and format; a file
    that is missing or unreadable has an unknown header. Unknown values are NaN. Nothing is written.
    """
    images = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CXRAugError(f"acquisition features need uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
    if len(paths) != len(images):
        raise CXRAugError(f"acquisition features: {len(paths)} paths for {len(images)} images")
    names = feature_names()
    out = np.full((len(paths), len(names)), np.nan)
    fmt0 = names.index(f"format_{FORMATS[0]}")
    for i, p in enumerate(paths):
        img = np.asarray(images[i])
        if _in_memory(p):
            hdr = {**_unknown(), "height": float(img.shape[0]), "width": float(img.shape[1])}
        else:
            hdr = image_header(p)
        hh, ww = hdr["height"], hdr["width"]
        out[i, :6] = (hh, ww, ww / hh, math.log10(hh * ww), hdr["bit_depth"], hdr["channels"])
        fmt = hdr["format"]
        out[i, fmt0 : fmt0 + len(FORMATS)] = 0.0  # an unknown format: no column set
        if fmt != "unknown":
            out[i, fmt0 + (FORMATS.index(fmt) if fmt in FORMATS else len(FORMATS) - 1)] = 1.0
        out[i, -3:] = image_quality(img)
    return out, names
