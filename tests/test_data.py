"""Data layer: readers, phantoms, preprocessing, cache, splits, stats."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinput.corpus import gray, write_dicom
from conftest import shared, snapshot
from cxraug.data import Preprocess, phantom, read_csv_manifest, read_folder, read_image
from cxraug.data.cache import CachedDataset, build_cache
from cxraug.data.phantom import CLASSES, phantom_collection
from cxraug.data.preprocess import apply_clahe, resize, tensor_to_u8, u8_to_tensor
from cxraug.data.splits import check_patient_disjoint, patient_split, regime_subset
from cxraug.data.stats import find_duplicates, inspect_collection, phash, skew_ratios
from cxraug.errors import CXRAugError


# ------------------------------------------------------------------ phantoms
@pytest.mark.parametrize("size", [64, 128, 299])
def test_phantom_deterministic_sized_and_in_range(size):
    a, b = phantom("covid", size, seed=5), phantom("covid", size, seed=5)
    assert a.shape == (size, size) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert not np.array_equal(a, phantom("covid", size, seed=6))


def test_phantom_classes_differ_where_the_pathology_is():
    # Same seed -> same anatomy; COVID adds bilateral lower-zone opacity, pneumonia a dense lobe.
    n = np.mean([phantom("normal", 128, s) for s in range(12)], 0)
    c = np.mean([phantom("covid", 128, s) for s in range(12)], 0)
    p = np.mean([phantom("pneumonia", 128, s) for s in range(12)], 0)
    lower = slice(60, 95)
    left, right = slice(20, 50), slice(78, 108)
    assert c[lower, left].mean() > n[lower, left].mean() + 0.01  # bilateral ...
    assert c[lower, right].mean() > n[lower, right].mean() + 0.01
    assert p[lower].mean() > n[lower].mean() + 0.02  # consolidation is denser overall
    assert set(CLASSES) == {"normal", "covid", "pneumonia"}


def test_lung_masks_decode_as_pil_reads_the_archive():
    """The phantoms' lung masks: cv2 decodes torchxrayvision's PNGs, checked here against PIL's reading of the same
    bytes followed by the documented crop (two largest components at 256 px, bounding box, 128 px)."""
    import importlib
    import io

    import cv2
    from PIL import Image

    ph = importlib.import_module("cxraug.data.phantom")
    usable = 0
    for i in range(0, ph.n_masks(), 37):  # 14 masks spread over the archive
        m = np.asarray(Image.open(io.BytesIO(ph._mask_png(i))).convert("L")) > 127
        small = cv2.resize(m.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST)
        n, lab, st, _ = cv2.connectedComponentsWithStats(small, connectivity=8)
        areas = st[1:, cv2.CC_STAT_AREA]
        got = ph.lung_mask(i)
        if n < 3 or np.sort(areas)[-2] < 0.35 * areas.max():
            assert got is None
            continue
        lungs = np.isin(lab, 1 + np.argsort(-areas)[:2])
        ys, xs = np.nonzero(lungs)
        crop = lungs[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        if not 0.5 < crop.shape[0] / crop.shape[1] < 1.6:
            assert got is None
            continue
        want = cv2.resize(crop.astype(np.float32), (128, 128), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(got, want)
        usable += 1
    assert usable >= 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_children_read_the_mask_archive_through_their_own_handle():
    """The archive is opened once per process: children forked after the parent opened it (DataLoader workers)
    used to read through the parent's handle, whose file offset they share, and got CRC and inflate errors."""
    import importlib
    import zlib

    ph = importlib.import_module("cxraug.data.phantom")
    want = [zlib.crc32(ph._mask_png(i)) for i in range(ph.n_masks())]  # the parent opens the archive first
    pids = []
    for _ in range(3):  # concurrent readers: the case that corrupted each other's reads
        pid = os.fork()
        if pid == 0:  # child: exit status 0 only if every member read back whole, three times over
            try:
                ok = all(zlib.crc32(ph._mask_png(i)) == want[i] for _ in range(3) for i in range(len(want)))
            except Exception:
                ok = False
            os._exit(0 if ok else 1)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0, 0]


