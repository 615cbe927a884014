"""The families' config sections (models layer): the one place their options' defaults are written, how the
networks read a flat config dict, and TrainConfig's defaults for the same keys."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from cxraug.config import load_config, to_dict
from cxraug.families.ddpm import DDPM
from cxraug.families.stylegan2 import StyleGAN2ADA
from cxraug.models.common import ConfigSection
from cxraug.models.ddpm import DDPMConfig, unet_kwargs
from cxraug.models.stylegan2 import StyleGAN2Config, build_discriminator, build_generator
from cxraug.train.config import TrainConfig, preset

SECTIONS = [StyleGAN2Config, DDPMConfig]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_train_config_takes_each_section_field_and_default(section: type[ConfigSection]):
    """Every section field is a flat TrainConfig key of the same type, whose default is the section's."""
    hints, train_hints = typing.get_type_hints(section), typing.get_type_hints(TrainConfig)
    default, train = section(), TrainConfig()
    for f in dataclasses.fields(section):
        assert train_hints[f.name] == hints[f.name], f.name
        assert getattr(train, f.name) == getattr(default, f.name), f.name
        assert type(getattr(train, f.name)) is type(getattr(default, f.name)), f.name
    assert TrainConfig().unet_mult is not TrainConfig().unet_mult  # a fresh list each


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_absent_or_none_keys_read_the_defaults(section: type[ConfigSection]):
    names = [f.name for f in dataclasses.fields(section)]
    assert section.from_config({}) == section.from_config(dict.fromkeys(names)) == section()
    assert section.from_config(to_dict(TrainConfig())) == section()  # unrelated keys are ignored


def test_values_take_the_field_types():
    opts = StyleGAN2Config.from_config({"w_dim": "128", "r1_gamma": 1, "class_cond": 1, "ada": ""})
    assert (opts.w_dim, opts.r1_gamma, opts.class_cond, opts.ada) == (128, 1.0, True, "")
    assert type(opts.r1_gamma) is float
    ddpm = DDPMConfig.from_config({"unet_mult": (1.0, 2), "dropout": 0})
    assert ddpm.unet_mult == [1, 2] and all(type(m) is int for m in ddpm.unet_mult) and type(ddpm.dropout) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.w_dim = 3  # type: ignore[misc]


def _tiny(name: str, **fields) -> dict:
    c = preset(name)
    c.update(width=8, z_dim=16, w_dim=16, data={"size": 16}, **fields)
    return c


def test_stylegan2_networks_read_the_section():
    conf = _tiny("stylegan2-ada-64", mbstd_group=2)
    g, d = build_generator(conf, 3), build_discriminator(conf, 3)
    assert (g.w_dim, g.n_labels, d.mbstd_group, d.n_labels) == (16, 0, 2, 0)  # map_layers 2: the preset's
    assert len(g.mapping.fc) == 2
    old = {k: v for k, v in conf.items() if k not in ("map_layers", "mbstd_group", "truncation", "class_cond")}
    old["w_dim"] = None  # a config written before the fields: the section's defaults
    g_old, d_old = build_generator(old, 3), build_discriminator(old, 3)
    assert (g_old.w_dim, d_old.mbstd_group) == (512, 4)
    assert len(g_old.mapping.fc) == 8
    fam = StyleGAN2ADA(g, old, ["a", "b", "c"], torch.zeros(2, 3))
    assert fam.psi == 1.0 and not fam.conditional
    cond = {**conf, "truncation": 0.7, "class_cond": True}
    fam = StyleGAN2ADA(build_generator(cond, 3), cond, ["a", "b", "c"], torch.zeros(2, 3))
    assert fam.psi == 0.7 and fam.conditional and fam.net.n_labels == 3 and StyleGAN2ADA.conditional_for(cond)


def test_ddpm_reads_the_section():
    conf = _tiny("ddpm-64", unet_mult=[1, 2], unet_attention=[8])
    kw = unet_kwargs(conf)
    assert kw["block_out_channels"] == (8, 16) and kw["dropout"] == 0.1 and kw["layers_per_block"] == 2
    assert kw["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D")
    bare = {k: v for k, v in conf.items() if k not in {f.name for f in dataclasses.fields(DDPMConfig)}}
    assert unet_kwargs({**bare, "data": {"size": 64}})["block_out_channels"] == (8, 16, 16, 16)  # [1, 2, 2, 2]
    assert not DDPM.conditional_for(bare) and DDPM.conditional_for({"class_cond": True})


def test_user_keys_stay_flat():
    """``--set w_dim=128`` and a YAML ``w_dim:`` set the section (the nested forms: test_config_nested_sections)."""
    cfg = load_config(TrainConfig, overrides=["w_dim=128", "unet_layers=1"], base=preset("stylegan2-ada-64"))
    assert StyleGAN2Config.from_config(to_dict(cfg)).w_dim == 128 and DDPMConfig.from_config(to_dict(cfg)).unet_layers == 1
