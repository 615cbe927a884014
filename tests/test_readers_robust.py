"""Issue 14, readers: hostile-but-realistic files give one error naming the file, or the right pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinput.corpus import N_GOOD, gray, make_corpus, png16, write_dicom
from cxraug.cli import main
from cxraug.data import read_folder, read_image
from cxraug.errors import ConfigError, CXRAugError, ImageReadError

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "cxraug", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_in_data_folder_is_skipped_with_a_count_not_opened(tmp_path):
    """A FIFO used to hang `data inspect` forever (every file was opened to sniff for DICOM)."""
    d = tmp_path / "data" / "normal"
    d.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(gray(32, i)).save(d / f"{i}.png")
    os.mkfifo(d / "pipe.png")
    os.mkfifo(d / "pipe_no_suffix")
    r = _cli("data", "inspect", str(tmp_path / "data"), "-q", timeout=60)  # a hang fails here, not forever
    assert r.returncode == 0, r.stderr
    assert "2 readable images" in r.stdout
    assert "skipped files: 2" in r.stdout
    assert r.stdout.count("FIFO, not a regular file") == 2 and "pipe.png" in r.stdout
    with pytest.raises(ImageReadError, match=r"pipe\.png: not a regular file \(FIFO\)"):
        read_image(d / "pipe.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_listed_in_a_manifest_is_skipped_not_read_forever(tmp_path, monkeypatch):
    """`data prepare` / `split` on a manifest naming a FIFO hung: the cache key hashed every listed file by
    reading it, before the reader could skip it. Loaded in a thread, so that a hang fails (and is released)."""
    import threading

    from cxraug.data.source import DataConfig, load_dataset

    d = tmp_path / "m"
    (d / "img").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(gray(32, i)).save(d / "img" / f"a{i}.png")
    os.mkfifo(d / "img" / "pipe.png")
    rows = "".join(f"img/a{i}.png,{'covid' if i % 2 else 'normal'}\n" for i in range(4))
    (d / "m.csv").write_text("path,label\n" + rows + "img/pipe.png,covid\n")
    monkeypatch.setenv("CXRAUG_CACHE", str(tmp_path / "cache"))
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(ds=load_dataset(DataConfig(str(d / "m.csv"), size=32),
                                                                   progress=False)), daemon=True)  # fmt: skip
    t.start()
    t.join(60)
    if t.is_alive():
        os.close(os.open(d / "img" / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))  # the blocked reader gets EOF
        t.join(10)
        pytest.fail("loading a manifest that lists a FIFO hung")
    ds = out["ds"]
    assert len(ds) == 4 and any("pipe.png" in e and "not a regular file" in e for e in ds.errors), ds.errors


def test_a_foreign_images_npy_and_meta_json_is_not_a_cache_in_one_line(tmp_path, capsys):
    """A folder holding another tool's (or another version's) images.npy + meta.json was taken for a cxraug
    cache and died in a KeyError / reshape traceback."""
    from cxraug.data.cache import CachedDataset

    for name, meta in (("other-tool", {"description": "some other tool"}),
                       ("wrong-length", {"version": 1, "class_names": ["a", "b"], "labels": [[1, 0]],
                                         "patient_ids": ["p"], "paths": ["x"], "sources": ["real"],
                                         "multilabel": False, "prep": {}})):  # fmt: skip
        d = tmp_path / name
        d.mkdir()
        np.save(d / "images.npy", np.zeros((4, 8, 8), np.uint8))
        (d / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(CXRAugError, match=rf"{name} is not a cxraug cache"):
            CachedDataset.load(d)
        assert main(["data", "prepare", str(d), "--out", str(tmp_path / "runs"), "-q"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a cxraug cache" in err[0], err


def test_folder_per_class_names_what_it_leaves_out_at_the_top(tmp_path):
    """With sub-folders, a folder is read one sub-folder per class. Images beside those folders, and a class
    folder that is a broken link (an unmounted disk), used to vanish without a line."""
    root = tmp_path / "data"
    (root / "normal").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(gray(32, i)).save(root / "normal" / f"n{i}.png")
        Image.fromarray(gray(32, 10 + i)).save(root / f"loose-{i}.png")
    (root / "covid").symlink_to(tmp_path / "not-mounted" / "covid")
    (root / "README.txt").write_text("not an image, not data either\n")
    c = read_folder(root)
    assert c.class_names == ["normal"] and len(c) == 3
    loose = [s for s in c.skipped if "beside the class folders (normal), left out" in s]
    assert sorted(Path(s.split(":")[0]).name for s in loose) == ["loose-0.png", "loose-1.png", "loose-2.png"]
    assert any(s.startswith(str(root / "covid")) and "broken symlink" in s for s in c.skipped), c.skipped
    assert len(c.skipped) == 4  # README.txt is no image: not a skipped image either


def test_dicom_named_by_uid_and_jpeg_variants_are_read_other_files_counted(tmp_path):
    """A DICOM named by its SOP instance UID has a 'suffix' like .504 and was left out silently, as were .jfif
    and .jpe JPEGs; files that are neither are now counted in one line."""
    d = tmp_path / "covid"
    d.mkdir()
    write_dicom(d / "1.2.840.113619.2.55.3.604688119.868.1249343483.504", gray(32, 1))
    write_dicom(d / "IM000001", gray(32, 2))
    Image.fromarray(gray(32, 3)).save(d / "scan.jfif", format="JPEG")
    Image.fromarray(gray(32, 4)).save(d / "scan.jpe", format="JPEG")
    (d / "notes.txt").write_text("x")
    (d / "LICENSE").write_text("x")
    c = read_folder(d)
    assert len(c) == 4, [s.path for s in c.samples]
    assert any("2 file(s) neither an image by extension nor DICOM by content, not read" in p for p in c.problems)
    for s in c.samples:
        assert s.load().image.shape == (32, 32)


def test_multiframe_rgb_dicom_takes_the_first_frame_luminance(tmp_path):
    """Was `too many values to unpack`. Frames and samples come from NumberOfFrames/SamplesPerPixel."""
    f0, f1 = gray(32, 1), gray(32, 2)
    frames = np.stack([np.dstack([f0] * 3), np.dstack([f1] * 3)])  # [F=2, R, C, 3], R=G=B
    img = read_image(write_dicom(tmp_path / "rgb2.dcm", frames, photometric="RGB"))
    np.testing.assert_allclose(img, f0 / 255.0, atol=1e-5)  # gray R=G=B: luminance = the gray value
    one = read_image(write_dicom(tmp_path / "rgb1.dcm", np.dstack([f1] * 3), photometric="RGB"))
    np.testing.assert_allclose(one, f1 / 255.0, atol=1e-5)
    mono = np.stack([gray(32, 3), gray(32, 4)]).astype(np.uint16) * 16  # [F, R, C] 12-bit
    m = read_image(write_dicom(tmp_path / "mf.dcm", mono, bits=12))
    assert np.corrcoef(m.ravel(), mono[0].ravel())[0, 1] > 0.999  # the first frame, not the second
    assert np.corrcoef(m.ravel(), mono[1].ravel())[0, 1] < 0.5


def test_dicom_window_width_below_one_is_no_window(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1)).astype(np.uint16)
    plain = read_image(write_dicom(tmp_path / "plain.dcm", ramp, bits=12))
    for w in (0, 0.5):
        got = read_image(write_dicom(tmp_path / f"w{w}.dcm", ramp, bits=12, window=(2000, w)))
        np.testing.assert_array_equal(got, plain)
    # the ramp's own scale: value v -> (v - p0.5) / (p99.5 - p0.5), i.e. nearly v / 4000 in the middle
    np.testing.assert_allclose(plain[:, 8:56], ramp[:, 8:56] / 4000.0, atol=0.02)


def test_16bit_png_with_one_hot_pixel_is_not_black(tmp_path):
    """Min-max scaling turned this image almost black (all values / 65535); the robust window does not."""
    a = np.tile(np.linspace(1000, 5000, 64), (64, 1)).astype(np.uint16)
    a[0, 0] = 65535
    img = read_image(png16(a, tmp_path / "hot.png"))
    assert 0.45 < np.median(img) < 0.55
    expected = (a.astype(np.float64) - 1000) / 4000  # the anatomy's own range
    np.testing.assert_allclose(img[1:, 4:60], expected[1:, 4:60], atol=0.02)
    assert img[0, 0] == 1.0  # the hot pixel saturates instead of defining the scale
    dcm = read_image(write_dicom(tmp_path / "hot.dcm", a, bits=16))  # DICOM without VOI: the same window
    np.testing.assert_allclose(dcm, img, atol=1e-6)


def test_decoder_exceptions_become_image_read_errors(tmp_path, monkeypatch):
    import cxraug.data.imageio as io_

    p = Image.fromarray(gray(32)).save(tmp_path / "x.png") or tmp_path / "x.png"
    monkeypatch.setattr(io_, "_pil_to_gray", lambda im: (_ for _ in ()).throw(KeyError("weird")))
    with pytest.raises(ImageReadError, match=r"x\.png: cannot decode \(KeyError"):
        read_image(p)


def test_clahe_tile_zero_is_refused_not_sigfpe(phantom_root, tmp_path, capsys):
    """OpenCV divides by the tile count: `--clahe-tile 0` killed the process with SIGFPE and no message."""
    for tile in ("0", "-3"):
        rc = main(["data", "split", str(phantom_root), "--clahe", "--clahe-tile", tile, "--out", str(tmp_path), "-q"])
        assert rc == 2
        err = capsys.readouterr().err
        assert f"CLAHE tile grid must be within 1..64, got {tile}" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    from cxraug.data.preprocess import Preprocess, apply_clahe

    with pytest.raises(ConfigError):
        Preprocess(64, clahe=True, clahe_tile=0)
    with pytest.raises(ConfigError):
        apply_clahe(np.zeros((32, 32), np.uint8), 2.0, 0)


def test_inspect_json_is_strict_json(tmp_path, capsys):
    """An empty class has skew ratio inf; `inspect --json` printed `Infinity`, which is not JSON."""
    root = tmp_path / "c"
    make_corpus(root)
    assert main(["data", "inspect", str(root), "-q", "--json"]) == 0

    def no_constants(x):
        raise AssertionError(f"non-JSON constant {x}")

    rep = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert rep["skew_ratio"]["empty_class"] is None
    assert rep["n_images"] == N_GOOD and rep["counts"]["good"] == N_GOOD


def test_non_utf8_file_name_round_trips_through_split_csv(tmp_path, capsys):
    """`data split` died with UnicodeEncodeError on a non-UTF-8 name, leaving a half-written run folder."""
    root = tmp_path / "c"
    make_corpus(root)
    out = tmp_path / "runs"
    assert main(["data", "split", str(root), "--fractions", "1,0,0", "--out", str(out), "-q"]) == 0
    (run,) = out.iterdir()
    raw = (run / "train.csv").read_bytes()
    assert b"caf\xe9-latin1.png" in raw  # the file's own bytes, so the manifest names that very file
    from cxraug.data.readers import read_csv_manifest

    coll = read_csv_manifest(run / "train.csv")
    hit = [s.path for s in coll.samples if os.fsencode(s.path).endswith(b"caf\xe9-latin1.png")]
    assert len(hit) == 1 and os.path.isfile(hit[0])
    assert len(coll) == N_GOOD
    summary = json.loads((run / "summary.json").read_text())  # JSON stays valid (\udce9 escape)
    assert summary["counts"]["train"]["good"] == N_GOOD


def test_same_file_under_two_class_folders_is_reported(tmp_path):
    for c in ("covid", "normal"):
        (tmp_path / c).mkdir()
    Image.fromarray(gray(32, 1)).save(tmp_path / "covid" / "a.png")
    Image.fromarray(gray(32, 2)).save(tmp_path / "covid" / "b.png")
    Image.fromarray(gray(32, 3)).save(tmp_path / "normal" / "c.png")
    os.link(tmp_path / "covid" / "a.png", tmp_path / "normal" / "a-again.png")
    coll = read_folder(tmp_path)
    assert sorted(Path(s.path).name for s in coll.samples) == ["b.png", "c.png"]
    (msg,) = coll.skipped
    assert "the same file under different classes" in msg and "a-again.png" in msg and "a.png" in msg


def test_folder_without_patient_ids_is_flagged(tmp_path, capsys):
    (tmp_path / "d" / "x").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(gray(32, i)).save(tmp_path / "d" / "x" / f"img{i}.png")
    Image.fromarray(gray(32, 7)).save(tmp_path / "d" / "x" / "00000001_000.png")  # NIH-style: known
    assert read_folder(tmp_path / "d").unknown_patients == 3
    assert main(["data", "inspect", str(tmp_path / "d"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "4 readable images, 4 patients" in out
    assert "patient ids unknown for 3 of 4 images" in out and "image-level" in out


def test_one_image_folder_split_warns_about_empty_splits(tmp_path, capsys):
    (tmp_path / "d" / "x").mkdir(parents=True)
    Image.fromarray(gray(32)).save(tmp_path / "d" / "x" / "only.png")
    assert main(["data", "split", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning: the val split is empty" in err and "warning: the test split is empty" in err
    assert "1 image(s) of 1 patient(s)" in err


@pytest.mark.parametrize("frac", ["0.5,0.5", "0.7,0.2,0.2", "a,b,c", "0,0.5,0.5", "1.5,-0.25,-0.25"])
def test_bad_fractions_are_one_line(phantom_root, tmp_path, capsys, frac):
    assert main(["data", "split", str(phantom_root), "--fractions", frac, "--out", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxraug: error: --fractions needs three numbers") and err.count("\n") == 1
