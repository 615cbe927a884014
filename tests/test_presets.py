"""Paper presets are the papers' networks and settings: parameter counts against the papers' own figures or
against counts computed here from the papers' layer listings, plus the length in epochs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cxraug.config import from_dict
from cxraug.models import DCGANDiscriminator, DCGANGenerator, PatchDiscriminator, ResnetGenerator, WGANGPCritic
from cxraug.models.common import keras_param_count, n_params
from cxraug.train.config import (
    PAPER_PRESETS,
    PRESETS,
    TrainConfig,
    preset,
    resolve_steps,
    steps_for_epochs,
    steps_over_epochs,
)


def cfg_of(name: str) -> TrainConfig:
    return from_dict(TrainConfig, preset(name))


def G_and_D(name: str, n_labels: int = 2) -> tuple[nn.Module, nn.Module]:
    from cxraug.config import to_dict
    from cxraug.families import family_of

    cfg = cfg_of(name)
    family, config = family_of(cfg.family), to_dict(cfg)
    return family.build(config, n_labels), family.build_critics(config, n_labels)["D"]


# --------------------------------------------------------------------------- the papers' listings
# (in, out, bias) of every (transposed) convolution, input side first, as printed in Nguyen's Figure 7;
# "C" = image channels (the papers: 3, RGB copies of the grey image; the presets: 1).
TUTORIAL_G = [(100, 512, False), (512, 256, False), (256, 128, False), (128, 64, False), (64, "C", False)]
TUTORIAL_D = [("C", 64, False), (64, 128, False), (128, 256, False), (256, 512, False), (512, 1, False)]
NGUYEN_G128 = [(100, 512, True), (512, 256, True), (256, 128, True), (128, 64, True), (64, 32, True), (32, "C", True)]
NGUYEN_D128 = [("C", 16, True), (16, 32, True), (32, 64, True), (64, 128, True), (128, 256, True), (256, 1, True)]


def listing_count(convs, norms: list[int], channels: int, norm_params_per_channel: int = 2) -> int:
    """Parameters of 4x4 (transposed) convolutions + affine norms, from the listing alone."""
    total = 0
    for cin, cout, bias in convs:
        cin, cout = (channels if c == "C" else c for c in (cin, cout))
        total += cin * cout * 16 + (cout if bias else 0)
    return total + norm_params_per_channel * sum(norms)


def conv_layout(m: nn.Module) -> list[tuple[int, int, bool]]:
    return [
        (c.in_channels, c.out_channels, c.bias is not None)
        for c in m.modules()
        if isinstance(c, nn.Conv2d | nn.ConvTranspose2d)
    ]


def as_listing(convs, channels: int):
    return [(channels if a == "C" else a, channels if b == "C" else b, bias) for a, b, bias in convs]


# (preset, G listing, BatchNorm widths in G, D listing, norm widths in D, D norm params per channel, first-layer norm)
CASES = {
    "nguyen-dcgan-64": (TUTORIAL_G, [512, 256, 128, 64], TUTORIAL_D, [128, 256, 512], 2),
    "ng-dcgan-64": (TUTORIAL_G, [512, 256, 128, 64], TUTORIAL_D, [128, 256, 512], 2),
    # Nguyen's critics: parameter-free InstanceNorm after every conv, the first included
    "nguyen-wgan-gp-64": (TUTORIAL_G, [512, 256, 128, 64], TUTORIAL_D, [64, 128, 256, 512], 0),
    "nguyen-wgan-gp-128": (NGUYEN_G128, [512, 256, 128, 64, 32], NGUYEN_D128, [16, 32, 64, 128, 256], 0),
    # Ng & Hargreaves: the tutorial's discriminator with InstanceNorm (learnable) where it had BatchNorm
    "ng-wgan-gp-64": (TUTORIAL_G, [512, 256, 128, 64], TUTORIAL_D, [128, 256, 512], 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dcgan_shaped_paper_presets_match_the_listings(name):
    g_convs, g_norms, d_convs, d_norms, d_norm_params = CASES[name]
    G, D = G_and_D(name)
    assert conv_layout(G) == as_listing(g_convs, 1)
    assert conv_layout(D) == as_listing(d_convs, 1)
    assert n_params(G) == listing_count(g_convs, g_norms, 1)
    assert n_params(D) == listing_count(d_convs, d_norms, 1, d_norm_params)
    norms = [m for m in D.modules() if isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) or "Norm" in type(m).__name__]
    assert [m.num_features for m in norms] == d_norms
    # the papers' 3-channel networks, built with the same layout
    cfg = cfg_of(name)
    G3 = DCGANGenerator(cfg.z_dim, cfg.data.size, cfg.width, channels=3, **cfg.g_layout)
    D_cls = WGANGPCritic if cfg.family == "wgangp" else DCGANDiscriminator
    D3 = D_cls(cfg.data.size, cfg.width, channels=3, **cfg.d_layout)
    assert n_params(G3) == listing_count(g_convs, g_norms, 3)
    assert n_params(D3) == listing_count(d_convs, d_norms, 3, d_norm_params)


def test_nguyen_wgan_gp_128_has_the_papers_size():
    """The issue's figures: G 512->32, critic 16->256, about 3.6 M and 0.7 M parameters (3 channels)."""
    cfg = cfg_of("nguyen-wgan-gp-128")
    G3 = DCGANGenerator(cfg.z_dim, 128, cfg.width, channels=3, **cfg.g_layout)
    D3 = WGANGPCritic(128, cfg.width, channels=3, **cfg.d_layout)
    assert n_params(G3) == 3_608_995 and round(n_params(G3) / 1e6, 1) == 3.6
    assert n_params(D3) == 701_681 and round(n_params(D3) / 1e6, 1) == 0.7
    # the project's tuned 128 px WGAN-GP is the far larger one the issue measured
    G, D = G_and_D("wgan-gp-128")
    assert round(n_params(G) / 1e6, 1) == 12.8 and round(n_params(D) / 1e6, 1) == 11.2