def test_phantom_collection_labels():
    coll = phantom_collection({"normal": 3, "covid": 2}, size=64)
    assert coll.class_names == ["normal", "covid"]
    assert coll.counts() == {"normal": 3, "covid": 2}
    assert len({s.patient_id for s in coll.samples}) == 5


# ------------------------------------------------------------------ readers
def test_folder_reader(phantom_root):
    before = snapshot(phantom_root)
    coll = read_folder(phantom_root)
    assert coll.class_names == ["covid", "normal", "pneumonia"]
    assert coll.counts() == {"covid": 12, "normal": 24, "pneumonia": 12}
    s = coll.samples[0].load()
    assert s.image.shape == (64, 64) and s.source == "real"
    assert snapshot(phantom_root) == before


def test_radiography_database_layout_ignores_masks(tmp_path):
    for c in ("COVID", "Normal"):
        (tmp_path / c / "images").mkdir(parents=True)
        (tmp_path / c / "masks").mkdir()
        for i in range(2):
            Image.fromarray(gray(64, i)).save(tmp_path / c / "images" / f"{c}-{i}.png")
            Image.fromarray(gray(64, 9)).save(tmp_path / c / "masks" / f"{c}-{i}.png")
    coll = read_folder(tmp_path)
    assert coll.counts() == {"COVID": 2, "Normal": 2}
    assert all("/masks/" not in s.path for s in coll.samples)


def test_all_image_formats(tmp_path):
    (tmp_path / "a").mkdir()
    for ext in ("png", "jpg", "jpeg", "bmp", "tif", "webp"):
        Image.fromarray(gray(40)).save(tmp_path / "a" / f"x.{ext}")
    write_dicom(tmp_path / "a" / "x.dcm", gray(40).astype(np.uint16), bits=8)
    coll = read_folder(tmp_path)
    assert len(coll) == 7
    for s in coll.samples:
        assert s.load().image.shape == (40, 40)


def test_dicom_monochrome1_window_and_16bit(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1)).astype(np.uint16)
    m2 = read_image(write_dicom(tmp_path / "m2.dcm", ramp, bits=12))
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1", bits=12))
    assert m2[0, 0] < m2[0, -1]  # bright where values are high
    assert m1[0, 0] > m1[0, -1]  # MONOCHROME1 inverted
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)
    win = read_image(write_dicom(tmp_path / "w.dcm", ramp, bits=12, window=(2000, 1000)))
    # The VOI window 1500..2500 saturates both ends: a third of the ramp each side is flat.
    assert (win[0] == 0).sum() > 15 and (win[0] == 1).sum() > 15


def test_dicom_patient_id_used_for_splits(tmp_path):
    (tmp_path / "c").mkdir()
    write_dicom(tmp_path / "c" / "a.dcm", gray(32).astype(np.uint16), bits=8, patient_id="PAT-7")
    assert read_folder(tmp_path).samples[0].patient_id == "PAT-7"


def test_csv_manifest_single_and_multilabel(tmp_path):
    for i in range(4):
        Image.fromarray(gray(32, i)).save(tmp_path / f"{i}.png")
    with open(tmp_path / "single.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "pid"])
        w.writerows([["0.png", "covid", "p1"], ["1.png", "normal", "p1"], ["2.png", "normal", "p2"]])
    c = read_csv_manifest(tmp_path / "single.csv", label_col="label", patient_col="pid")
    assert c.class_names == ["covid", "normal"] and c.counts() == {"covid": 1, "normal": 2}
    assert [s.patient_id for s in c.samples] == ["p1", "p1", "p2"]

    with open(tmp_path / "multi.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Path", "Edema", "Effusion"])
        w.writerows([["0.png", "1", "-1"], ["1.png", "", "0"], ["2.png", "-1", "1"]])
    kw = dict(path_col="Path", label_cols=["Edema", "Effusion"])
    ones = read_csv_manifest(tmp_path / "multi.csv", uncertain="ones", **kw)
    zeros = read_csv_manifest(tmp_path / "multi.csv", uncertain="zeros", **kw)
    ign = read_csv_manifest(tmp_path / "multi.csv", uncertain="ignore", **kw)
    assert ones.multilabel
    assert ones.samples[0].labels.tolist() == [1, 1] and zeros.samples[0].labels.tolist() == [1, 0]
    assert np.isnan(ign.samples[0].labels[1]) and ign.samples[1].labels.tolist() == [0, 0]
    with pytest.raises(CXRAugError, match="missing column"):
        read_csv_manifest(tmp_path / "multi.csv", label_cols=["Nope"])


