"""The diffusion family (issue 15 item 2): DDPM training on diffusers' UNet2DModel, DDIM sampling.

References: the forward process and the loss against Ho et al. (2020) computed here from the betas; the DDIM
update against Song et al. (2021) eq. 12 written out here; the label projection against diffusers' own
class-embedding table. Everything runs on tiny 16 px UNets (block widths 16/32, one block per level), on one
CPU thread: as fast as two for networks this small, and it does not collapse when the machine is loaded."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import gan_cfg
from cxraug.config import from_dict, to_dict
from cxraug.families import load_generator, make_training
from cxraug.families.ddpm import DDPM
from cxraug.io import load_checkpoint
from cxraug.models.ddpm import DDPMConfig, ddim_scheduler, noise_scheduler, unet_kwargs
from cxraug.train.config import TrainConfig, preset
from cxraug.train.engine import Trainer

pytest.importorskip("diffusers")

T = 1000
S = 16  # a tiny UNet: 16 px, widths (16, 32), one residual block per level, attention at 8 x 8, 2 DDIM steps
TINY = {"data": {"size": S}, "width": 16, "unet_mult": [1, 2], "unet_layers": 1, "unet_attention": [8],
        "sample_steps": 2, "batch_size": 4, "sample_every": 100, "log_every": 2}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    from cxraug.data.cache import build_cache
    from cxraug.data.phantom import phantom_collection
    from cxraug.data.preprocess import Preprocess

    coll = phantom_collection({"normal": 8, "covid": 8}, size=S, seed=4)
    return build_cache(coll, Preprocess(S), cache_root=tmp_path_factory.mktemp("tiny"), progress=False)


def cfg(**kw) -> TrainConfig:
    return gan_cfg("ddpm-64", **{**TINY, **kw})


def alpha_bar(schedule: str) -> torch.Tensor:
    """alpha_bar_t, t = 0..T-1, in float64 from the papers' definitions (not from diffusers)."""
    if schedule == "linear":  # Ho et al.: beta linear from 1e-4 to 0.02 over T steps
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    else:  # Nichol & Dhariwal eq. 17: f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), s = 0.008, beta clipped at 0.999
        f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


# ------------------------------------------------------------------ the forward process and the loss
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_noising_is_the_closed_form(schedule):
    ab = alpha_bar(schedule)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1, torch.randn(6, 1, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    want = ab[t].sqrt().view(-1, 1, 1, 1) * x0.double() + (1 - ab[t]).sqrt().view(-1, 1, 1, 1) * eps.double()
    got = noise_scheduler({"noise_schedule": schedule}).add_noise(x0, eps, t)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)  # float32 cumprod
    if schedule == "linear":  # Ho et al.: the last step leaves almost no signal, alpha_bar_T ~ 4e-5
        assert ab[-1].item() == pytest.approx(4.04e-5, rel=0.01)