def test_pytorch_dcgan_tutorial_counts():
    """Ng & Hargreaves follow the PyTorch DCGAN tutorial, whose networks have 3,576,704 and 2,765,568 parameters."""
    cfg = cfg_of("ng-dcgan-64")
    assert n_params(DCGANGenerator(100, 64, 64, channels=3, **cfg.g_layout)) == 3_576_704
    assert n_params(DCGANDiscriminator(64, 64, channels=3, **cfg.d_layout)) == 2_765_568


def test_hussain_counts_are_the_papers():
    """Hussain et al. state 2,040,705 (generator) and 1,658,369 (critic) Keras parameters."""
    G, D = G_and_D("hussain-wgan-96")
    assert keras_param_count(G) == 2_040_705
    assert keras_param_count(D) == 1_658_369
    assert G(torch.zeros(2, 100)).shape == (2, 1, 96, 96)


def _resnet_generator_count(c: int, w: int, blocks: int) -> int:
    """Zhu et al.'s ResNet generator from its layer list: c7s1-w, d2w, d4w, R4w x blocks, u2w, uw, c7s1-c;
    convolutions with bias, InstanceNorm without parameters."""
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    return (
        conv(c, w, 7) + conv(w, 2 * w, 3) + conv(2 * w, 4 * w, 3)
        + blocks * 2 * conv(4 * w, 4 * w, 3)
        + conv(4 * w, 2 * w, 3) + conv(2 * w, w, 3) + conv(w, c, 7)
    )  # fmt: skip


def _patchgan_count(c: int, w: int) -> int:
    """The 70x70 PatchGAN C64-C128-C256-C512 + a 1-channel 4x4 conv, biases, parameter-free InstanceNorm."""
    conv = lambda cin, cout: cin * cout * 16 + cout  # noqa: E731
    return conv(c, w) + conv(w, 2 * w) + conv(2 * w, 4 * w) + conv(4 * w, 8 * w) + conv(8 * w, 1)


