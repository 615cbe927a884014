"""The acquisition-cue (shortcut) check, on phantom collections written to disk and read back as the study does.

Each collection differs between its classes in one known way (saved size, file format, letterbox) or in none but
the disease, so the check's verdict has a constructed ground truth. DeGrave et al., Nat. Mach. Intell. 2021.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image

from conftest import snapshot
from cxraug.classify.acquisition import acquisition_cue_check
from cxraug.data import Preprocess, phantom
from cxraug.data.acquisition import (
    FORMATS,
    acquisition_features,
    border_lines,
    feature_names,
    image_header,
    image_quality,
)
from cxraug.data.cache import build_cache
from cxraug.data.source import open_source
from cxraug.errors import CXRAugError

N = 60  # images per class
SIZE_FEATURES = {"native_height", "native_width", "aspect_ratio", "log_pixels"}


def _u8(img: np.ndarray) -> np.ndarray:
    return np.rint(img * 255).astype(np.uint8)


def _letterbox(u8: np.ndarray, inner: int) -> np.ndarray:
    """The image shrunk to ``inner`` px and centred on a black canvas of its own size."""
    s = u8.shape[0]
    out = np.zeros_like(u8)
    o = (s - inner) // 2
    out[o : o + inner, o : o + inner] = np.asarray(Image.fromarray(u8).resize((inner, inner), Image.LANCZOS))
    return out


@pytest.fixture(scope="module")
def phantoms() -> dict[str, list[np.ndarray]]:
    """Phantoms from the project's generator, uint8: the same seeds, saved at different sizes."""
    return {
        "normal256": [_u8(phantom("normal", 256, k)) for k in range(N)],
        "covid256": [_u8(phantom("covid", 256, k)) for k in range(N)],
        "covid192": [_u8(phantom("covid", 192, k)) for k in range(N)],
        "covid320": [_u8(phantom("covid", 320, k)) for k in range(N // 2)],
        "pneumonia256": [_u8(phantom("pneumonia", 256, k)) for k in range(N)],
    }


def _write(root, cls: str, images: list[np.ndarray], fmt: str = "png") -> None:
    (root / cls).mkdir(parents=True, exist_ok=True)
    for k, a in enumerate(images):
        if fmt == "png":
            Image.fromarray(a).save(root / cls / f"{cls}-{k:05d}.png")
        else:
            Image.fromarray(a).save(root / cls / f"{cls}-{k:05d}.jpg", quality=95)


def _study(root, cache) -> tuple[np.ndarray, list[str], dict[str, np.ndarray], list[str]]:
    """As the study reads a folder: list it, decode and preprocess to a 64-px cache, then the features; the
    class masks by class name."""
    ds = build_cache(open_source(str(root)), Preprocess(64), cache_root=cache, progress=False)
    feats, names = acquisition_features(ds.paths, ds.images)
    masks = {c: np.nan_to_num(ds.labels[:, i]) > 0.5 for i, c in enumerate(ds.class_names)}
    return feats, names, masks, ds.patient_ids


@pytest.fixture(scope="module")
def collections(phantoms, tmp_path_factory) -> dict[str, tuple]:
    base = tmp_path_factory.mktemp("acq")
    specs = {
        "size": {"normal": phantoms["normal256"], "covid": phantoms["covid192"]},
        "same": {"normal": phantoms["normal256"], "covid": phantoms["covid256"], "pneumonia": phantoms["pneumonia256"]},
        "format": {"normal": phantoms["normal256"], "covid": phantoms["covid256"]},
        "letterbox": {"normal": phantoms["normal256"], "covid": [_letterbox(a, 208) for a in phantoms["covid256"]]},
        # the positives come from two detectors, one smaller and one larger than the negatives' detector
        "mixed": {"normal": phantoms["normal256"], "covid": phantoms["covid192"][: N // 2] + phantoms["covid320"]},
    }
    out = {}
    for name, classes in specs.items():
        root = base / name
        for cls, imgs in classes.items():
            _write(root, cls, imgs, "jpeg" if (name, cls) == ("format", "covid") else "png")
        before = snapshot(root)
        out[name] = _study(root, base / "cache")
        assert snapshot(root) == before  # reading headers and features writes nothing into the data
    return out


def _check(collection: tuple, positive: str = "covid") -> dict:
    feats, names, masks, pids = collection
    return acquisition_cue_check(feats, names, masks[positive], pids, seed=0, positive_name=positive)


def test_features_hold_the_saved_sizes_and_formats(collections):
    feats, names, masks, _ = collections["size"]
    pos = masks["covid"]
    assert names == feature_names() and feats.shape == (2 * N, len(names))
    h, w = feats[:, names.index("native_height")], feats[:, names.index("native_width")]
    assert np.array_equal(h, np.where(pos, 192.0, 256.0)) and np.array_equal(w, h)
    assert np.allclose(feats[:, names.index("log_pixels")], np.log10(h * w))
    assert np.all(feats[:, names.index("aspect_ratio")] == 1.0) and np.all(feats[:, names.index("bit_depth")] == 8)
    assert np.all(feats[:, names.index("format_png")] == 1.0) and np.all(feats[:, names.index("border_fraction")] == 0)
    feats, names, masks, _ = collections["format"]
    pos = masks["covid"]
    assert np.array_equal(feats[:, names.index("format_jpeg")], pos.astype(float))
    assert np.array_equal(feats[:, names.index("format_png")], (~pos).astype(float))


def test_size_cue_is_flagged_and_named(collections):
    r = _check(collections["size"])
    assert r["flagged"] and r["auc"] >= 0.95, r
    assert r["strongest"][0] in SIZE_FEATURES, r["strongest"]
    assert r["text"].startswith("ACQUISITION CUE:") and "covid" in r["text"] and "native height 1.00" in r["text"]


def test_same_size_is_not_flagged_and_the_disease_stays_out(collections):
    """Only the disease differs (covid phantoms have peripheral ground-glass opacities, pneumonia phantoms a lobar
    consolidation): neither the model nor any single acquisition feature may find it."""
    for positive in ("covid", "pneumonia"):
        r = _check(collections["same"], positive)
        assert not r["flagged"] and r["text"] == "", r
        assert r["auc"] < 0.7, r  # clearly below the 0.75 threshold
        assert SIZE_FEATURES | {"bit_depth", "border_fraction"} <= set(r["dropped"])  # constant: dropped
        assert set(r["feature_auc"]) == set(r["feature_cv_auc"]) == {"sharpness", "noise"}
        assert max(*r["feature_auc"].values(), *r["feature_cv_auc"].values()) < 0.75, r


def test_file_format_cue_is_flagged(collections):
    r = _check(collections["format"])
    assert r["flagged"] and r["auc"] >= 0.95, r
    assert r["strongest"][0] in {"format_png", "format_jpeg"}, r["strongest"]
    assert sum(n.startswith("format_") for n in r["strongest"]) == 1  # one-hot columns are named once


def test_letterbox_cue_is_flagged(collections):
    feats, names, masks, _ = collections["letterbox"]
    pos = masks["covid"]
    border = feats[:, names.index("border_fraction")]
    inner = 64 - 2 * 6  # 24 px of black on each side at 256 px is 6 px at 64 px
    assert np.all(border[~pos] == 0) and np.allclose(border[pos], 1 - (inner / 64) ** 2, atol=0.04)
    r = _check(collections["letterbox"])
    assert r["flagged"] and r["auc"] >= 0.95, r
    assert r["strongest"][0] == "border_fraction", r["strongest"]
    assert "border (letterbox) fraction 1.00" in r["text"]


def test_a_size_cue_without_a_trend_is_caught(collections):
    """Positives from a smaller and a larger detector than the negatives': no feature ranks the classes (a linear
    model would miss it), the trees do, and the binned per-feature AUC names the size."""
    r = _check(collections["mixed"])
    assert r["feature_auc"]["native_height"] == pytest.approx(0.5)
    assert r["flagged"] and r["auc"] >= 0.9, r
    assert r["feature_cv_auc"]["native_height"] >= 0.95 and r["strongest"][0] in SIZE_FEATURES, r


def test_check_is_deterministic_and_skips_what_it_cannot_judge(collections):
    feats, names, masks, pids = collections["same"]
    pos = masks["covid"]
    assert acquisition_cue_check(feats, names, pos, pids, seed=3) == acquisition_cue_check(
        feats, names, pos, pids, seed=3
    )
    # every feature constant: nothing to learn
    r = acquisition_cue_check(np.ones_like(feats), names, pos, pids)
    assert r["auc"] == 0.5 and not r["flagged"] and len(r["dropped"]) == len(names)
    # one positive patient: no cross-validation possible
    few = np.nonzero(~pos)[0].tolist() + np.nonzero(pos)[0][:6].tolist()
    one = [pids[i] if not pos[i] else "P1" for i in few]
    r = acquisition_cue_check(feats[few], names, pos[few], one)
    assert r["auc"] is None and not r["flagged"] and r["skipped"].startswith("not enough images"), r
    # three positive patients: three folds
    r = acquisition_cue_check(feats[few], names, pos[few], [*pids[: len(few) - 6], "A", "A", "B", "B", "C", "C"])
    assert r["n_folds"] == 3 and r["auc"] is not None


def test_patients_never_straddle_folds():
    """A feature that identifies the patient (6 images each) but says nothing about the class of a new patient: the
    grouped folds see no cue; were each image its own patient, the model would recognise the patients."""
    rng = np.random.default_rng(0)
    patients, k = 30, 6
    value, label = rng.normal(size=patients), rng.permutation(np.arange(patients) < patients // 2)
    f, y = np.repeat(value, k)[:, None], np.repeat(label, k)
    grouped = acquisition_cue_check(f, ["patient"], y, [f"p{i}" for i in np.repeat(np.arange(patients), k)])
    assert not grouped["flagged"] and grouped["auc"] < 0.7, grouped
    leaky = acquisition_cue_check(f, ["patient"], y, [str(i) for i in range(len(y))])
    assert leaky["flagged"], leaky


def test_check_refuses_inconsistent_input():
    f = np.zeros((10, 2))
    with pytest.raises(CXRAugError, match="names"):
        acquisition_cue_check(f, ["a"], np.arange(10) < 5, [str(i) for i in range(10)])
    with pytest.raises(CXRAugError, match="patient ids"):
        acquisition_cue_check(f, ["a", "b"], np.arange(10) < 5, ["p"])
    with pytest.raises(CXRAugError, match="threshold"):
        acquisition_cue_check(f, ["a", "b"], np.arange(10) < 5, [str(i) for i in range(10)], threshold=0.4)
    with pytest.raises(CXRAugError, match="uint8"):
        acquisition_features(["x"], np.zeros((1, 8, 8), np.float32))
    with pytest.raises(CXRAugError, match="paths"):
        acquisition_features(["x", "y"], np.zeros((1, 8, 8), np.uint8))


def _dicom(path, rows: int, cols: int, bits: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = np.arange(rows * cols, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_image_header(tmp_path):
    _dicom(tmp_path / "a.dcm", 48, 40, 12)
    Image.fromarray(np.zeros((30, 50), np.uint16) + 900).save(tmp_path / "b16.png")
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    png = tmp_path / "ok.png"
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(png)
    (tmp_path / "trunc.png").write_bytes(png.read_bytes()[:20])  # cut inside the header
    (tmp_path / "junk.png").write_bytes(os.urandom(300))
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 200)
    (tmp_path / "empty.jpg").write_bytes(b"")
    os.mkfifo(tmp_path / "pipe.png")  # never opened: reading it would block
    before = snapshot(tmp_path)

    assert image_header(tmp_path / "a.dcm") == {"height": 48, "width": 40, "bit_depth": 12, "channels": 1,
                                                 "format": "dicom"}  # fmt: skip
    assert image_header(tmp_path / "b16.png") == {"height": 30, "width": 50, "bit_depth": 16, "channels": 1,
                                                  "format": "png"}  # fmt: skip
    assert image_header(tmp_path / "rgb.jpg") == {"height": 30, "width": 50, "bit_depth": 8, "channels": 3,
                                                  "format": "jpeg"}  # fmt: skip
    for bad in ("trunc.png", "junk.png", "junk.dcm", "empty.jpg", "pipe.png", "missing.png", "."):
        h = image_header(tmp_path / bad)
        assert h["format"] == "unknown" and all(math.isnan(h[k]) for k in ("height", "width", "bit_depth")), bad
    assert snapshot(tmp_path) == before

    # in the feature matrix: a DICOM's header; an in-memory phantom takes its array's shape; a bad or missing file
    # is unknown
    paths = [tmp_path / "a.dcm", "phantom://covid/0", tmp_path / "junk.png", tmp_path / "moved.png"]
    feats, names = acquisition_features([str(p) for p in paths], np.zeros((4, 32, 32), np.uint8) + 100)
    col = {n: feats[:, i] for i, n in enumerate(names)}
    assert col["native_height"][:2].tolist() == [48, 32] and col["native_width"][:2].tolist() == [40, 32]
    assert col["bit_depth"][0] == 12 and math.isnan(col["bit_depth"][1])
    assert np.isnan(col["native_height"][2:]).all() and np.isnan(col["log_pixels"][2:]).all()
    assert col["format_dicom"].tolist() == [1, 0, 0, 0]
    assert sum(col[f"format_{f}"][1:].sum() for f in FORMATS) == 0


def test_border_noise_and_sharpness_against_constructed_images():
    rng = np.random.default_rng(0)
    # letterbox: 8 black rows on top, 5 near-white columns on the left, content in between
    a = rng.integers(40, 200, (64, 64)).astype(np.uint8)
    a[:8] = 0
    a[8:, :5] = 250
    a[30, 0] = 120  # a stray pixel (a burnt-in mark) leaves the line border: 55 of its 56 pixels are white
    assert border_lines(a) == (8, 0, 5, 0)
    assert image_quality(a)[0] == pytest.approx(1 - 56 * 59 / 64**2)
    assert (
        border_lines(np.zeros((16, 16), np.uint8)) == (16, 0, 16, 0)
        and image_quality(np.zeros((16, 16), np.uint8))[0] == 1
    )

    # noise of known std, on a flat field and under a large smooth opacity: the estimate ignores the opacity
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    noise = rng.normal(0, 4.0, (64, 64))
    opacity = 70 * np.exp(-((xx - 0.6) ** 2 + (yy - 0.55) ** 2) / (2 * 0.15**2))
    for field in (np.full((64, 64), 100.0), 80 + opacity):
        _, _, sigma = image_quality(np.clip(np.rint(field + noise), 0, 255).astype(np.uint8))
        assert sigma == pytest.approx(4.0, rel=0.1)
    # sharpness: blurring the same image lowers it
    import cv2

    img = _u8(phantom("normal", 64, 0))
    assert image_quality(cv2.GaussianBlur(img, (0, 0), 1.0))[1] < 0.5 * image_quality(img)[1]