def test_training_loss_is_the_mse_of_the_noise_for_the_drawn_t_and_eps():
    c = cfg(class_cond=True, dropout=0.0)
    fam = make_training(c, n_labels=2)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, S, S, generator=g) * 2 - 1
    y = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])
    replay = torch.Generator()
    replay.set_state(fam.rng.get_state())
    t = torch.randint(0, T, (4,), generator=replay)  # the family's draw order: t, then eps
    eps = torch.randn(4, 1, S, S, generator=replay)
    ab = alpha_bar("linear")[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.no_grad():
        pred = fam.G(x_t, t, y)
        loss, logs = fam.generator_loss((x0, y))
    want = ((pred - eps) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert logs["mse"].item() == pytest.approx(want.item(), rel=1e-5)
    assert fam.critics == {} and fam.conditional


def test_label_projection_of_a_one_hot_vector_is_diffusers_class_embedding():
    """W y for one-hot y is column k of W: the UNet fed W y equals diffusers' own UNet2DModel with a class
    table (num_class_embeds) holding W's columns, given the class index."""
    from diffusers import UNet2DModel

    c = cfg(class_cond=True, dropout=0.0)
    net = DDPM.build(to_dict(c), 3).eval()
    ref = UNet2DModel(**unet_kwargs(to_dict(c)), num_class_embeds=3).eval()
    missing, unexpected = ref.load_state_dict(net.unet.state_dict(), strict=False)
    assert missing == ["class_embedding.weight"] and unexpected == []
    with torch.no_grad():
        ref.class_embedding.weight.copy_(net.label_proj.weight.T)  # [K, temb]
        x, t = torch.randn(3, 1, S, S, generator=torch.Generator().manual_seed(2)), torch.tensor([5, 400, 999])
        k = torch.tensor([2, 0, 1])
        torch.testing.assert_close(net(x, t, torch.eye(3)[k]), ref(x, t, class_labels=k).sample, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ DDIM sampling
def test_ddim_step_is_song_et_al_eq_12():
    """x_{t-1} = sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev) eps, x0_pred = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t),
    eta = 0; the sampler clips x0_pred to [-1, 1] (as Ho et al.'s sampler), done here too."""
    sched = ddim_scheduler({"sample_steps": 10})
    assert sched.timesteps.tolist() == list(range(900, -1, -100))  # Song et al.'s spacing: 0, T/S, ..., T - T/S
    ab = alpha_bar("linear")
    g = torch.Generator().manual_seed(3)
    x_t, eps = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    for t, prev in ((500, 400), (0, -1)):  # an inner step, and the last one (alpha_bar_prev = 1)
        a, a_prev = ab[t], (ab[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64))
        x0 = ((x_t.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()).clamp(-1, 1)
        want = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps.double()
        got = sched.step(eps, t, x_t, eta=0.0).prev_sample
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)
    x0 = (x_t.double() - (1 - ab[500]).sqrt() * eps.double()) / ab[500].sqrt()
    assert (x0.abs() > 1).any()  # some x0_pred entries were outside [-1, 1] at t = 500: the clip was exercised


class Affine(torch.nn.Module):
    """A stand-in denoiser with a known output: eps_theta(x, t) = 0.3 x + t / 1000."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        return 0.3 * x + float(t) / 1000


def test_sampler_runs_the_ddim_recursion_from_x_T_on_the_generator():
    config = {**to_dict(cfg()), "data": {"size": 8}, "sample_steps": 4, "sample_batch": 2}
    fam = DDPM(Affine(), config, ["normal", "covid"], torch.tensor([[1.0, 0], [0, 1]]))
    imgs, y = fam.sample(3, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 1, 8, 8, generator=g).double()  # x_T first
    ab = alpha_bar("linear")
    for t in (750, 500, 250, 0):
        eps = 0.3 * x + t / 1000
        x0 = ((x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()).clamp(-1, 1)
        a_prev = ab[t - 250] if t >= 250 else torch.tensor(1.0, dtype=torch.float64)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(imgs.double(), x, rtol=0, atol=1e-5)
    # unconditional, trained on both classes: its images have no class (not a random training row's)
    assert torch.equal(y, torch.zeros(3, 2)) and imgs.dtype == torch.float32 and imgs.shape == (3, 1, 8, 8)


def test_seeded_sampling_is_reproducible_batch_free_and_leaves_the_global_rng(tiny_ds, tmp_path):
    tr = Trainer(cfg(steps=1, class_cond=True), tiny_ds, tmp_path, progress=False)
    fam = tr.generator_family()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        a, ya = fam.sample(5, generator=torch.Generator().manual_seed(11), batch=5)
        assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from torch's global RNG
        torch.manual_seed(99)
        b, yb = fam.sample(5, generator=torch.Generator().manual_seed(11), batch=2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert torch.equal(ya, yb) and fam.conditional
    c, _ = fam.sample(5, generator=torch.Generator().manual_seed(12))
    assert (a - c).abs().max() > 0.1
    assert a.min() >= -1 and a.max() <= 1
    # conditional: the labels given are used (another label, other images from the same noise)
    one = torch.tensor([[1.0, 0]] * 2)
    p, _ = fam.sample(2, labels=one, generator=torch.Generator().manual_seed(11))
    q, _ = fam.sample(2, labels=1 - one, generator=torch.Generator().manual_seed(11))
    assert (p - q).abs().max() > 0


def test_training_previews_take_preview_steps_and_sampling_sample_steps(tiny_ds, tmp_path):
    """The sample grids of a training run (the engine's ``sample``) run ``preview_steps`` DDIM steps, synthesis
    ``sample_steps``: a preview costs a fraction of a full sampling (issue 29: 2 training steps of ddpm-64 spent
    minutes drawing the final grid). Counted as denoiser calls."""
    tr = Trainer(cfg(steps=1, sample_steps=6, preview_steps=2), tiny_ds, tmp_path, progress=False)
    fam = tr.generator_family()  # the EMA denoiser, which the previews sample too
    calls = []
    hook = fam.net.register_forward_hook(lambda *a: calls.append(1))
    try:
        tr.sample(3)
        n_preview = len(calls)
        calls.clear()
        fam.sample(3, generator=torch.Generator().manual_seed(0), batch=3)
        n_sample = len(calls)
    finally:
        hook.remove()
    assert (n_preview, n_sample) == (2, 6)  # one batch of 3: a call per DDIM step


# ------------------------------------------------------------------ training in the engine
def test_training_lowers_the_denoising_loss_on_fixed_draws(tiny_ds):
    """Adam steps on the family's loss lower the MSE on a fixed set of (x0, t, eps) held apart from training."""
    c = cfg(dropout=0.0)
    fam = make_training(c, n_labels=2)
    x = torch.from_numpy(np.asarray(tiny_ds.images[:8], np.float32) / 127.5 - 1)[:, None]  # [8,1,S,S]
    g = torch.Generator().manual_seed(5)
    t, eps = torch.randint(0, T, (8,), generator=g), torch.randn(8, 1, S, S, generator=g)
    x_t = fam.scheduler.add_noise(x, eps, t)

    def held_out() -> float:
        with torch.no_grad():
            return float(((fam.G(x_t, t) - eps) ** 2).mean())

    start = held_out()
    opt = torch.optim.Adam(fam.G.parameters(), lr=2e-3)
    for i in range(25):
        opt.zero_grad()
        fam.generator_loss((x[(2 * i) % 8 : (2 * i) % 8 + 4], None))[0].backward()
        opt.step()
    assert start > 0.8 and held_out() < 0.6 * start


def _weights(tr: Trainer) -> dict[str, torch.Tensor]:
    st = tr.state_dict()
    nets = {**st["weights"], **{f"ema.{k}": v for k, v in (st["ema"] or {}).items()}}
    return {f"{n}.{k}": v for n, sd in nets.items() for k, v in sd.items()}


def test_resume_is_exact_and_there_is_no_critic(tiny_ds, tmp_path):
    """Stopped at step 2 and continued by a fresh Trainer from its checkpoint, the run ends bit-identical to a
    straight one (t, eps on the family's rng; dropout on the ambient stream; Adam and the EMA in the checkpoint)."""
    kw = {"steps": 4, "ckpt_every": 2, "class_cond": True, "ema_decay": 0.9999}
    straight = Trainer(cfg(**kw), tiny_ds, tmp_path / "a", progress=False)
    straight.fit()
    first = Trainer(cfg(**kw), tiny_ds, tmp_path / "b", progress=False)
    first.fit(2)
    del first
    resumed = Trainer(cfg(**kw), tiny_ds, tmp_path / "b", progress=False)
    resumed.load_state_dict(load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt"))
    resumed.fit()
    wa, wb = _weights(straight), _weights(resumed)
    assert wa.keys() == wb.keys() and len(wa) > 0
    assert max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].is_floating_point()) == 0.0
    assert any(not torch.equal(wa[f"G.{k}"], wa[f"ema.G.{k}"]) for k in straight.state_dict()["weights"]["G"])
    st = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert st["critics"] == {} and st["opt_d"] is None and straight.opt_d is None and straight.n_critic == 0
    assert straight.images_seen == 4 * 4  # one batch per step


def test_defaults_match_the_train_config():
    """The models layer's fallbacks for a config without the diffusion fields are TrainConfig's defaults."""
    c, defaults = TrainConfig(), asdict(DDPMConfig())
    assert {k: getattr(c, k) for k in defaults} == defaults
    assert DDPMConfig.from_config({}) == DDPMConfig.from_config({k: None for k in defaults}) == DDPMConfig()


def test_bad_settings_are_one_line_before_any_work(tmp_path, capsys):
    from cxraug.cli import main

    base = ["train", "--preset", "ddpm-64", "--data", "phantom:normal=4,covid=4", "--steps", "1", "--out",
            str(tmp_path), "-q"]  # fmt: skip
    for extra, msg in ((["--size", "36"], "multiple of 8"), (["--set", "sample_steps=0"], "sample_steps"),
                       (["--set", "noise_schedule=quadratic"], "noise_schedule")):  # fmt: skip
        assert main(base + extra) != 0
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before any run folder


# ------------------------------------------------------------------ every stage takes the checkpoint
@pytest.fixture(scope="module")
def ddpm_ckpt(tiny_ds, tmp_path_factory):
    run = tmp_path_factory.mktemp("ddpm")
    return Trainer(cfg(steps=2, class_cond=True), tiny_ds, run, progress=False).fit()


def test_synthesize_evaluate_balance_take_the_checkpoint(ddpm_ckpt, tmp_path):
    import csv
    import json

    from cxraug.cli import main
    from cxraug.synth.generate import generate

    g = load_generator(ddpm_ckpt)
    assert g.name == "ddpm" and g.conditional and g.size == S
    imgs, labs, info = generate(ddpm_ckpt, 3, seed=4, label="covid")
    assert imgs.shape == (3, S, S) and imgs.dtype == np.uint8 and info["family"] == "ddpm"
    assert (labs[:, g.class_names.index("covid")] == 1).all()  # label vectors of the asked class
    assert main(["synthesize", "--checkpoint", str(ddpm_ckpt), "--n", "3", "--out", str(tmp_path / "syn"), "-q"]) == 0
    assert len(list((tmp_path / "syn").rglob("*.png"))) == 3
    out = tmp_path / "runs"
    assert main(["balance", "--data", "phantom:normal=6,covid=4", "--generator", str(ddpm_ckpt), "--strategy",
                 "equalize", "--out", str(out), "-q"]) == 0  # fmt: skip
    (run,) = out.glob("balance-*")
    bal = json.loads((run / "balance.json").read_text())
    with open(run / "manifest.csv", newline="") as f:
        written = sum(r["synthetic"] == "true" for r in csv.DictReader(f))
    assert bal["added"] == {"covid": 2} and written == 2


def test_evaluate_takes_the_checkpoint(ddpm_ckpt, tmp_path):
    import json

    from cxraug.cli import main
    from cxraug.metrics.encoder import ConvEncoder, save_encoder

    enc = save_encoder(ConvEncoder(S, width=8), tmp_path / "enc.safetensors")
    assert main(["evaluate", "--real", "phantom:normal=8,covid=8", "--fake", str(ddpm_ckpt), "--n", "8", "--size",
                 str(S), "--features", f"encoder:{enc}", "--out", str(tmp_path / "ev"), "-q"]) == 0  # fmt: skip
    (m,) = (tmp_path / "ev").rglob("metrics.json")
    assert math.isfinite(json.loads(m.read_text())["fid"])


def test_the_study_trains_and_samples_a_ddpm_from_its_gan_block(tmp_path, monkeypatch):
    """benchmark's ``gan:`` block with the ddpm preset: the study trains the denoiser on the minority training
    images only and augments with its samples, with no diffusion-specific code in the study."""
    from cxraug.classify.study import GanSpec, Source, Study, StudyConfig
    from cxraug.metrics.encoder import ConvEncoder, save_encoder

    enc = save_encoder(ConvEncoder(32, width=8), tmp_path / "enc.safetensors")  # untrained: plumbing only
    spec = GanSpec(preset="ddpm-64", steps=2, width=8, batch_size=4,
                   overrides=["unet_mult=[1,2]", "unet_layers=1", "unet_attention=[]", "sample_steps=2"])  # fmt: skip
    cfg = StudyConfig(sources=[Source("phantom:normal=24,covid=12")], size=32, gan=spec, regimes=[1.0], seeds=[0],
                      protocols=["real", "gan-aug"], epochs=1, batch_size=16, bootstrap=20,
                      features=f"encoder:{enc}")  # fmt: skip
    monkeypatch.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: np.zeros((len(x), 2)))
    summary = Study(cfg, tmp_path / "study", progress=False).run()
    (gan,) = list((tmp_path / "study" / "gans").iterdir())
    st = load_checkpoint(gan / "checkpoints" / "last.pt")
    assert st["family"] == "ddpm" and st["step"] == 2 and st["critics"] == {}
    assert set(summary["table"]["1.0"]) == {"real", "gan-aug"}
    study = Study(cfg, tmp_path / "study", progress=False)
    study.prepare()
    _x, y, syn = study.train_set("gan-aug", 1.0, 0)
    assert syn.sum() > 0 and (y[syn] == study.k_min).all()


def test_importing_cxraug_does_not_import_diffusers():
    import subprocess
    import sys

    code = "import sys, cxraug, cxraug.models, cxraug.families, cxraug.cli; print('diffusers' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]


def _cli_train(out, *extra: str) -> list[str]:
    return ["train", "--preset", "ddpm-64", "--data", "phantom:normal=6,covid=6", "--size", str(S), "--steps", "4",
            "--out", str(out), "-q", "--set", "width=16", "--set", "unet_mult=1,2", "--set", "unet_layers=1",
            "--set", "unet_attention=[8]", "--set", "sample_steps=2", "--set", "batch_size=4", "--set", "ckpt_every=2",
            "--set", "log_every=2", "--set", "threads=1", "--set", "class_cond=true", *extra]  # fmt: skip


@pytest.mark.slow
def test_cli_run_killed_after_a_checkpoint_resumes_to_the_straight_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from cxraug.cli import main

    assert main(_cli_train(tmp_path / "a")) == 0
    env = {**os.environ, "CXRAUG_FAULT": "after-checkpoint:2"}
    killed = subprocess.run([sys.executable, "-m", "cxraug", *_cli_train(tmp_path / "b")], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (run_b,) = list((tmp_path / "b").iterdir())
    assert load_checkpoint(run_b / "checkpoints" / "last.pt")["step"] == 2
    assert main(["train", "--resume", str(run_b), "-q"]) == 0
    (run_a,) = list((tmp_path / "a").iterdir())
    a, b = (load_checkpoint(r / "checkpoints" / "last.pt") for r in (run_a, run_b))
    assert a["step"] == b["step"] == 4
    for part in ("weights", "ema"):
        for k, v in a[part]["G"].items():
            assert torch.equal(v, b[part]["G"][k]), (part, k)


def test_fid_hook_scores_the_ema_denoisers_samples(tiny_ds, tmp_path):
    from cxraug.data.preprocess import tensor_to_u8
    from cxraug.metrics.encoder import ConvEncoder, save_encoder
    from cxraug.metrics.features import extract, get_extractor
    from cxraug.metrics.fid import fid_from_features
    from cxraug.metrics.hooks import EncoderFIDHook

    enc = save_encoder(ConvEncoder(S, width=8), tmp_path / "enc.safetensors")
    tr = Trainer(cfg(steps=2, fid_every=2, fid_n=6), tiny_ds, tmp_path / "run", progress=False,
                 eval_hook=EncoderFIDHook(f"encoder:{enc}"))  # fmt: skip
    tr.fit()
    ((_, fid),) = tr.history["fid"]
    fake, _ = tr.generator_family().sample(6, generator=torch.Generator().manual_seed(0))  # the hook's seed
    ext = get_extractor(f"encoder:{enc}")
    want = fid_from_features(extract(ext, np.asarray(tiny_ds.images), progress=False),
                             extract(ext, tensor_to_u8(fake), progress=False))  # fmt: skip
    assert fid == pytest.approx(want, rel=1e-4)
    assert load_generator(tmp_path / "run" / "checkpoints" / "best.pt").name == "ddpm"


def test_the_denoiser_refuses_only_a_loss_someone_set():
    """A DDPM config that never set ``loss`` holds TrainConfig's default (families.losses.DEFAULT_LOSS): accepted;
    a GAN loss someone set: refused."""
    from cxraug.errors import ConfigError
    from cxraug.families.ddpm import check_config as check_ddpm

    check_ddpm(from_dict(TrainConfig, preset("ddpm-64")))
    with pytest.raises(ConfigError, match="denoising objective"):
        check_ddpm(from_dict(TrainConfig, {**preset("ddpm-64"), "loss": "hinge"}))