def test_zunair_cyclegan_is_zhus_256px_network():
    cfg = cfg_of("zunair-cyclegan-256")
    assert (cfg.n_blocks, cfg.data.size, cfg.batch_size, cfg.loss, cfg.identity_lambda) == (9, 256, 1, "bce", 0.0)
    G, D = ResnetGenerator(1, cfg.width, cfg.n_blocks), PatchDiscriminator(1, cfg.width)
    assert n_params(G) == _resnet_generator_count(1, 64, 9)
    assert n_params(D) == _patchgan_count(1, 64)
    # with RGB input, the reference implementation's well-known 11.378 M / 2.765 M
    assert _resnet_generator_count(3, 64, 9) == n_params(ResnetGenerator(3, 64, 9)) == 11_378_179
    assert _patchgan_count(3, 64) == n_params(PatchDiscriminator(3, 64)) == 2_764_737


def test_sundaram_substitute_is_a_14_label_conditional_gan():
    """No network to match (Sundaram & Hulkund used a pretrained progressive GAN): the count is computed from
    the substitute's own layer list — label embedding 14->32, DCGAN generator on [z; e] at 128 px."""
    cfg = cfg_of("sundaram-cgan")
    G, D = G_and_D("sundaram-cgan", n_labels=14)
    ch = [1024, 512, 256, 128, 64]
    g = 14 * 32 + (100 + 32) * ch[0] * 16 + sum(a * b * 16 for a, b in zip(ch, ch[1:])) + 64 * 16 + 1
    g += 2 * sum(ch)  # BatchNorm
    assert n_params(G) == g
    d_ch = [64, 128, 256, 512, 1024]
    d = sum(a * b * 16 + b for a, b in zip([1, *d_ch], d_ch)) + (1024 + 1) + 14 * 1024
    assert n_params(D) == d
    assert cfg.ema_decay == 0.999 and cfg.family == "cgan" and cfg.data.size == 128


def test_paper_presets_are_faithful_by_default():
    assert set(PAPER_PRESETS) == {
        "hussain-wgan-96", "nguyen-dcgan-64", "nguyen-wgan-gp-64", "nguyen-wgan-gp-128",
        "ng-dcgan-64", "ng-wgan-gp-64", "zunair-cyclegan-256", "sundaram-cgan",
    }  # fmt: skip
    for name in PAPER_PRESETS:
        cfg = cfg_of(name)
        assert cfg.ema_decay == (0.999 if name == "sundaram-cgan" else 0.0), name  # EMA only where the paper has it
        assert cfg.diffaug == "", name
        assert cfg.epochs > 0 or name == "hussain-wgan-96", name
    for name in ("nguyen-dcgan-64", "nguyen-wgan-gp-64", "nguyen-wgan-gp-128", "ng-dcgan-64", "ng-wgan-gp-64"):
        cfg = cfg_of(name)
        assert cfg.batch_size == 128, name
        want = (2e-4, 0.5, 0.999, 1, "bce") if "dcgan" in name else (1e-4, 0.5, 0.9, 5, "wgan-gp")
        assert (cfg.lr_g, cfg.beta1, cfg.beta2, cfg.n_critic, cfg.loss) == want, name
    assert (cfg_of("nguyen-dcgan-64").epochs, cfg_of("ng-dcgan-64").epochs) == (500, 700)
    h = cfg_of("hussain-wgan-96")
    assert (h.optimizer, h.lr_g, h.clip, h.n_critic, h.steps, h.data.size) == ("rmsprop", 5e-5, 0.01, 5, 20000, 96)
    # the tuned defaults keep their names and networks
    assert {"wgan-gp-64", "dcgan-64", "cyclegan-256", "wgan-hussain-96"} <= set(PRESETS)
    assert cfg_of("wgan-gp-64").ema_decay == 0.999 and cfg_of("wgan-gp-64").g_layout == {}


