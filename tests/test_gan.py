"""GAN zoo and training engine (issue 3)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FAMILY_CASES, gan_cfg, tiny_cache
from cxraug.config import from_dict
from cxraug.families import load_generator, make_training
from cxraug.families.losses import WeightClip, cycle_loss, gradient_penalty
from cxraug.io import load_checkpoint
from cxraug.models import (
    ConditionalGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
    HussainCritic,
    HussainGenerator,
    PatchDiscriminator,
    ProjectionDiscriminator,
    ResnetGenerator,
    WGANGPCritic,
    WGANGPGenerator,
)
from cxraug.models.cgan import sample_label_vectors
from cxraug.models.common import keras_param_count
from cxraug.train.config import PRESETS, TrainConfig, preset
from cxraug.train.engine import Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    """8 + 8 phantom images at 32 px: enough for a few exact training steps."""
    return tiny_cache(tmp_path_factory, {"normal": 8, "covid": 8}, seed=4)


TINY = {"data": {"size": 32}, "width": 8, "batch_size": 2, "n_blocks": 1, "sample_every": 100}


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("size", [64, 128])
def test_output_shapes_every_family(size):
    z, x = torch.randn(2, 100), torch.randn(2, 1, size, size)
    y = torch.tensor([[1.0] + [0] * 13, [0, 1.0] + [0] * 12])
    for G in (DCGANGenerator(size=size, width=8), WGANGPGenerator(size=size, width=8), HussainGenerator(size=size)):
        assert G(z).shape == (2, 1, size, size)
    for D in (DCGANDiscriminator(size=size, width=8), WGANGPCritic(size=size, width=8), HussainCritic(size=size)):
        assert D(x).shape == (2,)
    assert ConditionalGenerator(14, size=size, width=8)(z, y).shape == (2, 1, size, size)
    assert ProjectionDiscriminator(14, size=size, width=8)(x, y).shape == (2,)
    assert ResnetGenerator(width=8, n_blocks=2)(x).shape == x.shape
    assert PatchDiscriminator(width=8)(x).shape == (2, 1, size // 8 - 2, size // 8 - 2)


def test_hussain_preset_96px_and_paper_parameter_counts():
    g, d = HussainGenerator(size=96), HussainCritic(size=96)
    out = g(torch.randn(2, 100))
    assert out.shape == (2, 1, 96, 96) and out.abs().max() <= 1
    assert d(out).shape == (2,)
    assert keras_param_count(g) == 2_040_705
    assert keras_param_count(d) == 1_658_369
    # the per-block counts the paper lists
    convs = [m for m in g.blocks if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in g.blocks if isinstance(m, torch.nn.BatchNorm2d)]
    per_block = [keras_param_count(c) + keras_param_count(b) for c, b in zip(convs, bns)]
    assert per_block == [591_104, 591_104, 295_552, 148_096]
    assert keras_param_count(g.to_img) == 1_153


# ------------------------------------------------------------------ losses
def test_gradient_penalty_matches_hand_computation():
    # Critic D(x) = sum(w * x): grad wrt x is w everywhere, so GP = (||w|| - 1)^2 for any x_hat.
    w = torch.arange(1.0, 5.0).view(1, 1, 2, 2)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((30**0.5 - 1) ** 2, rel=1e-6)
    # A nonlinear critic D(x) = sum(x^2): grad = 2 x_hat, checked on a fixed eps.
    eps = torch.full((3, 1, 1, 1), 0.25)
    x_hat = 0.25 * real + 0.75 * fake
    expected = ((2 * x_hat).flatten(1).norm(dim=1) - 1).pow(2).mean()
    got = gradient_penalty(lambda x: x.pow(2).flatten(1).sum(1), real, fake, eps=eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_instance_norm_matches_torch_and_its_penalty_too():
    from cxraug.models.common import InstanceNorm2d

    ours, ref = InstanceNorm2d(8), torch.nn.InstanceNorm2d(8, affine=True)
    torch.nn.init.normal_(ours.weight)
    torch.nn.init.normal_(ours.bias)
    ref.load_state_dict(ours.state_dict())  # same keys: checkpoints of either load into the other
    x = torch.randn(4, 8, 6, 6) * 3 + 1
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    assert torch.allclose(ours(x.contiguous(memory_format=torch.channels_last)), ref(x), atol=1e-5)

    # the double backward the gradient penalty takes
    def net(m):
        return lambda t: m(t).pow(2).sum((1, 2, 3))

    real, fake, eps = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6), torch.rand(4, 1, 1, 1)
    gp_ours, gp_ref = gradient_penalty(net(ours), real, fake, eps=eps), gradient_penalty(net(ref), real, fake, eps=eps)
    g_ours = torch.autograd.grad(gp_ours, ours.weight)[0]
    g_ref = torch.autograd.grad(gp_ref, ref.weight)[0]
    assert torch.allclose(gp_ours, gp_ref, rtol=1e-4) and torch.allclose(g_ours, g_ref, rtol=1e-3, atol=1e-4)
    with torch.autocast("cpu", torch.bfloat16):
        y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), ref(x), atol=0.05 * ref(x).abs().max().item())


def test_weight_clipping_keeps_critic_within_c():
    d = HussainCritic(size=64)
    with torch.no_grad():
        for p in d.parameters():
            p.normal_(0, 1)
    WeightClip(0.01).after_critic_step(d)
    assert all(p.abs().max() <= 0.01 for p in d.parameters())


def test_cycle_loss_zero_for_identity_generators():
    x = torch.randn(4, 1, 32, 32)
    ident = torch.nn.Identity()
    assert cycle_loss(x, ident(ident(x))).item() == 0.0


def test_gradient_penalty_on_the_augmented_inputs():
    """The penalty is taken on the DiffAugment'ed real and fake images the critic loss saw (issue 12), checked
    by an independent computation that replays the family's documented draw order: z, aug(real), aug(fake), eps."""
    cfg = gan_cfg("wgan-gp-64", width=8, batch_size=4, diffaug="brightness")  # brightness: x + (u - 0.5)
    fam = make_training(cfg, 2, rng=torch.Generator().manual_seed(7))
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    _, logs = fam.critic_loss((x, torch.zeros(4, 2)))
    g = torch.Generator().manual_seed(7)
    z = torch.randn(4, cfg.z_dim, generator=g)
    with torch.no_grad():
        fake = fam.G(z)
    real_aug = x + torch.rand(4, 1, 1, 1, generator=g) - 0.5
    fake_aug = fake + torch.rand(4, 1, 1, 1, generator=g) - 0.5
    eps = torch.rand(4, 1, 1, 1, generator=g)
    x_hat = (eps * real_aug + (1 - eps) * fake_aug).requires_grad_(True)
    (grad,) = torch.autograd.grad(fam.D(x_hat).sum(), x_hat)
    expected = 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert logs["gp"].item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():
        assert logs["d_loss"].item() == pytest.approx(
            (fam.D(fake_aug).mean() - fam.D(real_aug).mean()).item(), rel=1e-5
        )
    x_plain = (eps * x + (1 - eps) * fake).requires_grad_(True)  # what the old code penalised
    (g_plain,) = torch.autograd.grad(fam.D(x_plain).sum(), x_plain)
    assert abs(10 * ((g_plain.flatten(1).norm(dim=1) - 1) ** 2).mean().item() - expected.item()) > 1e-3


