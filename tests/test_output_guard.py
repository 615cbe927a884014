"""Issue 14 item 1: one output guard, run by every command before any work.

No output folder and no cache may lie inside an input: the data folder, a manifest's folder, or any
folder a manifest's rows point into. Each case checks the exit code, the one-line message naming the
input folder, and that not one file appeared in (or changed under) the input.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from badinput.corpus import gray, write_rows
from conftest import snapshot
from cxraug.cli import main
from cxraug.errors import CXRAugError


@pytest.fixture
def manifest_split(tmp_path):
    """Images in ``imgs/``, their manifest in a different folder ``meta/``."""
    imgs, meta = tmp_path / "imgs", tmp_path / "meta"
    imgs.mkdir()
    meta.mkdir()
    for i in range(6):
        Image.fromarray(gray(32, i)).save(imgs / f"{i}.png")
    csv_ = write_rows(meta / "labels.csv", ["path", "label"],
                      [[f"../imgs/{i}.png", "covid" if i < 3 else "normal"] for i in range(6)])  # fmt: skip
    return imgs, meta, csv_


def _refused(argv: list[str], capsys, inside: Path, what: str = "output folder") -> None:
    before = snapshot(inside)
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{what} " in err and f"is inside the input folder {inside.resolve()}" in err, err
    assert snapshot(inside) == before  # nothing written, nothing touched


def test_every_command_refuses_an_output_inside_the_data_folder(phantom_root, tmp_path, capsys):
    out = str(phantom_root / "runs")
    root = str(phantom_root)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"sources:\n  - path: {root}\n")
    for argv in (
        ["data", "prepare", root, "--out", out],
        ["data", "split", root, "--out", out],
        ["train", "--preset", "dcgan-64", "--data", root, "--steps", "2", "--out", out],
        ["evaluate", "--real", root, "--fake", str(tmp_path), "--out", out],
        ["evaluate", "--real", "phantom", "--fake", root, "--out", out],  # the fake folder is an input too
        ["encoder", "train", "--data", root, "--out", out],
        ["balance", "--data", root, "--generator", str(tmp_path / "g.pt"), "--out", out],
        ["benchmark", "--config", str(cfg), "--out", out],
    ):
        _refused([*argv, "-q"], capsys, phantom_root)
    assert not (phantom_root / "runs").exists()


def test_manifest_folder_and_image_folders_are_inputs(manifest_split, tmp_path, capsys):
    """The guard used to check only the CSV file itself, so runs landed next to the images."""
    imgs, meta, csv_ = manifest_split
    for out in (imgs / "runs", meta / "runs", imgs):
        for argv in (["data", "split", str(csv_), "--out", str(out)],
                     ["data", "prepare", str(csv_), "--out", str(out)],
                     ["train", "--preset", "dcgan-64", "--data", str(csv_), "--out", str(out)],
                     ["balance", "--data", str(csv_), "--generator", str(tmp_path / "g.pt"), "--out", str(out)]):  # fmt: skip
            inside = imgs if imgs in (out, *out.parents) else meta
            _refused([*argv, "-q"], capsys, inside)
    assert main(["data", "split", str(csv_), "--out", str(tmp_path / "runs"), "-q"]) == 0  # outside: fine


def test_cache_inside_an_input_is_refused(manifest_split, tmp_path, capsys, monkeypatch):
    imgs, _meta, csv_ = manifest_split
    _refused(["data", "prepare", str(csv_), "--cache-dir", str(imgs / "cache"), "--out", str(tmp_path / "r"), "-q"],
             capsys, imgs, what="cache folder")  # fmt: skip
    monkeypatch.setenv("CXRAUG_CACHE", str(imgs / ".cache"))  # the default cache root, via the environment
    before = snapshot(imgs)
    assert main(["data", "split", str(csv_), "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cache folder" in err and "--cache-dir (or $CXRAUG_CACHE)" in err
    assert snapshot(imgs) == before and not (tmp_path / "r").exists()
    from cxraug.data.source import DataConfig, load_dataset

    with pytest.raises(CXRAugError, match="cache folder .* is inside the input folder"):  # the library refuses too
        load_dataset(DataConfig(path=str(csv_), size=32, cache_dir=str(imgs / "c2")), progress=False)


def test_a_symlink_into_the_data_does_not_fool_the_guard(phantom_root, tmp_path, capsys):
    link = tmp_path / "looks-elsewhere"
    os.symlink(phantom_root, link)
    _refused(["data", "split", str(phantom_root), "--out", str(link / "runs"), "-q"], capsys, phantom_root)


def test_balance_counts_only_readable_images(tmp_path, capsys):
    """`balance` counted unreadable files as images (its plan then added too few synthetic ones), and a
    non-UTF-8 file name killed it half way with UnicodeEncodeError."""
    import json

    data = tmp_path / "d"
    for c, n in (("covid", 2), ("normal", 4)):
        (data / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(gray(32, 10 * len(c) + i)).save(data / c / f"{i}.png")
    (data / "covid" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    os.rename(data / "normal" / "0.png", os.fsdecode(os.fsencode(data / "normal") + b"/caf\xe9.png"))  # not UTF-8
    out = tmp_path / "runs"
    assert main(["train", "--preset", "dcgan-64", "--data", str(data), "--class", "covid", "--steps", "1",
                 "--batch-size", "2", "--set", "width=8", "--out", str(out), "-q"]) == 0  # fmt: skip
    ckpt = next(out.glob("train-*/checkpoints/last.pt"))
    capsys.readouterr()
    assert main(["balance", "--data", str(data), "--generator", str(ckpt), "--out", str(out), "-q"]) == 0
    assert "broken.png" in capsys.readouterr().err
    bal = json.loads(next(out.glob("balance-*/balance.json")).read_text())
    assert bal["before"] == {"covid": 2, "normal": 4} and bal["added"] == {"covid": 2}
    manifest = next(out.glob("balance-*/manifest.csv")).read_bytes()  # used to die with UnicodeEncodeError
    assert b"/caf\xe9.png," in manifest


def test_a_class_folder_linked_from_elsewhere_is_an_input_too(tmp_path, capsys):
    real_covid = tmp_path / "elsewhere" / "covid"
    real_covid.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(gray(32, i)).save(real_covid / f"{i}.png")
    (tmp_path / "data" / "normal").mkdir(parents=True)
    Image.fromarray(gray(32, 5)).save(tmp_path / "data" / "normal" / "n.png")
    os.symlink(real_covid, tmp_path / "data" / "covid")
    _refused(["data", "split", str(tmp_path / "data"), "--out", str(real_covid / "runs"), "-q"], capsys, real_covid)


# ------------------------------------------------------------------ symlinks at any depth (issue 14 item 1)
def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray(32, seed)).save(path)
    return path


def test_a_nested_linked_folder_is_an_input_and_a_link_to_it_does_not_fool_the_guard(tmp_path, capsys):
    """Symlinks were resolved only for class folders: a linked folder one level further down (here
    data/covid/batch2 -> store/b2) was read, but an output inside store/b2 was accepted; so was one reached
    through a second link (out-link -> store/b2)."""
    store = tmp_path / "store" / "b2"
    for i in range(2):
        _png(store / f"{i}.png", i)
    _png(tmp_path / "data" / "covid" / "c.png", 3)
    _png(tmp_path / "data" / "normal" / "n.png", 4)
    os.symlink(store, tmp_path / "data" / "covid" / "batch2")
    os.symlink(store, tmp_path / "out-link")
    from cxraug.data import read_folder

    assert read_folder(tmp_path / "data").counts() == {"covid": 3, "normal": 1}  # the reader does follow it
    data = str(tmp_path / "data")
    for out in (store / "runs", tmp_path / "out-link" / "runs", tmp_path / "out-link"):
        _refused(["data", "split", data, "--out", str(out), "-q"], capsys, store)
        _refused(["encoder", "train", "--data", data, "--steps", "1", "--out", str(out), "-q"], capsys, store)
    assert main(["data", "split", data, "--size", "32", "--out", str(tmp_path / "runs"), "-q"]) == 0  # outside: fine


def test_a_linked_image_file_protects_the_folder_it_points_into(tmp_path, capsys):
    """An image that is a symlink (in a class folder, or listed by a manifest) is read from its target's
    folder: that folder is an input too. The guard used to look at the link's folder only."""
    store = tmp_path / "store"
    for i in range(3):
        _png(store / f"s{i}.png", i)
    _png(tmp_path / "data" / "normal" / "n.png", 5)
    _png(tmp_path / "data" / "covid" / "c.png", 6)
    os.symlink(store / "s0.png", tmp_path / "data" / "covid" / "linked.png")
    _refused(["data", "prepare", str(tmp_path / "data"), "--out", str(store / "runs"), "-q"], capsys, store)
    links = tmp_path / "links"
    links.mkdir()
    for i in range(3):
        os.symlink(store / f"s{i}.png", links / f"{i}.png")
    (tmp_path / "meta").mkdir()
    csv_ = write_rows(tmp_path / "meta" / "m.csv", ["path", "label"],
                      [[f"../links/{i}.png", "covid" if i else "normal"] for i in range(3)])  # fmt: skip
    _refused(["data", "split", str(csv_), "--out", str(store / "r"), "-q"], capsys, store)
    _refused(["evaluate", "--real", str(csv_), "--fake", "phantom:normal=4", "--n", "3", "--k", "1",
              "--out", str(store / "r"), "-q"], capsys, store)  # fmt: skip


