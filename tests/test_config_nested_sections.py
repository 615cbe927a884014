"""Issue 29 item 3: a family's options written nested in its section (``stylegan2: {w_dim: 128}``,
``--set stylegan2.w_dim=128``, a preset file's ``ddpm:``) as well as flat, through the paths users take: a
``--config`` YAML file on a preset, ``--set``, preset files, a study's ``gan:`` overrides and ``cxraug train``.
Each source is flattened on its own before the sources are merged; what is built and saved stays flat."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxraug.config import from_dict, load_config, save_config, to_dict
from cxraug.errors import ConfigError, CXRAugError
from cxraug.models.ddpm import DDPMConfig
from cxraug.models.stylegan2 import StyleGAN2Config
from cxraug.train import config as train_config
from cxraug.train.config import SECTIONS, TrainConfig, preset

SG = "stylegan2-ada-64"


def _yaml(tmp_path: Path, text: str, name: str = "f.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _load(path: Path | None = None, *overrides: str, base: str = SG) -> TrainConfig:
    return load_config(TrainConfig, path, overrides=list(overrides), base=preset(base))


def _refused(path: Path | None = None, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        _load(path, *overrides)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- the sections
def test_sections_are_the_models_layers_and_their_keys_are_flat_fields():
    assert dict(SECTIONS) == {"stylegan2": StyleGAN2Config, "ddpm": DDPMConfig}
    assert TrainConfig.config_sections is SECTIONS
    flat = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, section in SECTIONS.items():
        assert name not in flat
        assert {f.name for f in dataclasses.fields(section)} <= flat


# --------------------------------------------------------------------------- a --config file on a preset
def test_a_nested_file_equals_the_flat_file_field_by_field(tmp_path):
    nested = _yaml(tmp_path, "stylegan2: {w_dim: 128, r1_gamma: 0.5}\nddpm:\n  diffusion_steps: 500\n"
                   "  unet_mult: [1, 2]\nwidth: 8\n")  # fmt: skip
    flat_text = "w_dim: 128\nr1_gamma: 0.5\ndiffusion_steps: 500\nunet_mult: [1, 2]\nwidth: 8\n"
    flat = _yaml(tmp_path, flat_text, "flat.yaml")
    a, b = _load(nested), _load(flat)
    assert a.w_dim == 128 and a.r1_gamma == 0.5 and a.diffusion_steps == 500 and a.unet_mult == [1, 2]
    assert a.map_layers == 2 and a.ada == "bgc"  # the preset's and its base's values where the file is silent
    for f in dataclasses.fields(TrainConfig):
        assert getattr(a, f.name) == getattr(b, f.name), f.name
    assert to_dict(a) == to_dict(b)


def test_precedence_is_by_source_as_for_flat_keys(tmp_path):
    nested = _yaml(tmp_path, "stylegan2: {w_dim: 128}\n")
    assert preset(SG)["w_dim"] == 512 and _load(nested).w_dim == 128  # the file beats the preset
    assert _load(nested, "stylegan2.w_dim=96").w_dim == 96  # --set beats the file
    assert _load(nested, "w_dim=96").w_dim == 96  # ... flat or nested, either way round
    assert _load(_yaml(tmp_path, "w_dim: 128\n", "flat.yaml"), "stylegan2.w_dim=96").w_dim == 96
    both = _load(nested, "stylegan2={w_dim: 64, r1_gamma: 2.0}")  # a whole section as one --set value
    assert (both.w_dim, both.r1_gamma, both.map_layers) == (64, 2.0, 2)
    assert _load(None, "stylegan2.w_dim=32", "stylegan2.w_dim=48").w_dim == 48  # the last --set wins, as flat
    assert _load(_yaml(tmp_path, "stylegan2:\n", "empty.yaml")).w_dim == 512  # an empty section: nothing set


def test_values_in_a_section_are_checked_as_flat_ones(tmp_path):
    cfg = _load(None, "stylegan2.w_dim=128", "ddpm.unet_mult=1,2", "stylegan2.class_cond=true")
    assert cfg.w_dim == 128 and cfg.unet_mult == [1, 2] and cfg.class_cond is True
    with pytest.raises(CXRAugError, match=r"w_dim: expected int, got 'big'"):  # the flat key's own check
        _load(_yaml(tmp_path, "stylegan2: {w_dim: big}\n"))


# --------------------------------------------------------------------------- refusals, one line each
def test_a_key_given_flat_and_in_its_section_in_one_source_is_refused(tmp_path):
    f = _yaml(tmp_path, "w_dim: 64\nstylegan2: {w_dim: 128}\n")
    assert _refused(f) == f"{f}: w_dim given twice: flat and in stylegan2:"
    f = _yaml(tmp_path, "ddpm: {sample_steps: 20}\nsample_steps: 30\n", "g.yaml")
    assert _refused(f) == f"{f}: sample_steps given twice: flat and in ddpm:"
    assert _refused(None, "w_dim=64", "stylegan2.w_dim=128") == (
        "overrides (--set): w_dim given twice: flat and in stylegan2:")  # fmt: skip
    assert "w_dim given twice: flat and in stylegan2:" in _refused(None, "stylegan2.w_dim=128", "w_dim=64")
    # class_cond belongs to both sections: one source may give it once
    f = _yaml(tmp_path, "stylegan2: {class_cond: true}\nddpm: {class_cond: true}\n", "h.yaml")
    assert _refused(f) == f"{f}: class_cond given twice: in stylegan2: and in ddpm:"
    other_source = _load(_yaml(tmp_path, "stylegan2: {class_cond: true}\n", "i.yaml"), "ddpm.class_cond=false")
    assert other_source.class_cond is False


def test_an_unknown_key_of_a_section_is_refused_naming_it_and_the_valid_keys(tmp_path):
    f = _yaml(tmp_path, "stylegan2: {w_dimm: 128}\n")
    msg = _refused(f)
    assert msg.startswith(f"{f}: stylegan2: unknown key 'w_dimm'; known: ada, ada_interval, "), msg
    assert all(k.name in msg for k in dataclasses.fields(StyleGAN2Config))
    msg = _refused(None, "ddpm.w_dim=128")  # a key of the other section
    assert msg.startswith("overrides (--set): ddpm: unknown key 'w_dim'; known: class_cond, diffusion_steps"), msg


def test_a_section_that_is_not_a_mapping_is_refused(tmp_path):
    f = _yaml(tmp_path, "stylegan2: 128\n")
    assert _refused(f) == (f"{f}: stylegan2: expected a mapping of its keys (stylegan2: {{KEY: VALUE}} or "
                           "--set stylegan2.KEY=VALUE), got 128")  # fmt: skip
    assert "ddpm: expected a mapping of its keys" in _refused(_yaml(tmp_path, "ddpm: [1, 2]\n", "g.yaml"))
    assert "stylegan2: expected a mapping of its keys" in _refused(None, "stylegan2=")


# --------------------------------------------------------------------------- what is saved stays flat
def test_the_saved_config_is_flat_and_reads_back_the_same(tmp_path):
    cfg = _load(_yaml(tmp_path, "stylegan2: {w_dim: 128}\nddpm: {sample_steps: 20}\n"), "stylegan2.r1_gamma=0.5")
    saved = yaml.safe_load(save_config(cfg, tmp_path / "config.yaml").read_text())
    assert not set(saved) & set(SECTIONS)
    assert (saved["w_dim"], saved["sample_steps"], saved["r1_gamma"]) == (128, 20, 0.5)
    assert load_config(TrainConfig, tmp_path / "config.yaml") == cfg
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg  # how a checkpoint's config is read


def test_from_dict_takes_one_source_with_sections():
    cfg = from_dict(TrainConfig, {"family": "stylegan2", "stylegan2": {"w_dim": 128}, "ddpm": {"unet_layers": 1}})
    assert (cfg.w_dim, cfg.unet_layers) == (128, 1)
    with pytest.raises(ConfigError, match=r"^config: w_dim given twice: flat and in stylegan2:$"):
        from_dict(TrainConfig, {"w_dim": 64, "stylegan2": {"w_dim": 128}})


# --------------------------------------------------------------------------- preset files
@pytest.fixture
def preset_folder(tmp_path, monkeypatch):
    """A presets folder of the test's own files in place of the package's (read again on first use)."""
    folder = tmp_path / "presets"
    folder.mkdir()
    monkeypatch.setattr(train_config, "_preset_files", lambda: {p.stem: p for p in folder.glob("*.yaml")})
    train_config._registry.cache_clear()
    yield folder
    train_config._registry.cache_clear()


def test_a_preset_file_may_write_a_section_and_its_base_too(preset_folder):
    (preset_folder / "_base.yaml").write_text("family: stylegan2\nstylegan2: {w_dim: 256, map_layers: 4}\n")
    (preset_folder / "sg-64.yaml").write_text('paper: "project default; test"\nkind: tuned\nbase: _base\n'
                                              "stylegan2:\n  map_layers: 2\n  r1_gamma: 0.0625\n")  # fmt: skip
    (preset_folder / "flat-64.yaml").write_text('paper: "project default; test"\nkind: tuned\nfamily: stylegan2\n'
                                                "w_dim: 256\nmap_layers: 2\nr1_gamma: 0.0625\n")  # fmt: skip
    got = preset("sg-64")
    assert not set(got) & set(SECTIONS)  # a preset's config dict is flat
    assert (got["w_dim"], got["map_layers"], got["r1_gamma"]) == (256, 2, 0.0625)  # the base's section kept
    cfg = load_config(TrainConfig, overrides=["stylegan2.r1_gamma=1.0"], base=preset("sg-64"))
    assert (cfg.w_dim, cfg.map_layers, cfg.r1_gamma) == (256, 2, 1.0)
    assert {**to_dict(from_dict(TrainConfig, preset("sg-64"))), "preset": "x"} == {
        **to_dict(from_dict(TrainConfig, preset("flat-64"))), "preset": "x"}  # fmt: skip


def test_a_preset_file_giving_a_key_twice_is_refused_naming_the_file(preset_folder):
    (preset_folder / "bad-64.yaml").write_text('paper: "project default; test"\nkind: tuned\n'
                                               "w_dim: 64\nstylegan2: {w_dim: 128}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^presets/bad-64\.yaml: w_dim given twice: flat and in stylegan2:$"):
        preset("bad-64")


def test_the_shipped_presets_stay_flat():
    for name in train_config.PRESETS:
        assert not set(preset(name)) & set(SECTIONS), name


# --------------------------------------------------------------------------- a study's gan: block
def test_a_study_gan_block_takes_nested_overrides():
    from cxraug.classify.config import GanSpec
    from cxraug.classify.generators import gan_train_config

    cfg = gan_train_config(GanSpec(preset=SG, overrides=["stylegan2.w_dim=128", "stylegan2.ada="]), 64)
    assert (cfg.w_dim, cfg.ada, cfg.width) == (128, "", 32)
    with pytest.raises(ConfigError, match="w_dim given twice: flat and in stylegan2:"):
        gan_train_config(GanSpec(preset=SG, overrides=["w_dim=64", "stylegan2.w_dim=128"]), 64)


def test_a_study_gan_block_takes_a_section_as_in_a_training_config(tmp_path):
    """``gan: {stylegan2: {w_dim: 64}}`` in a study YAML, read by the study's own loader; a key also in
    ``overrides`` is refused as given twice; the section reaches the generator's TrainConfig."""
    from cxraug.classify.config import load_study_config
    from cxraug.classify.generators import gan_train_config

    study = _yaml(tmp_path, f"sources: [{{path: 'phantom:normal=8,covid=8'}}]\ngan: {{preset: {SG}, "
                            "stylegan2: {w_dim: 64, ada: ''}, ddpm: {}}\n")  # fmt: skip
    cfg = gan_train_config(load_study_config(study).gan, 64)
    assert (cfg.w_dim, cfg.ada, cfg.family) == (64, "", "stylegan2")
    twice = load_study_config(study, ["gan.overrides=[w_dim=32]"]).gan
    with pytest.raises(ConfigError, match="w_dim given twice"):
        gan_train_config(twice, 64)