def test_projection_discriminator_keeps_the_dcgan_init():
    """Regression: dcgan_init ran after spectral_norm and never reached the trained weights (std 0.143)."""
    d = ProjectionDiscriminator(3, size=64, width=32)
    for name, m in d.named_modules():
        if hasattr(m, "parametrizations"):
            w = m.parametrizations.weight.original
            assert w.std().item() == pytest.approx(0.02, rel=0.1), name
            m.eval()  # spectral norm divides that weight by one (power-iteration) scalar
            ratio = (m.weight / w).detach()
            assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4), name


@pytest.mark.parametrize("name", ["wgan-gp-64", "cyclegan-64"])
def test_generator_step_computes_no_critic_gradient(name, tiny_ds, tmp_path):
    """Regression: the critics' gradients were computed (and all-reduced under DDP) in every generator step."""
    cfg = gan_cfg(name, **{**TINY, **FAMILY_CASES[name], "batch_size": 2}, steps=1)
    tr = Trainer(cfg, tiny_ds, tmp_path, progress=False)
    fam = tr.family
    tr._update(tr.opt_d, fam.critic_loss, frozen=fam.generators)
    after_critic = {f"{k}.{n}": p.grad.clone() for k, m in fam.critics.items() for n, p in m.named_parameters()}
    assert all(p.grad is None for m in fam.generators.values() for p in m.parameters())
    tr._update(tr.opt_g, fam.generator_loss, frozen=fam.critics)
    for k, m in fam.critics.items():
        for n, p in m.named_parameters():
            assert torch.equal(p.grad, after_critic[f"{k}.{n}"]), f"{k}.{n}"  # nothing accumulated
            assert p.requires_grad  # switched back on for the next critic step
    assert all(p.grad is not None for m in fam.generators.values() for p in m.parameters())


