"""StyleGAN2-ADA (issue 15 item 1): modulated convolutions, ADA's augmentations and controller against closed
forms and independent computations; tiny training runs that resume exactly and whose checkpoints the rest of
the toolkit (synthesize, evaluate, balance, the study's ``gan:`` block) takes like any other family's."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import gan_cfg, tiny_cache
from cxraug.families import load_generator
from cxraug.families.ada import AdaptiveAugment, apply_geometric, rotate2d, scale2d, translate2d
from cxraug.io import load_checkpoint
from cxraug.models.stylegan2 import (
    ModulatedConv2d,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    minibatch_stddev,
    modulate,
)
from cxraug.train.engine import Trainer


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    """6 + 6 phantom images at 32 px."""
    return tiny_cache(tmp_path_factory, {"normal": 6, "covid": 6}, seed=6)


# A StyleGAN2-ADA preset shrunk to 32 px: width 4 (channels 4..32), 16-d z and w, one mapping layer.
TINY = {"data": {"size": 32}, "width": 4, "batch_size": 2, "z_dim": 16, "w_dim": 16, "map_layers": 1,
        "sample_every": 100, "log_every": 1}  # fmt: skip


def tiny_cfg(**kw):
    return gan_cfg("stylegan2-ada-64", **{**TINY, **kw})


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("up,demod", [(False, True), (True, True), (False, False)])
def test_modulated_conv_equals_per_sample_convolution(up, demod, fused):
    """Both implementations (one grouped convolution; scaled activations and outputs) equal, for each sample
    separately, F.conv2d with that sample's weight written out: s = A(w), w' = s_i w_ijk,
    w'' = w' / sqrt(sum_ik w'^2 + 1e-8) (the paper's Eqs. 1-3)."""
    g = torch.Generator().manual_seed(0)
    conv = ModulatedConv2d(5, 7, 3, w_dim=6, demodulate=demod, up=up, fused=fused)
    with torch.no_grad():
        conv.affine.bias.normal_(generator=g)  # styles far from 1, so modulation matters
    x, w = torch.randn(3, 5, 8, 8, generator=g), torch.randn(3, 6, generator=g)
    got = conv(x, w)
    a = conv.affine
    styles = w @ (a.weight / math.sqrt(6)).T + a.bias  # [3, 5]: the affine layer with its equalized-lr scale
    for b in range(3):
        wt = conv.weight / math.sqrt(5 * 9) * styles[b].view(1, 5, 1, 1)  # [7, 5, 3, 3]
        if demod:
            wt = wt / torch.sqrt((wt**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b : b + 1]
        if up:
            xb = F.interpolate(xb, scale_factor=2, mode="bilinear", align_corners=False)
        want = F.conv2d(xb, wt, padding=1)
        torch.testing.assert_close(got[b : b + 1], want, rtol=1e-5, atol=1e-5)


def test_demodulation_gives_unit_norm_filters():
    g = torch.Generator().manual_seed(1)
    weight, styles = torch.randn(6, 4, 3, 3, generator=g), torch.rand(5, 4, generator=g) * 3
    w2 = modulate(weight, styles, demodulate=True)  # [5, 6, 4, 3, 3]
    norms = w2.flatten(2).norm(dim=2)  # [5, 6]: every output filter of every sample
    torch.testing.assert_close(norms, torch.ones(5, 6), rtol=1e-5, atol=1e-6)
    plain = modulate(weight, styles, demodulate=False)
    torch.testing.assert_close(plain[2, 3], weight[3] * styles[2].view(4, 1, 1))


def test_minibatch_stddev_matches_its_definition():
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    out = minibatch_stddev(x, group=4)  # groups: samples {b, b+2, b+4, b+6}
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    for m in range(2):
        members = x[m::2]  # [4, 3, 4, 4]
        want = members.std(dim=0, unbiased=False).mean()
        for b in range(m, 8, 2):
            torch.testing.assert_close(out[b, 3], want.expand(4, 4), rtol=1e-5, atol=1e-6)
    assert minibatch_stddev(torch.randn(6, 2, 4, 4), group=4).shape == (6, 3, 4, 4)  # gcd(6, 4) = 2 per group


def test_truncation_to_the_mean_latent_and_shapes():
    """psi = 0 maps every z to w_avg: with the noise inputs off (strength 0 at init) every image is the same."""
    G = StyleGAN2Generator(z_dim=8, size=32, width=4, w_dim=8, map_layers=2).eval()
    D = StyleGAN2Discriminator(size=32, width=4)
    G.w_avg.normal_()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        same = G(z, psi=0.0)
        free = G(z)
    assert same.shape == (4, 1, 32, 32) and D(same).shape == (4,)
    torch.testing.assert_close(same, same[:1].expand_as(same))
    assert (free - free[:1]).abs().amax() > 1e-3


def test_256px_preset_is_the_ada_papers_256px_network():
    """The ADA paper's 256 px configuration: feature maps min(16384 / r, 512) at resolution r, 8 mapping layers of
    512; the generator's convolutions and the discriminator's blocks built from the preset have exactly those."""
    from cxraug.config import from_dict, to_dict
    from cxraug.models.stylegan2 import build_discriminator, build_generator
    from cxraug.train.config import TrainConfig, preset

    conf = to_dict(from_dict(TrainConfig, preset("stylegan2-ada-256")))
    with torch.device("meta"):
        G, D = build_generator(conf, 0), build_discriminator(conf, 0)
    paper = {r: min(16384 // r, 512) for r in (4, 8, 16, 32, 64, 128, 256)}
    assert [(layer.conv.cout, r) for layer, r in zip(G.layers, G.res)] == [(paper[r], r) for r in G.res]
    assert G.res == [4] + [r for r in (8, 16, 32, 64, 128, 256) for _ in range(2)]
    assert [b.conv1.weight.shape[0] for b in D.blocks] == [paper[r] for r in (128, 64, 32, 16, 8, 4)]
    assert len(G.mapping.fc) == 8 and G.w_dim == G.z_dim == 512
    assert conf["r1_gamma"] == 1.0 and conf["batch_size"] == 64 and conf["lr_g"] == 0.0025 and conf["beta2"] == 0.99
    assert conf["ema_decay"] == pytest.approx(0.5 ** (64 / 20000), abs=1e-4)  # a 20k-image EMA half-life


# ------------------------------------------------------------------ ADA
def _symmetric_shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """out[i, j] = x[i - dy, j - dx], mirrored at the borders (numpy's 'symmetric' padding)."""
    k = max(abs(dx), abs(dy))
    h, w = x.shape[-2:]
    pad = torch.from_numpy(np.pad(x.numpy(), [(0, 0)] * (x.dim() - 2) + [(k, k), (k, k)], mode="symmetric"))
    return pad[..., k - dy : k - dy + h, k - dx : k - dx + w]


def test_geometric_warp_closed_forms():
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    ones = torch.ones(3)
    torch.testing.assert_close(apply_geometric(x, scale2d(-ones, ones)), x.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_geometric(x, rotate2d(ones * math.pi / 2)), torch.rot90(x, 1, (-2, -1)),
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(apply_geometric(x, rotate2d(ones * math.pi)), torch.rot90(x, 2, (-2, -1)),
                               atol=1e-5, rtol=0)  # fmt: skip
    # integer translation by (dx, dy) pixels: a shift with the borders mirrored (reflection padding)
    for dx, dy in [(2, 0), (-1, 3), (0, -2)]:
        G = translate2d(ones * 2 * dx / 8, ones * 2 * dy / 8)
        torch.testing.assert_close(apply_geometric(x, G), _symmetric_shift(x, dx, dy), atol=1e-5, rtol=0)


def _ada(policy: str, p: float) -> AdaptiveAugment:
    return AdaptiveAugment(policy, p=p, target=0.0)


def test_ada_p0_is_the_identity_and_p1_changes_every_image():
    x = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(_ada("bgc", 0.0)(x, g), x)
    out = _ada("bgc", 1.0)(x, g)
    assert ((out - x).flatten(1).abs().amax(1) > 1e-2).all()
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_ada_blit_operations_against_closed_forms():
    """With p = 1, every image is one of the closed-form outcomes of its operation, and all outcomes occur."""
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(1)

    def which(out, candidates):  # index of the candidate each image equals
        d = torch.stack([(out - c).flatten(1).abs().amax(1) for c in candidates], 1)  # [B, n]
        assert (d.amin(1) < 1e-4).all()
        return d.argmin(1)

    flips = which(_ada("xflip", 1.0)(x, g), [x, x.flip(-1)])
    assert set(flips.tolist()) == {0, 1}
    rots = which(_ada("rotate90", 1.0)(x, g), [torch.rot90(x, k, (-2, -1)) for k in range(4)])
    assert set(rots.tolist()) == {0, 1, 2, 3}
    shifts = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)]  # round(0.125 * 16) = 2 pixels at most
    moved = which(_ada("xint", 1.0)(x, g), [_symmetric_shift(x, dx, dy) for dx, dy in shifts])
    assert len(set(moved.tolist())) > 10
    out = _ada("brightness", 1.0)(x, g)  # x + b, b ~ N(0, 0.2^2)
    b = (out - x).flatten(1)
    torch.testing.assert_close(b, b[:, :1].expand_as(b))
    assert 0.1 < b[:, 0].std() < 0.3
    c = (_ada("contrast", 1.0)(x, g) / x).flatten(1)  # x * c, log2 c ~ N(0, 0.5^2)
    torch.testing.assert_close(c, c[:, :1].expand_as(c), rtol=1e-4, atol=1e-5)
    assert (c[:, 0] > 0).all() and 0.3 < c[:, 0].log2().std() < 0.7
    assert set(which(_ada("lumaflip", 1.0)(x, g), [x, -x]).tolist()) == {0, 1}  # grey: the negative


def test_ada_applies_each_operation_with_probability_p():
    """x-flip changes an image with probability p/2 (p to apply, 1/2 to draw i = 1); the two rotations are
    each applied with 1 - sqrt(1 - p), so some rotation happens with probability p (the paper's rule)."""
    x = torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(2)
    for policy, p, rate in [("xflip", 0.4, 0.2), ("rotate", 0.4, 0.4), ("rotate", 0.8, 0.8)]:
        changed = ((_ada(policy, p)(x, g) - x).flatten(1).abs().amax(1) > 1e-4).float().mean().item()
        assert abs(changed - rate) < 4 * math.sqrt(rate * (1 - rate) / len(x)), (policy, p, changed)


def test_ada_controller_moves_p_by_the_papers_rule():
    """Every `interval` steps p += sign(r_t - target) * batch * interval / (kimg * 1000), clamped to [0, 1]."""
    ada = AdaptiveAugment("bgc", p=0.0, target=0.6, interval=2, speed_kimg=0.1)  # 64 * 2 / 100 = 1.28 per adjust
    step = 8 * 2 / 100  # batch 8
    ada.accumulate(torch.tensor([1.0, 2.0, -1.0, 3.0]))
    assert not ada.adjust(8)
    ada.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert ada.adjust(8)  # r_t = (2 + 4) / 8 = 0.75 > 0.6
    assert ada.rt.item() == pytest.approx(0.75) and ada.p.item() == pytest.approx(step)
    for _ in range(2):  # r_t = 0: overfitting gone, p goes back down ...
        ada.accumulate(torch.tensor([-1.0, 1.0]))
        ada.adjust(8)
    assert ada.rt.item() == 0.0 and ada.p.item() == pytest.approx(0.0)
    for _ in range(2):  # ... and stays at 0
        ada.accumulate(torch.tensor([-1.0]))
        ada.adjust(8)
    assert ada.p.item() == 0.0
    for _ in range(40):
        ada.accumulate(torch.tensor([1.0]))
        ada.adjust(8)
    assert ada.p.item() == 1.0  # clamped


def test_ada_p_rises_while_the_discriminator_overfits_a_tiny_set(tiny_ds, tmp_path):
    """The issue's check: on 2 real images, against a generator that does not learn (lr_g 0), the discriminator
    at once tells real from fake (r_t = 1 > 0.6) and p climbs; every logged p (the one the step used) is the
    previous p moved by the adjustment step toward the target, by the sign of the logged r_t - 0.6 (the r_t
    that set it), as written to losses.csv."""
    cfg = tiny_cfg(steps=5, ada_interval=1, ada_kimg=0.02, lr_d=0.002, lr_g=0.0, r1_gamma=0.0)
    before = torch.get_rng_state()
    tr = Trainer(cfg, tiny_ds.subset(np.array([0, 1])), tmp_path, progress=False)
    tr.fit()
    assert torch.equal(torch.get_rng_state(), before)  # init, z, noise maps and ADA draw on their own streams
    hist = {k: dict(map(tuple, v)) for k, v in tr.history.items()}
    p, rt = hist["ada_p"], hist["ada_rt"]
    delta = 2 * 1 / 20  # batch 2, interval 1, 0.02 kimg
    prev = 0.0
    for s in sorted(p):
        want = min(max(prev + math.copysign(delta, rt[s] - 0.6) if rt[s] != 0.6 else prev, 0.0), 1.0)
        assert p[s] == pytest.approx(want, abs=1e-6), (s, p, rt)
        prev = p[s]
    assert [rt[s] for s in (2, 3, 4)] == [1.0, 1.0, 1.0] and max(p.values()) >= 0.3
    csv = (tmp_path / "losses.csv").read_text()
    assert ",ada_p," in csv and ",ada_rt," in csv


# ------------------------------------------------------------------ training, resume, the rest of the toolkit
@pytest.mark.parametrize(
    "field,value,message",
    [("r1_every", 0, "r1_every must be an integer >= 1, got 0 (--set r1_every)"),
     ("ada_p", 1.5, "ada_p must be within [0, 1], got 1.5"),
     ("ada_kimg", float("nan"), "ada_kimg must be a number > 0, got nan"),
     ("ada", "bgx", "unknown ADA operations ['bgx']")],
)  # fmt: skip
def test_bad_settings_are_one_clear_line(field, value, message, capsys, tmp_path):
    from cxraug.cli import main

    args = ["train", "--preset", "stylegan2-ada-64", "--data", "phantom:normal=4,covid=4", "--steps", "1", "-q",
            "--out", str(tmp_path / "runs"), "--set", f"{field}={value}"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def _all_weights(tr: Trainer) -> dict[str, torch.Tensor]:
    st = tr.state_dict()
    nets = {**st["weights"], **st["critics"], **{f"ema.{k}": v for k, v in (st["ema"] or {}).items()}}
    return {f"{n}.{k}": v for n, sd in nets.items() for k, v in sd.items()}


def test_resume_is_exact(tiny_ds, tmp_path):
    """Stopped after 2 of 4 steps and continued from its checkpoint by a fresh Trainer, a run (R1 every 2nd step,
    p adjusted every step, augmentation on) ends bit-identical to a straight run: networks, EMA, p and r_t."""
    kw = dict(steps=4, ckpt_every=2, r1_every=2, ada_interval=1, ada_p=0.5, ada_kimg=0.01)
    straight = Trainer(tiny_cfg(**kw), tiny_ds, tmp_path / "a", progress=False)
    straight.fit()
    first = Trainer(tiny_cfg(**kw), tiny_ds, tmp_path / "b", progress=False)
    first.fit(2)
    del first  # "killed": only its checkpoint survives
    resumed = Trainer(tiny_cfg(**kw), tiny_ds, tmp_path / "b", progress=False)
    resumed.load_state_dict(load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt"))
    resumed.fit()
    wa, wb = _all_weights(straight), _all_weights(resumed)
    assert wa.keys() == wb.keys() and len(wa) > 0
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert torch.equal(straight.family.ada.p, resumed.family.ada.p)
    p_path = [v for _, v in straight.history["ada_p"]]  # p after each step's critic update (log_every 1)
    assert p_path == [v for _, v in resumed.history["ada_p"]] and any(v != 0.5 for v in p_path), p_path
    assert straight.family.d_steps == resumed.family.d_steps == 4
    assert straight.history["r1"] == resumed.history["r1"] and len(straight.history["r1"]) == 2


@pytest.fixture(scope="module")
def sg_ckpt(tiny_ds, tmp_path_factory):
    """A class-conditional StyleGAN2 trained 2 steps on both classes."""
    run = tmp_path_factory.mktemp("sg")
    return Trainer(tiny_cfg(steps=2, class_cond=True, ada_p=0.2), tiny_ds, run, progress=False).fit()


def test_checkpoint_samples_with_labels_and_cli_commands_accept_it(sg_ckpt, tmp_path):
    from cxraug.cli import main
    from cxraug.metrics.encoder import ConvEncoder, save_encoder
    from cxraug.synth.generate import describe, generate

    g = load_generator(sg_ckpt)
    info = describe(sg_ckpt)
    assert (info["family"], info["conditional"], info["size"]) == ("stylegan2", True, 32)
    one_hot = torch.eye(2)[[0, 0, 1, 1]]
    imgs, y = g.sample(4, labels=one_hot, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (4, 1, 32, 32) and torch.equal(y, one_hot) and imgs.abs().max() <= 1
    again, _ = g.sample(4, labels=one_hot, generator=torch.Generator().manual_seed(0))
    assert torch.equal(imgs, again)  # a seed gives the same images: noise maps drawn from the generator too
    u8, labs, _ = generate(sg_ckpt, 5, seed=1, label="covid")
    assert u8.shape == (5, 32, 32) and u8.dtype == np.uint8 and (labs[:, g.class_names.index("covid")] == 1).all()
    assert main(["synthesize", "--checkpoint", str(sg_ckpt), "--n", "4", "--out", str(tmp_path / "syn"), "-q"]) == 0
    assert len(list((tmp_path / "syn").rglob("*.png"))) >= 4
    enc = save_encoder(ConvEncoder(32, width=8), tmp_path / "enc.safetensors")  # untrained: plumbing only
    assert main(["evaluate", "--real", "phantom:normal=6,covid=6", "--fake", str(sg_ckpt), "--features",
                 f"encoder:{enc}", "--allow-encoder-overlap", "--n", "6", "--k", "2", "--size", "32",
                 "--out", str(tmp_path / "ev")]) == 0  # fmt: skip
    (metrics,) = (tmp_path / "ev").rglob("metrics.json")
    assert "fid" in json.loads(metrics.read_text())
    out = tmp_path / "bal"
    assert main(["balance", "--data", "phantom:normal=6,covid=3", "--generator", str(sg_ckpt), "--strategy",
                 "equalize", "--out", str(out), "-q"]) == 0  # fmt: skip
    (run,) = out.glob("balance-*")
    assert json.loads((run / "balance.json").read_text())["added"] == {"covid": 3}


def test_study_gan_block_trains_the_preset(tmp_path):
    """The benchmark's `gan:` block with preset stylegan2-ada-64: the study trains it on its minority training
    images (at the study's size) and draws its synthetic images from it."""
    from cxraug.classify.study import GanSpec, Source, Study, StudyConfig

    spec = GanSpec(preset="stylegan2-ada-64", steps=2, width=4, batch_size=4, diffaug="",
                   overrides=["z_dim=16", "w_dim=16", "map_layers=1", "sample_every=100"])  # fmt: skip
    cfg = StudyConfig(sources=[Source("phantom:normal=16,covid=8")], size=32, gan=spec, regimes=[1.0], seeds=[0],
                      protocols=["gan-aug"], epochs=1)  # fmt: skip
    st = Study(cfg, tmp_path / "study", progress=False)
    st.prepare()
    ckpt = st.generator_for(1.0, 0)
    art = load_checkpoint(ckpt)
    assert art["family"] == "stylegan2" and art["step"] == 2 and art["config"]["data"]["size"] == 32
    syn = st.synthetic_for(1.0, 0)
    assert syn.dtype == np.uint8 and syn.shape[1:] == (32, 32) and len(syn) >= 1