def test_the_sections_are_the_families_own_and_the_gan_block_has_each():
    from cxraug.classify.config import GanSpec
    from cxraug.families import FAMILIES

    assert dict(SECTIONS) == {n: f.section for n, f in FAMILIES.items() if f.section is not None}
    assert set(SECTIONS) == {"stylegan2", "ddpm"}
    fields = {f.name for f in dataclasses.fields(GanSpec)}
    assert set(SECTIONS) <= fields


def test_the_gan_block_sections_leave_older_runs_fingerprints_alone(tmp_path):
    """A study's runs are keyed by a hash of its config: the gan: block's new (empty) sections must not change it,
    or ``--resume`` would redo every finished run of an older study. Pinned to what commit 4c8cf48 computed."""
    from types import SimpleNamespace

    from cxraug.classify.config import load_study_config
    from cxraug.classify.study import Study

    study = _yaml(tmp_path, "sources: [{path: 'phantom:normal=8,covid=8'}]\nprotocols: [real, gan-aug]\n"
                            "regimes: [1.0]\nseeds: [0]\ngan: {preset: dcgan-64, steps: 10}\n")  # fmt: skip
    st = SimpleNamespace(cfg=load_study_config(study), data_hash="data", generator_hash=lambda r, s: "gen")
    assert Study.fingerprint(st, "gan-aug", 1.0, 0) == "52bcf01b325c385de38c"
    assert Study.fingerprint(st, "real", 1.0, 0) == "719ddf095283daa23a29"