def test_training_leaves_the_global_rng_alone(tiny_ds, tmp_path):
    """No torch.manual_seed in library code: the caller's global RNG stream is the same before and after a run,
    and draws that cannot take a generator (dropout) come from the trainer's own seeded stream."""
    cfg = gan_cfg("dcgan-64", **TINY, steps=2)
    seen: list[list[torch.Tensor]] = []

    def run(sub: str) -> Trainer:
        tr = Trainer(cfg, tiny_ds, tmp_path / sub, progress=False)
        seen.append([])
        g_loss = tr.family.generator_loss

        def with_global_draw(batch):  # stands in for dropout: a draw from torch's global RNG
            seen[-1].append(torch.rand(3))
            return g_loss(batch)

        tr.family.generator_loss = with_global_draw
        tr.fit()
        return tr

    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = run("a")
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # another global state: same run
    b = run("b")
    assert all(torch.equal(x, y) for x, y in zip(*seen)) and not torch.equal(seen[0][0], seen[0][1])
    torch.manual_seed(123)
    assert not torch.equal(seen[0][0], torch.rand(3))  # not the caller's stream
    for (k, p), q in zip(a.main_generator.state_dict().items(), b.main_generator.state_dict().values()):
        assert torch.equal(p, q), k


def test_label_vectors_follow_real_distribution():
    real = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 0]], dtype=torch.float32).numpy()
    ys = sample_label_vectors(real, 200, pathology=0, seed=0)
    assert (ys[:, 0] == 1).all()
    assert 0.3 < ys[:, 2].mean() < 0.7  # co-occurrence kept


# ------------------------------------------------------------------ real (short) training per family
@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY_CASES))
def test_short_training_moves_loss_and_samples_are_valid(name, phantom_ds, tmp_path):
    cfg = gan_cfg(name, **FAMILY_CASES[name])
    if cfg.n_critic >= 5:  # the Wasserstein critics train 5x per step: 2 steps (10 critic updates), 2 logged losses
        cfg.steps, cfg.log_every, cfg.sample_every, cfg.ckpt_every = 2, 1, 2, 2
    tr = Trainer(cfg, phantom_ds, tmp_path, progress=False)
    g0 = {k: v.clone() for k, v in tr.main_generator.state_dict().items()}
    tr.fit()
    losses = tr.history["g_loss"]
    assert len(losses) >= 2 and losses[0][1] != losses[-1][1]
    assert any(not torch.equal(g0[k], v) for k, v in tr.main_generator.state_dict().items())
    s = tr.sample(8)
    assert torch.isfinite(s).all() and s.min() >= -1 and s.max() <= 1
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "losses.png").is_file()
    assert (tmp_path / "losses.csv").read_text().startswith("step,metric,value")
    cfg2 = from_dict(TrainConfig, load_generator(tmp_path / "checkpoints" / "last.pt").config)
    assert cfg2.family == cfg.family


def test_ema_tracks_the_generator_from_the_start(phantom_ds, tmp_path):
    """Regression: a fixed 0.999 decay from step 0 left the EMA at its (near-constant) initial weights."""
    tr = Trainer(gan_cfg("dcgan-64", steps=16), phantom_ds, tmp_path, progress=False)
    g0 = [p.detach().clone() for p in tr.main_generator.parameters()]
    tr.fit()
    live = list(tr.main_generator.parameters())
    ema = list(tr.ema.module.parameters())
    moved = sum((a - b).norm() ** 2 for a, b in zip(live, g0)) ** 0.5
    ema_moved = sum((a - b).norm() ** 2 for a, b in zip(ema, g0)) ** 0.5
    assert ema_moved > 0.5 * moved  # without the warm-up: about 0.2 here
    z, y = tr.fixed_noise[:16], tr.fixed_labels[:16]
    with torch.no_grad():
        var_live = tr.main_generator.eval()(z, y).std(0).mean()
        var_ema = tr.sample(16).std(0).mean()  # the EMA generator: as varied as the live one, not one image 16x
    assert var_ema > 0.3 * var_live > 0