def test_epochs_to_steps():
    # closed form: one generator step per batch, the last batch of a pass partial
    assert steps_for_epochs(500, 2000, 128) == 500 * 16  # 2000 / 128 = 15.6 -> 16 batches
    assert steps_for_epochs(700, 1000, 128) == 700 * 8
    assert steps_for_epochs(3, 1024, 128) == 24
    assert steps_for_epochs(2, 1000, 128, processes=2) == 2 * 4  # two processes share each pass
    counts = {"normal": 300, "covid": 60}
    cfg = cfg_of("nguyen-wgan-gp-64")
    cfg.cls = "covid"
    assert resolve_steps(cfg, counts, 360).steps == 500 * math.ceil(60 / 128) and cfg.epochs == 500
    z = cfg_of("zunair-cyclegan-256")
    z.domain_a, z.domain_b = "normal", "covid"
    assert resolve_steps(z, counts, 360).steps == 200 * 60  # batch 1, the normal domain undersampled to 60
    plain = cfg_of("wgan-gp-64")  # no epochs: steps stand
    assert resolve_steps(plain, counts, 360).steps == 2000
    assert steps_over_epochs(["steps=10"]) == ["steps=10", "epochs=0"]
    assert steps_over_epochs(["epochs=3"]) == ["epochs=3"]


def test_train_resolves_epochs_once_before_training(tmp_path, phantom_root, monkeypatch):
    """train() turns a preset's epochs into steps from the images it trains on (here --class covid: 12) and
    hands the Trainer a config with both (the Trainer saves that config as the run's config.yaml)."""
    import cxraug.train as tr

    seen = []
    monkeypatch.setattr(tr, "Trainer", lambda cfg, ds, run, **kw: seen.append((cfg, len(ds))))
    monkeypatch.setattr(tr, "_finish", lambda t: None)
    tr.train("nguyen-dcgan-64", str(phantom_root), tmp_path, progress=False, cls="covid", epochs=2, batch_size=5)
    cfg, n = seen[-1]
    assert n == 48 and (cfg.epochs, cfg.steps) == (2, 2 * math.ceil(12 / 5))
    tr.train("nguyen-dcgan-64", str(phantom_root), tmp_path, progress=False, cls="covid")  # the preset's 500
    assert (seen[-1][0].epochs, seen[-1][0].steps) == (500, 500 * math.ceil(12 / 128))
    tr.train("nguyen-dcgan-64", str(phantom_root), tmp_path, progress=False, steps=7)  # explicit steps win
    assert (seen[-1][0].epochs, seen[-1][0].steps) == (0, 7)


def test_cli_refuses_steps_and_epochs_together(capsys):
    from cxraug.cli import main

    assert main(["train", "--preset", "ng-dcgan-64", "--steps", "1", "--epochs", "1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_tuned_presets_keep_their_networks():
    """The layout options default to the networks (and state-dict keys) the tuned presets always had: bias on the
    generator's output conv and on the critic's first and last conv only, widths 64·2^i capped at 1024."""
    G, D = G_and_D("dcgan-64")
    assert conv_layout(G) == [(100, 512, False), (512, 256, False), (256, 128, False), (128, 64, False), (64, 1, True)]
    assert conv_layout(D) == [(1, 64, True), (64, 128, False), (128, 256, False), (256, 512, False), (512, 1, True)]
    assert {"net.12.weight", "net.12.bias", "net.1.running_mean"} <= set(G.state_dict())
    assert {"features.0.bias", "features.3.weight", "head.bias"} <= set(D.state_dict())
    G, D = G_and_D("wgan-gp-128")
    assert [c[1] for c in conv_layout(G)] == [1024, 512, 256, 128, 64, 1]
    assert [c[1] for c in conv_layout(D)] == [64, 128, 256, 512, 1024, 1]
