"""`cxraug data inspect|prepare` and bad input (issue 2 item 7; issue 7 corpus)."""

from __future__ import annotations

import os

import pytest

from badinput.corpus import N_GOOD, N_SKIPPED, make_corpus
from conftest import shared, snapshot
from cxraug.cli import main
from cxraug.data import read_folder, read_image
from cxraug.data.skipped import SHOWN
from cxraug.errors import CXRAugError, ImageReadError


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    expected = make_corpus(root)
    return root, expected


def test_every_bad_file_gets_one_clear_error(corpus):
    root, expected = corpus
    for name, frag in expected.items():
        with pytest.raises(ImageReadError) as ei:
            read_image(root / "bad" / name)
        msg = str(ei.value)
        assert name in msg and frag in msg, msg
        assert "\n" not in msg


def test_unusual_but_valid_files_load(corpus):
    root, _ = corpus
    for s in read_folder(root).only_class("good").samples:
        img = s.load().image
        assert img.ndim == 2 and img.min() >= 0 and img.max() <= 1


def test_inspect_corpus_summarises_and_touches_nothing(corpus, capsys):
    root, expected = corpus
    before = snapshot(root)
    assert main(["data", "inspect", str(root), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"unreadable files: {len(expected)}" in out
    for name in expected:
        assert name in out
    assert "class folder has no images" in out  # the empty class
    assert "symlink loop" in out
    assert f"{N_GOOD} readable images" in out
    if N_SKIPPED:  # the FIFO: listed as skipped, never opened (it used to hang inspect forever)
        assert f"skipped files: {N_SKIPPED}" in out and "pipe.png: FIFO, not a regular file" in out
    assert "Traceback" not in out
    assert snapshot(root) == before
    assert main(["data", "inspect", str(root), "-q", "--no-skip-bad"]) == 1


def test_non_utf8_name_is_read_and_printable(corpus, capsys):
    import json

    from cxraug.errors import show_path

    root, _ = corpus
    assert main(["data", "inspect", str(root), "-q", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["good"] == N_GOOD  # 3 plain + RGBA, palette, 16-bit, MONOCHROME1 DICOM, non-UTF-8 name, ...
    name = next(s.path for s in read_folder(root).samples if "caf" in s.path)
    assert show_path(name).endswith("caf\\xe9-latin1.png")


def test_missing_path_is_one_line_error(capsys, tmp_path):
    assert main(["data", "inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "Traceback" not in err
    with pytest.raises(CXRAugError, match="no images"):
        read_folder(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "emptyroot" / "cls"
    d.mkdir(parents=True)
    return d.parent


def test_prepare_writes_run_folder_and_preview(phantom_root, tmp_path, capsys):
    before = snapshot(phantom_root)
    out = tmp_path / "runs"
    assert main(["data", "prepare", str(phantom_root), "--size", "64", "--clahe", "--out", str(out), "-q"]) == 0
    (run,) = list(out.iterdir())
    assert (run / "preview.png").stat().st_size > 1000
    assert (run / "config.yaml").read_text().count("clahe: true") == 1
    assert snapshot(phantom_root) == before
    # Refuses to write inside the input folder.
    assert main(["data", "prepare", str(phantom_root), "--out", str(phantom_root / "runs"), "-q"]) == 2
    assert not (phantom_root / "runs").exists()


def test_prepare_skips_bad_files(corpus, tmp_path, capsys):
    root, expected = corpus
    assert main(["data", "prepare", str(root), "--out", str(tmp_path / "r"), "-q"]) == 0
    cap = capsys.readouterr()
    # the FIFO (left out before decoding), then the first 10 unreadable files by name and a count of the rest
    shown = min(len(expected), SHOWN)
    assert cap.err.count("skipped:") == N_SKIPPED + shown + (len(expected) > SHOWN), cap.err
    if len(expected) > SHOWN:
        assert f"skipped: ... and {len(expected) - SHOWN} more (all {len(expected)} are listed" in cap.err
    (run,) = (tmp_path / "r").iterdir()
    listed = (run / "skipped.csv").read_text()  # every one of them, with its reason
    for name, frag in expected.items():
        assert name in listed and frag in listed, (name, listed)
    assert f"skipped {len(expected) + N_SKIPPED} file(s) (unreadable or left out), listed in {run}" in cap.out


@pytest.mark.shared_data
def test_inspect_covid_cxnet_reports_duplicates(capsys):
    assert main(["data", "inspect", str(shared("covid-cxnet")), "-q"]) == 0
    out = capsys.readouterr().out
    assert "898 readable images" in out
    line = next(line for line in out.splitlines() if line.startswith("duplicate groups:"))
    assert int(line.split()[2]) > 0 and "exact" in out


def test_read_only_input(phantom_root, tmp_path):
    """Issue 7 item 5 (data stage): works on a read-only input folder."""
    ro = tmp_path / "ro"
    import shutil

    shutil.copytree(phantom_root, ro)
    for dp, _dns, fns in os.walk(ro):
        for f in fns:
            os.chmod(os.path.join(dp, f), 0o444)
        os.chmod(dp, 0o555)
    try:
        assert main(["data", "prepare", str(ro), "--out", str(tmp_path / "o"), "-q"]) == 0
    finally:
        for dp, _dns, _fns in os.walk(ro):
            os.chmod(dp, 0o755)


@pytest.mark.parametrize(
    "extra,expected",
    [
        ([], "cyclegan-64 translates between two classes of phantom:normal=4,covid=3: give both --domain-a and"),
        (["--domain-a", "normal"], "give both --domain-a and --domain-b"),
        (["--domain-a", "normal", "--domain-b", "normal"], "--domain-a and --domain-b are both 'normal'"),
        (["--domain-a", "normal", "--domain-b", "viral"],
         "class 'viral' is not in phantom:normal=4,covid=3; classes are ['normal', 'covid']"),
        (["--domain-a", "normal", "--domain-b", "covid", "--size", "42"],
         "cyclegan-64 cannot train on 42 px images of phantom:normal=4,covid=3 (the generator turns 42 px images "
         "into 44 px ones); choose another --size; sizes that work nearby: 40, 44"),
        (["--domain-a", "normal", "--domain-b", "covid", "--size", "16"],
         "cyclegan-64 cannot train on 16 px images of phantom:normal=4,covid=3 (Expected more than 1 spatial"),
    ],
)  # fmt: skip
def test_cyclegan_domains_and_size_are_checked_before_any_run_folder(tmp_path, capsys, extra, expected):
    """Without domains the run folder was made before the error; equal domains trained A -> A; 42 px failed at
    the first step with a tensor-size traceback and 16 px with an instance-norm traceback."""
    out = tmp_path / "runs"
    argv = ["train", "--preset", "cyclegan-64", "--data", "phantom:normal=4,covid=3", "--steps", "1",
            "--set", "width=8", "--out", str(out), "-q", *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_cyclegan_size_the_check_suggests_really_trains(tmp_path, capsys):
    """The sizes the check calls workable are: 40 px (suggested for 42) trains a step and round-trips to 40 px."""
    import numpy as np

    from cxraug.families import load_generator

    out = tmp_path / "runs"
    assert main(["train", "--preset", "cyclegan-64", "--data", "phantom:normal=3,covid=3", "--domain-a", "normal",
                 "--domain-b", "covid", "--size", "40", "--steps", "1", "--set", "width=8", "--set", "n_blocks=1",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    g = load_generator(next(out.glob("train-*/checkpoints/last.pt")))
    imgs, _ = g.sample(2, source=np.zeros((2, 40, 40), np.uint8))
    assert tuple(imgs.shape) == (2, 1, 40, 40)


def test_encoder_train_cli_trains_as_long_as_the_library_default(monkeypatch, tmp_path, capsys):
    """`encoder train` without --steps said 400 steps after the offline encoder's default became the length at
    which its texture objective ranks degradations correctly (the library default): one default now."""
    import inspect

    from cxraug.metrics import encoder as enc_mod

    default = inspect.signature(enc_mod.train_encoder).parameters["steps"].default
    seen = {}

    def spy(images, **kw):
        seen.update(kw)
        raise CXRAugError("spied")

    monkeypatch.setattr(enc_mod, "train_encoder", spy)
    assert main(["encoder", "train", "--data", "phantom:normal=4", "--size", "32", "--out", str(tmp_path), "-q"]) == 2
    assert "spied" in capsys.readouterr().err and seen.get("steps", default) == default
    assert main(["encoder", "train", "--data", "phantom:normal=4", "--size", "32", "--steps", "7", "--out",
                 str(tmp_path), "-q"]) == 2  # fmt: skip
    assert seen["steps"] == 7
