"""Issue 32 "Hostile input, round 3": each case ends in one clear line (exit 2) or names the file it skips;
no traceback, no signal, no partial file."""

from __future__ import annotations

import errno
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from badinput.corpus import add_round3_bad_files, gray
from cxraug.cli import main

PHANTOM = "phantom:normal=8,covid=4"


def one_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("cxraug: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def billion_laughs(key: str, levels: int = 9) -> str:
    """A YAML alias bomb under ``key``: 9 levels of 9 aliases each, 9**9 (387 M) strings once expanded."""
    lines = ["defs:", '  - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}: *a{levels - 1}\n"


# ----------------------------------------------------------------------------- item 2: the safe YAML loader
@pytest.mark.parametrize("key", ["steps", "diffaug", "g_layout", "unet_mult"])
def test_yaml_alias_bomb_in_a_training_config_is_one_line(tmp_path, capsys, key):
    """A "billion laughs" config filled the memory for 8-30 s and ended in MemoryError."""
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(billion_laughs(key).replace("defs:", "data: {path: '" + PHANTOM + "'}\ndefs:"))
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "runs"), "-q"]
    t0 = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - t0 < 1.0
    one_line(capsys, "bomb.yaml: invalid YAML", "expands to more than 1,000,000 values")
    tracemalloc.start()
    try:
        assert main(argv) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, peak
    capsys.readouterr()
    assert not (tmp_path / "runs").exists()


def test_yaml_alias_bomb_in_a_study_gan_block_and_in_set(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(billion_laughs("gan").replace("\ngan: *a8", "\ngan: {preset: dcgan-64, overrides: *a8}"))
    assert main(["benchmark", "--config", str(study), "--out", str(tmp_path / "o"), "-q"]) == 2
    one_line(capsys, "s.yaml: invalid YAML", "expands to more than")
    levels = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = "{defs: [" + ", ".join(levels) + "], widths: *a8}"  # the same bomb in one flow-style line
    assert main(["train", "--data", PHANTOM, "--set", f"g_layout={bomb}", "--out", str(tmp_path / "r")]) == 2
    one_line(capsys, "override 'g_layout=", "invalid YAML value (the document expands to more than")
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("text,fragment", [
    ("steps: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 50 levels"),  # was RecursionError
    ("steps: .inf\n", "non-finite number '.inf' (line 1)"),  # was OverflowError
    ("steps: 10\nsteps: 20\n", "duplicate key 'steps' (line 2)"),
    ("a: &a [*a]\n", "an alias refers to the node that contains it"),
    ("foo: 1\n3: 2\n", "unknown key(s) [3, 'foo']"),  # was TypeError sorting str and int
])  # fmt: skip
def test_hostile_yaml_in_a_config_file(tmp_path, capsys, text, fragment):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["train", "--data", PHANTOM, "--config", str(cfg), "--out", str(tmp_path / "r"), "-q"]) == 2
    one_line(capsys, fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--data", PHANTOM, "--set", "width=.inf"], "override 'width=.inf': invalid YAML value (non-finite"),
    (["train", "--data", PHANTOM, "--set", "lr_d=.nan"], "non-finite number '.nan'"),
    (["benchmark", "--set", "seeds=[0, .inf]"], "non-finite number '.inf'"),
    (["benchmark", "--set", "epochs=.inf"], "non-finite number '.inf'"),
])  # fmt: skip
def test_non_finite_overrides(tmp_path, capsys, argv, fragment):
    assert main([*argv, "--out", str(tmp_path / "o"), "-q"]) == 2
    one_line(capsys, fragment)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_sources_in_a_study_yaml_are_refused(tmp_path, capsys):
    """The second `sources:` silently replaced the first."""
    study = tmp_path / "s.yaml"
    study.write_text(f"sources: [{{path: '{PHANTOM}'}}]\nprotocols: [real]\nsources: [{{path: 'phantom'}}]\n")
    assert main(["benchmark", "--config", str(study), "--out", str(tmp_path / "o"), "-q"]) == 2
    one_line(capsys, "s.yaml: invalid YAML (duplicate key 'sources' (line 3)")


# ----------------------------------------------------------------------------- items 3 and 4: bounds up front
TRAIN = ["train", "--preset", "dcgan-64", "--data", PHANTOM, "--steps", "1", "-q"]