def test_a_linked_manifest_protects_its_real_folder_and_root(tmp_path, capsys):
    """A manifest reached through a symlink is read where it lies (its folder, with any label file beside it,
    is an input), and ``--root`` names another folder the rows start from."""
    real = tmp_path / "release"
    for i in range(4):
        _png(real / "png" / f"id{i}.png", i)
    csv_ = write_rows(real / "data.csv", ["image_id", "patient_id", "projection"],
                      [[f"id{i}", f"p{i}", "PA"] for i in range(4)])  # fmt: skip
    (tmp_path / "work").mkdir()
    os.symlink(csv_, tmp_path / "work" / "data.csv")
    linked = str(tmp_path / "work" / "data.csv")
    _refused(["data", "split", linked, "--out", str(real / "runs"), "-q"], capsys, real)
    _refused(["data", "split", linked, "--out", str(tmp_path / "work" / "runs"), "-q"], capsys, tmp_path / "work")
    # --root: the rows start from another folder, which is protected although no image lies directly in it
    (tmp_path / "m").mkdir()
    rooted = write_rows(tmp_path / "m" / "list.csv", ["path", "label"], [[f"png/id{i}.png", "covid"] for i in range(4)])
    _refused(["data", "split", str(rooted), "--root", str(real), "--out", str(real / "x"), "-q"], capsys, real)