def test_xrv_dataset_source(tmp_path):
    """torchxrayvision's own NIH class over files we make, labels from its bundled CSV."""
    import torchxrayvision as xrv

    from cxraug.data.readers import read_xrv

    ds = xrv.datasets.NIH_Dataset(imgpath=str(tmp_path), views=["PA", "AP"], unique_patients=False)
    names = list(ds.csv["Image Index"].iloc[:3])
    for n in names:
        Image.fromarray(gray(64)).save(tmp_path / n)
    sub = xrv.datasets.SubsetDataset(ds, [0, 1, 2])
    coll = read_xrv(sub)
    assert len(coll) == 3 and coll.multilabel and "Effusion" in coll.class_names
    assert coll.samples[0].patient_id == str(ds.csv["Patient ID"].iloc[0])
    img = coll.samples[0].load().image
    assert img.shape == (64, 64) and img.min() >= 0 and img.max() <= 1


# ------------------------------------------------------------------ preprocessing
def test_clahe_raises_local_contrast():
    rng = np.random.default_rng(0)
    low = (100 + 10 * rng.random((128, 128))).astype(np.uint8)
    out = apply_clahe(low, clip=4.0, tile=8)
    assert out.std() > 2 * low.std()


def test_resize_modes_and_range():
    img = np.zeros((100, 200), np.uint8)
    img[:, :] = 200
    pad = resize(img, 64, "pad")
    assert pad.shape == (64, 64) and pad[0, 32] == 0 and pad[32, 32] == 200  # letterboxed
    assert resize(img, 64, "direct").min() == 200 and resize(img, 64, "crop").shape == (64, 64)
    p = Preprocess(size=128, clahe=True)
    out = p(np.random.default_rng(0).random((300, 250)).astype(np.float32))
    assert out.shape == (128, 128) and out.dtype == np.uint8
    t = u8_to_tensor(out[None])
    assert t.shape == (1, 1, 128, 128) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(tensor_to_u8(t), out[None])


# ------------------------------------------------------------------ cache
def test_cache_second_load_does_no_decoding(phantom_root, tmp_path, monkeypatch):
    coll = read_folder(phantom_root)
    ds = build_cache(coll, Preprocess(32), cache_root=tmp_path, progress=False)
    assert len(ds) == 48 and ds.images.dtype == np.uint8 and ds.images.shape == (48, 32, 32)
    assert isinstance(ds.images, np.memmap)

    def boom(*a, **k):
        raise AssertionError("decoded on a cache hit")

    monkeypatch.setattr("cxraug.data.sample.read_image", boom)
    ds2 = build_cache(read_folder(phantom_root), Preprocess(32), cache_root=tmp_path, progress=False)
    assert np.array_equal(np.asarray(ds2.images), np.asarray(ds.images))
    x, y = ds2[0]
    assert x.shape == (1, 32, 32) and y.shape == (3,)
    # Different settings -> different cache (and so decoding again).
    with pytest.raises(AssertionError, match="decoded"):
        build_cache(read_folder(phantom_root), Preprocess(32, clahe=True), cache_root=tmp_path, progress=False)


