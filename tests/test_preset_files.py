"""The presets as YAML files of the package (``src/cxraug/train/presets/``): the same config dicts as the Python
presets they replaced, each file naming its paper, and ``cxraug train --list-presets``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cxraug.config import from_dict
from cxraug.errors import ConfigError
from cxraug.train.config import (
    PAPER_PRESETS,
    PRESETS,
    TUNED_PRESETS,
    TrainConfig,
    _preset_files,
    _read_preset,
    list_presets,
    preset,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "presets.json"
FOLDER = Path(__file__).resolve().parents[1] / "src" / "cxraug" / "train" / "presets"


def test_every_preset_is_the_dict_the_python_presets_gave():
    """tests/fixtures/presets.json is ``{name: preset(name)}`` dumped from the Python dicts before the move; JSON
    keeps 10.0 apart from 10, so this compares types too (e.g. ``2e-4`` that YAML would have read as a string)."""
    then = json.loads(FIXTURE.read_text())
    assert list(PRESETS) and set(PRESETS) == set(then)
    for name, config in then.items():
        assert json.dumps(preset(name), sort_keys=True) == json.dumps(config, sort_keys=True), name
        assert list(preset(name)) == list(config), name  # the same key order too


def test_the_kinds_split_the_presets():
    assert set(PAPER_PRESETS) | set(TUNED_PRESETS) == set(PRESETS)
    assert not set(PAPER_PRESETS) & set(TUNED_PRESETS)
    assert list(PRESETS) == [*PAPER_PRESETS, *TUNED_PRESETS]  # paper presets first
    assert {"hussain-wgan-96", "nguyen-wgan-gp-128", "sundaram-cgan"} <= set(PAPER_PRESETS)
    assert {"wgan-gp-64", "ddpm-64", "stylegan2-ada-256"} <= set(TUNED_PRESETS)
    assert list(TUNED_PRESETS).index("cgan-64") < list(TUNED_PRESETS).index("cgan-128")  # natural order
    assert "wgan-gp-64" not in PAPER_PRESETS and "_stylegan2-ada" not in PRESETS  # a base file is no preset
    with pytest.raises(KeyError):
        PAPER_PRESETS["wgan-gp-64"]


def test_each_file_names_its_paper_and_kind():
    infos = list_presets()
    assert [i.name for i in infos] == list(PRESETS)
    for info in infos:
        name, kind, paper = info  # a plain triple too
        assert kind in ("paper", "tuned") and paper
        assert (kind == "paper") == (name in PAPER_PRESETS)
        assert paper.startswith("project default") == (kind == "tuned"), name
        assert not {"paper", "kind", "base"} & set(preset(name))  # stripped from the config dict
        from_dict(TrainConfig, preset(name))  # every key is a config field


def test_files_are_small_and_each_preset_has_one():
    files = sorted(FOLDER.glob("*.yaml"))
    assert {f.stem for f in files if not f.stem.startswith("_")} == set(PRESETS)
    for f in files:
        lines = f.read_text().splitlines()
        assert 5 <= len(lines) <= 25, f.name
        assert lines[0].startswith("#"), f.name  # a comment first: what it follows


def test_a_lookup_is_a_fresh_copy():
    a = preset("nguyen-dcgan-64")
    a["g_layout"]["widths"].append(1)
    PRESETS["nguyen-dcgan-64"]["g_layout"]["bias"] = True
    assert preset("nguyen-dcgan-64")["g_layout"] == {"widths": [512, 256, 128, 64], "bias": False}


def test_base_merges_first_and_loops_are_refused():
    files = _preset_files()
    base, own = _read_preset(files, "_stylegan2-ada"), _read_preset(files, "stylegan2-ada-64")
    assert {k: own[k] for k in base} == base and own["map_layers"] == 2 and own["r1_gamma"] == 0.0625

    class Text:
        def __init__(self, text: str):
            self.text = text

        def read_text(self, encoding: str = "utf-8") -> str:
            return self.text

    loop = {"a": Text("base: b\nkind: tuned\n"), "b": Text("base: a\n")}
    with pytest.raises(ConfigError, match="a -> b -> a"):
        _read_preset(loop, "a")
    with pytest.raises(ConfigError, match="no such file"):
        _read_preset({"a": Text("base: c\n")}, "a")


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="wgan-gp-64"):
        preset("no-such-preset")


def test_import_reads_no_preset_file():
    """Importing the module reads nothing: the folder is read on first use."""
    import subprocess

    code = ("import cxraug.train.config as c; assert c._registry.cache_info().currsize == 0; "
            "import cxraug.cli; assert c._registry.cache_info().currsize == 0")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_the_presets_with_their_papers(capsys, tmp_path):
    from cxraug.cli import main

    assert main(["train", "--list-presets", "--out", str(tmp_path)]) == 0
    presets, families = capsys.readouterr().out.strip().split("\n\nfamilies (--set family=NAME):\n")
    lines = presets.splitlines()
    assert len(lines) == len(PRESETS)
    for line, info in zip(lines, list_presets()):
        assert line.split()[:2] == [info.name, info.kind] and line.endswith(info.paper)
    from cxraug.families import FAMILIES

    listed = dict(line.split(maxsplit=1) for line in families.splitlines())
    assert listed == {name: fam.paper for name, fam in FAMILIES.items()} and all(listed.values())
    assert not list(tmp_path.iterdir())  # nothing trained


def test_cli_help_and_choices_come_from_the_registry(capsys):
    from cxraug.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS)
    with pytest.raises(SystemExit):
        main(["train", "--preset", "no-such-preset"])
    assert "invalid choice" in capsys.readouterr().err
