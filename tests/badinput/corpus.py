"""Generates the bad-input corpus (issue: reliability). Nothing binary is committed: tests build it.

``make_corpus(root)`` writes ``root/good/`` and ``root/bad/`` class folders plus an empty class
folder, and returns {file name: expected error fragment} for every bad file. ``bad/`` also holds a
FIFO, which readers must skip without opening (``N_SKIPPED``); ``good/`` holds ``N_GOOD`` images.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gray(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size, size)) * 255).astype(np.uint8)


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(b, format="PNG") if mode else Image.fromarray(arr).save(b, format="PNG")
    return b.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w: int = 20000, h: int = 20000) -> bytes:
    """A PNG whose header claims w x h pixels (decompression-bomb shape), with almost no data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def write_dicom(
    path: Path,
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    with_pixels: bool = True,
    bits: int = 16,
    window: tuple[float, float] | None = None,
    patient_id: str = "P0001",
) -> Path:
    """A minimal DICOM. ``arr``: [R, C] grayscale, [F, R, C] multi-frame, [R, C, 3] or [F, R, C, 3] RGB
    (uint8, ``photometric='RGB'``)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "DX"
    rgb = photometric == "RGB"
    frames = arr.shape[0] if arr.ndim == (4 if rgb else 3) else 1
    ds.Rows, ds.Columns = arr.shape[-3:-1] if rgb else arr.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
        bits = 8
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = arr.astype(np.uint16 if bits > 8 else np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def png16(arr: np.ndarray, path: Path) -> Path:
    """A 16-bit grayscale PNG holding ``arr`` exactly."""
    Image.fromarray(arr.astype(np.uint16)).save(path)
    return path


def write_rows(path: Path, header: list[str], rows: list[list], delimiter: str = ",", encoding: str = "utf-8") -> Path:
    import csv

    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def make_corpus(root: Path) -> dict[str, str]:
    """Write the corpus; return {file name: fragment expected in its error message}."""
    good, bad = root / "good", root / "bad"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    (root / "empty_class").mkdir()
    for i in range(3):
        Image.fromarray(gray(64, i)).save(good / f"ok-{i}.png")
    expected: dict[str, str] = {}
    full = png_bytes(gray(128, 9))
    (bad / "truncated.png").write_bytes(full[: len(full) // 2])
    expected["truncated.png"] = "truncated"
    jb = io.BytesIO()
    Image.fromarray(gray(128, 3)).save(jb, format="JPEG")
    (bad / "truncated.jpg").write_bytes(jb.getvalue()[: len(jb.getvalue()) // 3])
    expected["truncated.jpg"] = "truncated"
    (bad / "zero.png").write_bytes(b"")
    expected["zero.png"] = "empty file"
    (bad / "notes.png").write_text("this is not an image\n")
    expected["notes.png"] = "not an image"
    (bad / "tiny.png").write_bytes(png_bytes(np.zeros((1, 1), np.uint8)))
    expected["tiny.png"] = "1x1"
    (bad / "bomb.png").write_bytes(bomb_png())
    expected["bomb.png"] = "decompression-bomb"
    write_dicom(bad / "nopixels.dcm", np.zeros((32, 32)), with_pixels=False)
    expected["nopixels.dcm"] = "no pixel data"
    import pydicom

    bomb_dcm = write_dicom(bad / "bomb.dcm", np.zeros((16, 16)))
    ds = pydicom.dcmread(bomb_dcm)
    ds.Rows = ds.Columns = 20000  # the header claims 400 M pixels (a deflated file of kilobytes can hold them)
    ds.save_as(bomb_dcm)
    expected["bomb.dcm"] = "decompression-bomb"
    # Issue 32: files that `data split` and `train` used to leave out without a word.
    expected.update(add_round3_bad_files(bad))
    # Unusual but valid: these must load.
    rgba = np.dstack([gray(64, 4)] * 3 + [np.full((64, 64), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(good / "rgba.png")
    Image.fromarray(gray(64, 5)).convert("P").save(good / "palette.png")
    Image.fromarray(gray(64, 6).astype(np.uint16) * 257).save(good / "sixteen.png")
    write_dicom(good / "mono1.dcm", gray(64, 7).astype(np.uint16) * 16, photometric="MONOCHROME1", bits=12)
    name = os.fsdecode(b"caf\xe9-latin1.png")  # not valid UTF-8
    with open(os.path.join(os.fsencode(good), os.fsencode(name)), "wb") as f:
        f.write(png_bytes(gray(64, 8)))
    # Issue 14: multi-frame RGB DICOM, a DICOM window of width 0, a 16-bit PNG with one hot pixel.
    write_dicom(good / "rgb-2frames.dcm", np.stack([np.dstack([gray(64, 10)] * 3)] * 2), photometric="RGB")
    write_dicom(good / "window0.dcm", gray(64, 11).astype(np.uint16) * 16, bits=12, window=(2048, 0))
    hot = np.tile(np.linspace(1000, 5000, 64), (64, 1))
    hot[0, 0] = 65535
    png16(hot, good / "hot-pixel16.png")
    try:
        os.symlink(good, good / "loop")  # symlink loop
    except OSError:
        pass
    if hasattr(os, "mkfifo"):
        os.mkfifo(bad / "pipe.png")  # skipped (not a regular file), never opened: it would block forever
    return expected


def add_round3_bad_files(folder: Path) -> dict[str, str]:
    """Issue 32's unreadable files, written into ``folder``; returns {file name: expected reason fragment}."""
    import pydicom

    def dicom(name: str) -> Path:
        return write_dicom(folder / name, gray(64, 21).astype(np.uint16) * 16, bits=12)

    out: dict[str, str] = {}
    p = dicom("truncated.dcm")
    p.write_bytes(p.read_bytes()[:-3000])  # the pixel data cut short
    out["truncated.dcm"] = "pixel data is less than expected"
    for name, field, value, frag in (
        ("rows0.dcm", "Rows", 0, "'Rows' value of '0' is invalid"),
        ("photometric.dcm", "PhotometricInterpretation", "GARBAGE", "'Photometric Interpretation' value 'GARBAGE'"),
        ("bitsstored.dcm", "BitsStored", 40, "'Bits Stored' value of '40' is invalid"),
    ):
        ds = pydicom.dcmread(dicom(name))
        setattr(ds, field, value)
        ds.save_as(folder / name)
        out[name] = frag
    (folder / "png-named.dcm").write_bytes(png_bytes(gray(64, 22)))
    out["png-named.dcm"] = "not a DICOM file (a PNG image by its content)"
    (folder / "bomb9500.png").write_bytes(bomb_png(9500, 9500))  # 90 M pixels: PIL only warns below 179 M
    out["bomb9500.png"] = "decompression-bomb"
    return out


#: Images in ``good/`` that must load (3 plain, RGBA, palette, 16-bit, MONOCHROME1, non-UTF-8 name,
#: multi-frame RGB DICOM, window-width-0 DICOM, 16-bit with a hot pixel).
N_GOOD = 11
#: Files left out before decoding (the FIFO), where the platform has FIFOs.
N_SKIPPED = 1 if hasattr(os, "mkfifo") else 0