def test_cache_key_changes_when_a_file_changes(tmp_path):
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(gray(32, i)).save(root / "a" / f"{i}.png")
    ds1 = build_cache(read_folder(root), Preprocess(32), cache_root=tmp_path / "c", progress=False)
    Image.fromarray(gray(32, 7)).save(root / "a" / "1.png")
    ds2 = build_cache(read_folder(root), Preprocess(32), cache_root=tmp_path / "c", progress=False)
    assert not np.array_equal(np.asarray(ds1.images[1]), np.asarray(ds2.images[1]))
    reloaded = CachedDataset.load(Path(ds2.images.filename).parent)
    assert reloaded.paths == ds2.paths


# ------------------------------------------------------------------ splits and stats
def _nih_like(n_pat=60, seed=0):
    rng = np.random.default_rng(seed)
    pids, labels = [], []
    for p in range(n_pat):
        lab = p % 3
        for _ in range(rng.integers(1, 5)):
            pids.append(f"{p:08d}")
            labels.append(np.eye(3, dtype=np.float32)[lab])
    return np.stack(labels), pids


def test_patient_split_disjoint_stratified_deterministic():
    labels, pids = _nih_like()
    sp = patient_split(labels, pids, fractions=(0.6, 0.2, 0.2), seed=1)
    check_patient_disjoint(pids, sp)
    assert sum(len(v) for v in sp.values()) == len(pids)
    for k in ("val", "test"):
        present = set(labels[sp[k]].argmax(1))
        assert present == {0, 1, 2}
    assert abs(len(sp["train"]) / len(pids) - 0.6) < 0.1
    sp2 = patient_split(labels, pids, fractions=(0.6, 0.2, 0.2), seed=1)
    assert all(np.array_equal(sp[k], sp2[k]) for k in sp)


def test_regimes_nested_and_stratified():
    labels, pids = _nih_like(200)
    idx = np.arange(len(pids))
    subsets = {f: set(regime_subset(idx, labels, pids, f, seed=3)) for f in (0.01, 0.1, 0.5, 1.0)}
    assert subsets[0.01] <= subsets[0.1] <= subsets[0.5] <= subsets[1.0]
    assert set(labels[list(subsets[0.01])].argmax(1)) == {0, 1, 2}  # >= 1 patient per class
    assert len(subsets[1.0]) == len(pids)


def test_skew_and_duplicates():
    assert skew_ratios({"normal": 300, "covid": 60}) == {"normal": 0.2, "covid": 5.0}
    a = gray(64, 1).astype(np.float32) / 255
    b = np.clip(a + 0.01, 0, 1)  # near-duplicate
    c = gray(64, 2).astype(np.float32) / 255
    groups = find_duplicates(["a", "a2", "b", "c"], [phash(a), phash(a), phash(b), phash(c)], [b"1", b"1", b"2", b"3"])
    kinds = {g.kind: set(g.paths) for g in groups}
    assert kinds["exact"] == {"a", "a2"}
    assert kinds["near"] == {"a", "b"}
    assert all("c" not in g.paths for g in groups)


def test_inspect_reports_counts_and_duplicates(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for i in range(3):
        Image.fromarray(gray(64, i)).save(tmp_path / "x" / f"{i}.png")
    Image.fromarray(gray(64, 0)).save(tmp_path / "y" / "copy.png")
    rep = inspect_collection(read_folder(tmp_path), progress=False)
    assert rep.counts == {"x": 3, "y": 1} and rep.skew["y"] == 3.0
    assert any(g.kind == "exact" and len(g.paths) == 2 for g in rep.duplicates)


# ------------------------------------------------------------------ shared real data
@pytest.mark.shared_data
def test_shared_data_counts_and_nih_patient_split():
    cov = read_folder(shared("covid-cxnet"))
    nih = read_folder(shared("nih-64"))
    assert len(cov) == 898
    assert nih.counts() == {"abnormal": 400, "normal": 400}
    labels = np.stack([s.labels for s in nih.samples])
    pids = [s.patient_id for s in nih.samples]
    assert len(set(pids)) < len(pids)  # NIH follow-ups share a patient id
    sp = patient_split(labels, pids, seed=0)
    check_patient_disjoint(pids, sp)
    ds = build_cache(nih, Preprocess(64), progress=False)
    assert ds.images.shape == (800, 64, 64)