def test_divergence_stops_with_a_message(phantom_ds, tmp_path):
    cfg = gan_cfg("dcgan-64", steps=4, log_every=2, lr_g=1e30, lr_d=1e30)
    with pytest.raises(TrainingDiverged, match="diverged"):
        Trainer(cfg, phantom_ds, tmp_path, progress=False).fit()


def test_presets_all_build():
    for name in PRESETS:
        cfg = from_dict(TrainConfig, preset(name))
        assert cfg.data.size in (64, 96, 128, 256)


# ------------------------------------------------------------------ crash + resume (subprocess, SIGKILL)
@pytest.fixture(scope="module")
def kill_data(tmp_path_factory) -> Path:
    """8 + 8 phantom images at 64 px as a saved cache folder: each `cxraug train` process of the kill tests
    loads it instead of drawing the phantoms again (about 2 s of lung-mask loading per process)."""
    folder = tmp_path_factory.mktemp("kill-data") / "cache"
    tiny_cache(tmp_path_factory, {"normal": 8, "covid": 8}, seed=0, size=64).save(folder)
    return folder


def _train_args(out: Path, data: Path) -> list[str]:
    return [
        "train", "--preset", "wgan-gp-64", "--data", str(data),
        "--steps", "20", "--out", str(out), "-q", "--set", "width=8", "--set", "batch_size=4",
        "--set", "n_critic=2", "--set", "ckpt_every=10", "--set", "sample_every=10", "--set", "threads=1",
        "--set", "log_every=5",
    ]  # fmt: skip


def _killed(args: list[str], fault: str) -> subprocess.CompletedProcess:
    """``cxraug <args>`` in its own process, which CXRAUG_FAULT SIGKILLs at ``fault``."""
    env = {**os.environ, "CXRAUG_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "cxraug", *args], capture_output=True, text=True, env=env, timeout=300)


def _in_process(args: list[str]) -> int:
    """``cxraug <args>`` in this process (a new process would only add torch's start-up, ~8 s): nothing of the
    killed process is in memory here, so a resume can only use what it wrote. Restores torch's thread count,
    which ``--set threads=1`` changes."""
    from cxraug.cli import main

    threads = torch.get_num_threads()
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    st = load_checkpoint(run / "checkpoints" / "last.pt")
    assert st["step"] == 20
    return {
        **{f"G.{k}": v for k, v in st["weights"]["G"].items()},
        **{f"D.{k}": v for k, v in st["critics"]["D"].items()},
    }


def _all_weights(tr: Trainer) -> dict[str, torch.Tensor]:
    st = tr.state_dict()
    nets = {**st["weights"], **st["critics"], **{f"ema.{k}": v for k, v in (st["ema"] or {}).items()}}
    return {f"{n}.{k}": v for n, sd in nets.items() for k, v in sd.items()}


def test_resume_refuses_other_settings_other_images_and_a_checkpoint_that_does_not_fit(tiny_ds, tmp_path,
                                                                                        tmp_path_factory):
    """A resume continues the checkpoint's run: a Trainer with other settings (a loss, a learning rate) or
    other training images used to load it anyway, train on a mix and record only its own config; how long and
    how it runs (steps, precision) may change. A checkpoint whose weights do not fit its config, or that lacks
    its streams, gave a raw RuntimeError / KeyError."""
    from cxraug.errors import CheckpointError

    kw = {**TINY, "steps": 2, "ckpt_every": 2, "log_every": 2}
    Trainer(gan_cfg("dcgan-64", **kw), tiny_ds, tmp_path / "a", progress=False).fit()
    st = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    other = Trainer(gan_cfg("dcgan-64", **{**kw, "loss": "hinge", "lr_g": 0.5}), tiny_ds, tmp_path / "b",
                    progress=False)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"other settings \(loss: 'bce' there, 'hinge' here; lr_g: 0.0002 there"):
        other.load_state_dict(st)
    longer = Trainer(gan_cfg("dcgan-64", **{**kw, "steps": 4, "amp": "no"}), tiny_ds, tmp_path / "c", progress=False)
    longer.load_state_dict(st)  # more steps, another precision: the same run
    assert longer.step == 2
    elsewhere = tiny_cache(tmp_path_factory, {"normal": 8, "covid": 8}, seed=5)
    with pytest.raises(CheckpointError, match=r"trained on other images than .* holds now \(16 then, 16 now"):
        Trainer(gan_cfg("dcgan-64", **kw), elsewhere, tmp_path / "d", progress=False).load_state_dict(st)
    wider = {**st, "config": {**st["config"], "width": 16}}  # the weights are width 8
    with pytest.raises(CheckpointError, match=r"networks or optimiser state do not fit its dcgan config"):
        Trainer(gan_cfg("dcgan-64", **{**kw, "width": 16}), tiny_ds, tmp_path / "e", progress=False).load_state_dict(wider)
    with pytest.raises(CheckpointError, match=r"incomplete training checkpoint"):
        Trainer(gan_cfg("dcgan-64", **kw), tiny_ds, tmp_path / "f", progress=False).load_state_dict(
            {k: v for k, v in st.items() if k != "per_rank"})