# --------------------------------------------------------------------------- cxraug train, as a user runs it
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXRAUG_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "cxraug", "train", "--preset", SG, "--data", "phantom:covid=8", "--steps", "1",
            "--size", "16", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "runs"), "-q", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_cxraug_train_reads_a_nested_config_and_saves_it_flat(tmp_path):
    f = _yaml(tmp_path, "stylegan2: {w_dim: 128, map_layers: 1}\nwidth: 8\nz_dim: 16\n")
    r = _cli(tmp_path, "--config", str(f), "--set", "stylegan2.r1_gamma=0.5")
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs").glob("train-*")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["w_dim"], saved["map_layers"], saved["r1_gamma"], saved["width"]) == (128, 1, 0.5, 8)
    assert not set(saved) & set(SECTIONS)


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        ("stylegan2: {w_dimm: 128}\n", [], "stylegan2: unknown key 'w_dimm'; known: ada, "),
        ("stylegan2: 128\n", [], "stylegan2: expected a mapping of its keys"),
        ("w_dim: 64\nstylegan2: {w_dim: 128}\n", [], "w_dim given twice: flat and in stylegan2:"),
        (None, ["--set", "w_dim=64", "--set", "stylegan2.w_dim=128"], "w_dim given twice: flat and in stylegan2:"),
        (None, ["--set", "ddpm.nope=1"], "ddpm: unknown key 'nope'; known: class_cond, "),
    ],
)  # fmt: skip
def test_cxraug_train_refuses_a_bad_section_in_one_line(tmp_path, config, args, expected):
    if config is not None:
        args = ["--config", str(_yaml(tmp_path, config)), *args]
    r = _cli(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("cxraug: error: ") and expected in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()