@pytest.mark.parametrize("extra,fragments", [
    (["--set", "width=10000000"], ["dcgan-64: networks of", "(width=10000000, z_dim=100, 64 px) need about",
                                   "more than the", "lower --set width / z_dim / g_layout"]),
    (["--set", "z_dim=100000000000"], ["z_dim=100000000000", "more than the"]),
    (["--set", "g_layout.widths=[-4,8,8,8]"], ["dcgan-64: its networks cannot be built from this config",
                                              "negative dimension -4"]),
    (["--data", "phantom:normal=-5"], ["'normal=-5' must name a class and a count >= 1"]),
    (["--data", "phantom:normal=100000000,covid=16"], ["asks for 100,000,016 images; at most 100,000 in all"]),
])  # fmt: skip
def test_training_sizes_are_bounded_up_front(tmp_path, capsys, extra, fragments):
    """Each was an allocator traceback, a bare ValueError, a torch.cat error or a segmentation fault."""
    assert main([*TRAIN, *extra, "--out", str(tmp_path / "runs")]) == 2
    one_line(capsys, *fragments)
    assert not (tmp_path / "runs").exists()


def test_the_memory_bound_counts_every_critic(tmp_path, capsys, monkeypatch):
    """StyleGAN2-ADA's discriminator was left out of the bound (the trainer's critic lookup returned None for it):
    a machine with room for the generator's training state but not the discriminator's passed the check. With memory
    between the two, the run is refused up front, naming both networks' weights."""
    import torch

    from cxraug.config import from_dict, to_dict
    from cxraug.models import common
    from cxraug.models.stylegan2 import build_discriminator, build_generator
    from cxraug.train.checks import TRAIN_BYTES_PER_WEIGHT
    from cxraug.train.config import TrainConfig, preset

    config = to_dict(from_dict(TrainConfig, preset("stylegan2-ada-64")))
    with torch.device("meta"):
        g, d = build_generator(config, 1), build_discriminator(config, 1)
    g_bytes, d_bytes = common.tensor_bytes(g), common.tensor_bytes(d)
    monkeypatch.setattr(common, "memory_bytes", lambda device="cpu": TRAIN_BYTES_PER_WEIGHT * (g_bytes + d_bytes // 2))
    argv = ["train", "--preset", "stylegan2-ada-64", "--data", PHANTOM, "--steps", "1", "-q"]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 2
    one_line(capsys, f"stylegan2-ada-64: networks of {(g_bytes + d_bytes) // 4:,} weights", "w_dim=")
    assert not (tmp_path / "runs").exists()


def _study(tmp_path: Path, **fields) -> Path:
    import yaml

    doc = {"sources": [{"path": PHANTOM}], "protocols": ["real", "gan-aug"], "regimes": [1.0], "seeds": [0],
           "epochs": 1, **fields}  # fmt: skip
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("fields,fragments", [
    ({"gan": {"preset": "stylegan9"}}, ["gan: unknown preset 'stylegan9'; choose from"]),  # was KeyError
    ({"gan": {"steps": -5}}, ["gan: steps must be an integer >= 1, got -5"]),  # was FileNotFoundError, folder made
    ({"gan": {"width": 10000000}}, ["gan: dcgan-64: networks of", "more than the"]),
    ({"gan": {"overrides": ["g_layout.widths=[-1,2,2,2]"]}}, ["gan: dcgan-64: its networks cannot be built"]),
    ({"model": "vit-huge"}, ["model 'vit-huge' is not a classifier here; choose from lightweight"]),
    ({"sources": [{"path": "phantom:normal=100000000,covid=16"}]}, ["at most 100,000 in all"]),  # was SIGSEGV
    ({"sources": [{"path": "phantom:normal=-5"}]}, ["'normal=-5' must name a class and a count >= 1"]),
])  # fmt: skip
def test_study_config_is_checked_before_the_study_folder(tmp_path, capsys, fields, fragments):
    out = tmp_path / "o"
    assert main(["benchmark", "--config", str(_study(tmp_path, **fields)), "--out", str(out), "-q"]) == 2
    one_line(capsys, *fragments)
    assert not out.exists()


def test_the_study_and_train_share_one_validator(monkeypatch):
    """`check_study` validates the `gan:` block with cxraug train's own check_train_config."""
    from cxraug.classify.config import GanSpec, StudyConfig
    from cxraug.cli import study as ccli
    from cxraug.train import checks

    seen = []
    monkeypatch.setattr(checks, "check_train_config", lambda cfg: seen.append(cfg))
    ccli.check_study(StudyConfig(gan=GanSpec(steps=7)))
    assert len(seen) == 1 and seen[0].steps == 7 and seen[0].preset == "dcgan-64"


def test_evaluate_with_too_few_images_says_how_many(tmp_path, capsys):
    """One generated image ended in numpy's "Cannot take a larger sample than population"."""
    one = tmp_path / "one"
    one.mkdir()
    Image.fromarray(gray(64, 1)).save(one / "a.png")
    out = tmp_path / "o"
    assert main(["evaluate", "--real", "phantom:normal=12", "--fake", str(one), "--out", str(out), "-q"]) == 2
    one_line(capsys, "need at least 2 real and 2 generated images", "got 12 real and 1 generated")
    assert main(["evaluate", "--real", str(one), "--fake", "phantom:normal=12", "--out", str(out), "-q"]) == 2
    one_line(capsys, "need at least 2 real and 2 generated images", "got 1 real and 12 generated")
    assert main(["evaluate", "--real", "phantom", "--fake", "phantom", "--n", "100000000", "--out", str(out)]) == 2
    one_line(capsys, "--n must be <= 200,000 images per set, got 100,000,000")
    assert not out.exists()


# ----------------------------------------------------------------------------- item 5: checkpoints
@pytest.fixture(scope="module")
def covid_ckpt(tmp_path_factory) -> Path:
    """A 1-step DCGAN trained on the covid class (so `balance` can use it)."""
    out = tmp_path_factory.mktemp("ck")
    assert main([*TRAIN, "--class", "covid", "--set", "width=8", "--out", str(out / "runs")]) == 0
    (ck,) = (out / "runs").glob("train-*/checkpoints/last.pt")
    return ck


def _doctored(src: Path, dest: Path, change) -> Path:
    st = torch.load(src, weights_only=True)
    change(st)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(st, dest)
    return dest


CHECKPOINT_CASES = {
    "nozdim.pt": (lambda st: st["config"].pop("z_dim"), "nozdim.pt: its config has no 'z_dim' for its dcgan generator"),
    "nofamily.pt": (lambda st: (st.pop("family"), st["config"].pop("family")), "nofamily.pt is not a usable cxraug GAN "
                    "checkpoint (no 'family')"),
    "listweights.pt": (lambda st: st.update(weights=[1, 2], ema=None), "listweights.pt is not a usable cxraug GAN "
                       "checkpoint (weights is a list, not a mapping of networks)"),
    "listG.pt": (lambda st: st.update(ema={"G": list(st["ema"]["G"].values())}), "listG.pt is not a usable cxraug GAN "
                 "checkpoint (ema['G'] is not a mapping of parameter names to tensors)"),
    "hugewidth.pt": (lambda st: st["config"].update(width=10000000), "hugewidth.pt: its dcgan generator (width "
                     "10000000, z_dim 100) needs about"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHECKPOINT_CASES))
def test_bad_checkpoints_are_one_line_in_synthesize_balance_and_evaluate(covid_ckpt, tmp_path, capsys, name):
    change, fragment = CHECKPOINT_CASES[name]
    ck = _doctored(covid_ckpt, tmp_path / "ck" / name, change)
    out = tmp_path / "o"
    assert main(["synthesize", "--checkpoint", str(ck), "--n", "4", "--out", str(out / "syn"), "-q"]) == 2
    one_line(capsys, fragment)
    assert main(["balance", "--data", PHANTOM, "--generator", str(ck), "--out", str(out), "-q"]) == 2
    one_line(capsys, fragment)
    assert main(["evaluate", "--real", PHANTOM, "--fake", str(ck), "--n", "8", "--k", "2", "--out", str(out),
                 "-q"]) == 2  # fmt: skip
    one_line(capsys, fragment)
    assert not out.exists() or list(out.iterdir()) == []  # nothing written


def test_synthesize_bounds_n_and_streams_batches(covid_ckpt, tmp_path, capsys):
    """--n 100000000 (a typo) filled the memory for 45 s; now it is refused, and a large --n is written batch by
    batch (the same images as generate() makes at once)."""
    assert main(["synthesize", "--checkpoint", str(covid_ckpt), "--n", "100000000", "--out", str(tmp_path / "s"),
                 "-q"]) == 2  # fmt: skip
    one_line(capsys, "--n must be <= 1,000,000 images per run, got 100,000,000")
    from cxraug.synth.generate import generate, generate_batches

    info, batches = generate_batches(covid_ckpt, 300, seed=3, batch=128)
    sizes = [len(b[0]) for b in batches]
    assert sizes == [128, 128, 44] and info["size"] == 64
    whole, _, _ = generate(covid_ckpt, 300, seed=3, batch=128)
    assert main(["synthesize", "--checkpoint", str(covid_ckpt), "--n", "300", "--seed", "3", "--out",
                 str(tmp_path / "s"), "-q"]) == 0  # fmt: skip
    files = sorted((tmp_path / "s" / "covid").glob("*.png"))
    assert len(files) == 300 and files[-1].name == "syn-3-000299.png"
    assert np.array_equal(np.asarray(Image.open(files[-1])), whole[299])


# ----------------------------------------------------------------------------- item 6: OS errors, one line
def test_synthesize_into_a_read_only_folder_is_one_line(covid_ckpt, tmp_path, capsys, monkeypatch):
    """A PermissionError traceback before. Injected (EROFS), as a test running as root ignores chmod."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["synthesize", "--checkpoint", str(covid_ckpt), "--n", "4", "--out", str(ro / "x"), "-q"]) == 2
    one_line(capsys, f"cannot write {ro / 'x' / 'covid'}: permission denied (read-only file system)")
    assert list(ro.iterdir()) == []


def test_an_os_error_no_writer_named_is_still_one_line(tmp_path, capsys, monkeypatch):
    """The command line's last resort: an OSError anywhere becomes one line naming its file."""

    def boom(a):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr("cxraug.cli.data.cmd_data_inspect", boom)  # bound when the parser is built
    assert main(["data", "inspect", PHANTOM, "-q"]) == 2
    one_line(capsys, f"{tmp_path / 'x'}: permission denied")


@pytest.mark.parametrize("failure", ["torch-zip-writer", "enospc"])
def test_train_on_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch, failure):
    """torch's zip writer hides ENOSPC behind "[enforce fail at inline_container.cc:672] unexpected pos 64 vs 0"."""
    import shutil
    from collections import namedtuple

    real_save = torch.save

    def full_save(obj, f, *a, **k):
        partial = b"PK\x03\x04partial"  # a partial zip, as a full disk leaves it
        f.write(partial) if hasattr(f, "write") else Path(f).write_bytes(partial)
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 64 vs 0")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    monkeypatch.setattr(torch, "save", full_save)
    out = tmp_path / "runs"
    try:
        assert main([*TRAIN, "--set", "width=8", "--out", str(out)]) == 2
    finally:
        monkeypatch.setattr(torch, "save", real_save)
    (run,) = out.iterdir()
    one_line(capsys, f"cannot write {run / 'checkpoints' / 'last.pt'}: disk full")
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == "last.pt"]