def test_cli_resume_refuses_flags_and_an_edited_config_instead_of_ignoring_them(tmp_path, capsys):
    """`train --resume RUN --set lr_g=...` trained on with the old settings and said nothing; an edited
    RUN/config.yaml was overwritten by the checkpoint's. Both are one line now, and the file is kept."""
    import yaml

    out = tmp_path / "runs"
    args = ["train", "--preset", "dcgan-64", "--data", "phantom:normal=8,covid=8", "--size", "32", "--set", "width=8",
            "--batch-size", "4", "--steps", "2", "-q", "--out", str(out)]  # fmt: skip
    assert _in_process(args) == 0
    (run,) = list(out.iterdir())
    capsys.readouterr()
    for extra in (["--set", "lr_g=0.5"], ["--preset", "wgan-gp-64"], ["--seed", "3"]):
        assert _in_process(["train", "--resume", str(run), "--steps", "4", *extra]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{extra[0]} would change them" in err[0], err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "lr_g": 0.5}))
    assert _in_process(["train", "--resume", str(run), "--steps", "4", "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.yaml was edited since the checkpoint (lr_g)" in err[0], err
    assert yaml.safe_load((run / "config.yaml").read_text())["lr_g"] == 0.5  # kept, not overwritten
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert _in_process(["train", "--resume", str(run), "--steps", "4", "-q"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


@pytest.mark.parametrize("name", ["cgan-64", "cyclegan-64"])
def test_resume_is_exact_for_cgan_and_cyclegan(name, tiny_ds, tmp_path):
    """A run stopped at step 2 and continued by a fresh Trainer from its checkpoint ends bit-identical to a
    straight run (image pools, last fakes, every generator and RNG stream are in the checkpoint)."""
    kw = {**TINY, "steps": 4, "ckpt_every": 2, "log_every": 2, "diffaug": "color,translation,cutout",
          "pool_size": 2, "domain_a": "normal", "domain_b": "covid"}  # fmt: skip
    straight = Trainer(gan_cfg(name, **kw), tiny_ds, tmp_path / "a", progress=False)
    straight.fit()
    first = Trainer(gan_cfg(name, **kw), tiny_ds, tmp_path / "b", progress=False)
    first.fit(2)
    del first  # "killed": only its checkpoint survives
    resumed = Trainer(gan_cfg(name, **kw), tiny_ds, tmp_path / "b", progress=False)
    resumed.load_state_dict(load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt"))
    resumed.fit()
    wa, wb = _all_weights(straight), _all_weights(resumed)
    assert wa.keys() == wb.keys() and len(wa) > 0
    assert max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].is_floating_point()) == 0.0


@pytest.mark.slow
def test_resume_after_sigkill_matches_straight_run(tmp_path, kill_data):
    assert _in_process(_train_args(tmp_path / "a", kill_data)) == 0  # the straight run
    killed = _killed(_train_args(tmp_path / "b", kill_data), "after-checkpoint:10")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_b,) = list((tmp_path / "b").iterdir())
    assert load_checkpoint(run_b / "checkpoints" / "last.pt")["step"] == 10
    assert _in_process(["train", "--resume", str(run_b), "-q"]) == 0
    (run_a,) = list((tmp_path / "a").iterdir())
    wa, wb = _final_weights(run_a), _final_weights(run_b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, kill_data):
    killed = _killed(_train_args(tmp_path, kill_data), "checkpoint-write:20")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run,) = list(tmp_path.iterdir())
    st = load_checkpoint(run / "checkpoints" / "last.pt")  # intact, loads safely
    assert st["step"] == 10
    assert _in_process(["train", "--resume", str(run), "-q"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 20


DDP_SCRIPT = """
import os, sys, torch
from cxraug.config import from_dict
from cxraug.data.source import DataConfig, load_dataset
from cxraug.train.config import TrainConfig, preset
from cxraug.families.diffaug import DiffAugment
from cxraug.train.engine import Trainer
d = preset(sys.argv[1]); d.update(steps=2, batch_size=4, width=8, log_every=1, sample_every=2, ckpt_every=2,
                                  device="cpu", cls="covid", n_blocks=1, amp="no", n_critic=1, diffaug=sys.argv[3])
cfg = from_dict(TrainConfig, d)
tr = Trainer(cfg, load_dataset(DataConfig("phantom:normal=8,covid=8"), progress=False), sys.argv[2], progress=False)
fam, rec = tr.family, {}


def replay(gen):  # a copy of the stream as it stands at a draw
    g = torch.Generator(); g.set_state(gen.get_state()); return g


noise, augment, penalty = fam.noise, fam._augment, fam.loss.penalty
fam.noise = lambda n, dev: rec.setdefault("z", noise(n, dev))
def aug(x):
    rec.setdefault("aug", DiffAugment(cfg.diffaug)(torch.ones(4, 1, 64, 64), generator=replay(fam.rng)))
    return augment(x)
def pen(critic, real, fake, y=None, generator=None):
    rec.setdefault("eps", torch.rand(real.size(0), 1, 1, 1, generator=replay(generator)))
    return penalty(critic, real, fake, y, generator=generator)
fam._augment, fam.loss.penalty = aug, pen
first = torch.tensor(tr._batch()[0].sum().item())
tr.fit()
nets = {**tr.family.generators, **tr.family.critics}
sums = torch.stack([sum(p.double().sum() for p in m.parameters()) for m in nets.values()]).float()
drawn = torch.stack([rec["z"].sum(), rec["aug"].sum(), rec["eps"].sum(), first])
alls, alld = tr.acc.gather(sums[None]), tr.acc.gather(drawn[None])
if tr.acc.is_main_process:
    own = [bool(alld[0, i] != alld[1, i]) for i in range(4)]
    print("WORLD", tr.acc.num_processes, "SYNCED", bool(torch.equal(alls[0], alls[1])),
          "OWN_Z_AUG_EPS_BATCHES", own, flush=True)
tr.close()  # barrier, drop the DDP wrappers, destroy the group: gloo's threads end here, not at exit
tr.sample(2)  # the plain networks still serve
if os.path.isdir("/proc/self/task"):  # Linux: this process's native threads by name
    names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    gloo = [t for t in names if "gloo" in t]  # one write: the ranks share the pipe
    sys.stdout.write(f"RANK {tr.acc.process_index} GLOO_THREADS_LEFT {gloo}\\n"); sys.stdout.flush()
"""


@pytest.mark.slow
def test_two_process_ddp_training_keeps_replicas_in_sync(tmp_path):
    """`torchrun --nproc_per_node 2` (what `accelerate launch` does on GPUs), on CPU with gloo: the networks
    stay identical across processes (gradients all-reduced, incl. the gradient penalty) while each process
    draws its own noise z, DiffAugment parameters, penalty eps and batches (issue 12: all ranks drew the same)."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), "wgan-gp-64",
           str(tmp_path / "run"), "translation,cutout"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # on failure show what each rank printed (a rank's own error sits above torchrun's summary)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-8000:]}"
    assert "WORLD 2 SYNCED True OWN_Z_AUG_EPS_BATCHES [True, True, True, True]" in r.stdout, r.stdout + r.stderr[-2000:]
    # Trainer.close() tears the gloo group down before exit on every rank (issue 12: the DDP wrappers kept it,
    # and its threads, alive into interpreter finalisation, where a rank aborted now and then with SIGABRT)
    if sys.platform.startswith("linux"):
        for rank in (0, 1):
            assert f"RANK {rank} GLOO_THREADS_LEFT []" in r.stdout, r.stdout + r.stderr[-2000:]


def test_bf16_autocast_and_channels_last_path(phantom_ds, tmp_path):
    """The mixed-precision / channels_last code path the GPU default takes, run on CPU (bf16 autocast)."""
    cfg = gan_cfg("wgan-gp-64", steps=2, log_every=1, batch_size=8, amp="bf16", channels_last="on")
    tr = Trainer(cfg, phantom_ds, tmp_path, progress=False)  # bf16 is emulated on CPUs without it: keep it short
    assert tr.amp == "bf16" and tr.channels_last
    tr.fit()
    s = tr.sample(8)
    assert s.dtype == torch.float32 and torch.isfinite(s).all() and s.abs().max() <= 1
    assert all(torch.isfinite(p).all() for p in tr.main_generator.parameters())


def test_trainers_with_different_precisions_in_one_process(phantom_ds, tmp_path):
    """Regression: Accelerate's per-process state refused a second Trainer with another precision."""
    a = Trainer(gan_cfg("dcgan-64", steps=2, amp="no"), phantom_ds, tmp_path / "a", progress=False)
    b = Trainer(gan_cfg("dcgan-64", steps=2, amp="bf16"), phantom_ds, tmp_path / "b", progress=False)
    assert (a.amp, b.amp) == ("no", "bf16")
    b.fit()
    a.fit()  # the first still trains in float32
    assert a.sample(2).dtype == torch.float32 and all(p.dtype == torch.float32 for p in a.main_generator.parameters())


def test_config_words_stay_words(tmp_path):
    """Regression: YAML 1.1 read `amp=no` as False and `channels_last=on` as True, so `--set amp=no` was
    refused and `--set channels_last=on` silently left channels_last off."""
    from cxraug.config import load_config

    cfg = load_config(
        TrainConfig, overrides=["amp=no", "channels_last=on", "ema_decay=0", "compile=yes"], base=preset("dcgan-64")
    )
    assert (cfg.amp, cfg.channels_last, cfg.compile) == ("no", "on", True)
    f = tmp_path / "c.yaml"
    f.write_text("amp: no\nchannels_last: off\ncompile: false\n")
    cfg = load_config(TrainConfig, f, base=preset("dcgan-64"))
    assert (cfg.amp, cfg.channels_last, cfg.compile) == ("no", "off", False)


def test_fp16_wgan_gp_keeps_its_loss_scale(phantom_ds, tmp_path):
    """Regression: under fp16 the penalty's double backward overflowed every step and the GradScaler
    skipped them, its scale falling to ~2; now the penalty runs in float32 and the scale holds."""
    tr = Trainer(gan_cfg("wgan-gp-64", steps=6, log_every=2, batch_size=8, width=8, amp="fp16"), phantom_ds, tmp_path,
                 progress=False)  # fmt: skip
    tr.fit()
    assert tr.scaler.is_enabled() and tr.scaler.get_scale() >= 256
    assert all(math.isfinite(v) for _, v in tr.history["d_loss"])


def test_loss_plot_of_a_run_without_logged_points_warns_nothing(tmp_path):
    """A run shorter than one logging interval saves its curves with no points yet: matplotlib used to warn
    "No artists with labels found to put in legend" on every such run (seen in the four-way benchmark)."""
    import warnings

    from PIL import Image

    from cxraug.plotting import plot_curves

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = plot_curves({"g_loss": [], "d_loss": []}, tmp_path / "empty.png")
        full = plot_curves({"g_loss": [(1, 0.5), (2, 0.4)]}, tmp_path / "full.png")
    assert Image.open(empty).size[0] > 0 and Image.open(full).size[0] > 0