def test_report_on_a_truncated_results_json_is_one_line(tmp_path, capsys):
    study = tmp_path / "study"
    (study / "runs" / "k1").mkdir(parents=True)
    (study / "data.json").write_text("{}")
    (study / "results.json").write_text(json.dumps({"runs": [{"key": "k1"}], "summary": {}})[:15])
    assert main(["report", str(study), "-q"]) == 2
    one_line(capsys, "results.json is not valid JSON", "truncated or damaged", "cxraug benchmark --resume")
    (study / "results.json").write_text(json.dumps({"runs": [{"key": "k1"}], "summary": {}}))
    (study / "runs" / "k1" / "result.json").write_text('{"regime": 1.0, "se')
    assert main(["report", str(study), "-q"]) == 2
    one_line(capsys, "k1/result.json is not valid JSON")
    assert not (study / "report.html").exists()


# ----------------------------------------------------------------------------- item 1: skipped files named
@pytest.fixture(scope="module")
def one_bad_each(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """normal/ and covid/ with 5 good PNGs each and, in covid/, one of each unreadable file of the issue."""
    root = tmp_path_factory.mktemp("onebad") / "data"
    for c, off in (("normal", 0), ("covid", 10)):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(gray(64, off + i)).save(root / c / f"{c}{i}.png")
    return root, add_round3_bad_files(root / "covid")


def _names_each(capsys, expected: dict[str, str], run: Path | None = None) -> None:
    cap = capsys.readouterr()
    for name, frag in expected.items():
        line = next((x for x in cap.err.splitlines() if x.startswith("skipped: ") and name in x), None)
        assert line is not None and frag in line, (name, cap.err)
    if run is not None:
        assert f"skipped {len(expected)} file(s) (unreadable or left out), listed in {run / 'skipped.csv'}" in cap.out
        listed = (run / "skipped.csv").read_text()
        for name, frag in expected.items():
            assert name in listed and frag in listed


def test_data_split_names_each_skipped_file(one_bad_each, tmp_path, capsys):
    """`data split` on good PNGs + one bad file printed nothing about it."""
    root, expected = one_bad_each
    out = tmp_path / "o"
    assert main(["data", "split", str(root), "--out", str(out), "-q"]) == 0
    (run,) = out.iterdir()
    _names_each(capsys, expected, run)


def test_train_evaluate_and_encoder_name_each_skipped_file(one_bad_each, tmp_path, capsys):
    root, expected = one_bad_each
    out = tmp_path / "o"
    assert main(["train", "--preset", "dcgan-64", "--data", str(root), "--steps", "1", "--set", "width=8", "--out",
                 str(out / "t"), "-q"]) == 0  # fmt: skip
    (run,) = (out / "t").iterdir()
    _names_each(capsys, expected, run)
    assert main(["encoder", "train", "--data", str(root), "--steps", "1", "--out", str(out / "n"), "-q"]) == 0
    (run,) = (out / "n").iterdir()
    _names_each(capsys, expected, run)
    enc = f"encoder:{run / 'encoder.safetensors'}"  # a 1-step encoder: fast features
    assert main(["evaluate", "--real", str(root), "--fake", PHANTOM, "--n", "12", "--k", "2", "--features", enc,
                 "--allow-encoder-overlap", "--out", str(out / "e"), "-q"]) == 0  # fmt: skip
    (run,) = (out / "e").iterdir()
    _names_each(capsys, expected, run)


def test_balance_names_each_skipped_file(one_bad_each, covid_ckpt, tmp_path, capsys):
    root, expected = one_bad_each
    out = tmp_path / "o"
    assert main(["balance", "--data", str(root), "--generator", str(covid_ckpt), "--out", str(out), "-q"]) == 0
    (run,) = out.iterdir()
    _names_each(capsys, expected, run)


def test_synthesize_source_names_each_skipped_file(one_bad_each, tmp_path, capsys):
    root, expected = one_bad_each
    out = tmp_path / "o"
    assert main(["train", "--preset", "cyclegan-64", "--data", PHANTOM, "--domain-a", "normal", "--domain-b", "covid",
                 "--steps", "1", "--set", "width=4", "--set", "n_blocks=1", "--out", str(out / "t"), "-q"]) == 0  # fmt: skip
    capsys.readouterr()
    (ck,) = (out / "t").glob("*/checkpoints/last.pt")
    syn = out / "syn"
    assert main(["synthesize", "--checkpoint", str(ck), "--source", str(root / "covid"), "--out", str(syn), "-q"]) == 0
    _names_each(capsys, expected, syn)
    assert len(list(syn.rglob("*.png"))) == 5


def test_the_study_names_each_skipped_file(one_bad_each, capsys):
    from cxraug.classify.assemble import load_labelled
    from cxraug.classify.config import Source

    root, expected = one_bad_each
    ds, _ = load_labelled([Source(str(root))], 64, progress=False)
    assert len(ds) == 10
    _names_each(capsys, expected)


def test_the_benchmark_lists_each_skipped_file_in_the_study_folder(one_bad_each, tmp_path, capsys):
    """`cxraug benchmark`: the study folder gets skipped.csv, as every other command's run folder does."""
    from cxraug.classify.config import Source, StudyConfig
    from cxraug.classify.study import Study

    root, expected = one_bad_each
    st = Study(StudyConfig(sources=[Source(str(root))], size=32, protocols=["real"], regimes=[1.0], seeds=[0]),
               tmp_path / "study", progress=False)  # fmt: skip
    st.prepare()
    _names_each(capsys, expected, tmp_path / "study")


def test_more_skipped_files_than_shown_are_counted(tmp_path, capsys):
    from cxraug.data.skipped import SHOWN, announce

    assert announce([f"{tmp_path}/f{i}.png: not an image" for i in range(SHOWN + 3)]) == SHOWN + 3
    err = capsys.readouterr().err.splitlines()
    assert (
        len(err) == SHOWN + 1
        and err[-1] == f"skipped: ... and 3 more (all {SHOWN + 3} are listed in the run folder's skipped.csv)"
    )
