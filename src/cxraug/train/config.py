"""Training configuration and the named presets.

Two kinds of preset: the papers' setups by name (``nguyen-wgan-gp-128``, ``hussain-wgan-96``, ...), faithful by
default — architecture sizes, loss, optimiser, batch, no EMA unless the paper has one, length in epochs —
and the project's tuned defaults (``wgan-gp-64``, ``dcgan-64``, ...). ``docs/presets.md`` sets each paper
preset beside the paper's values and says why any differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cxraug.data.source import DataConfig


@dataclass
class TrainConfig:
    preset: str = "wgan-gp-64"
    family: str = "wgangp"  # dcgan | wgan | wgangp | cgan | cyclegan | stylegan2 | ddpm
    data: DataConfig = field(default_factory=DataConfig)
    cls: str | None = None  # train on this class only (e.g. COVID); None = all images
    domain_a: str | None = None  # CycleGAN source class (e.g. normal)
    domain_b: str | None = None  # CycleGAN target class (e.g. covid)
    z_dim: int = 100
    width: int = 64  # ngf/ndf
    n_blocks: int = 6  # CycleGAN residual blocks
    g_layout: dict[str, Any] = field(default_factory=dict)  # generator constructor options (paper layouts)
    d_layout: dict[str, Any] = field(default_factory=dict)  # critic constructor options (paper layouts)
    batch_size: int = 64
    steps: int = 2000  # generator updates
    epochs: int = 0  # > 0: length in passes over the training images; sets steps (resolve_steps)
    optimizer: str = "adam"  # adam | rmsprop
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    n_critic: int = 5
    loss: str = "wgan-gp"  # bce | wgan-clip | wgan-gp | hinge | lsgan
    clip: float = 0.01
    gp_lambda: float = 10.0
    cycle_lambda: float = 10.0
    identity_lambda: float = 0.5  # times cycle_lambda; 0 disables the identity loss
    pool_size: int = 50
    ema_decay: float = 0.999  # 0 disables the generator EMA
    diffaug: str = ""  # e.g. "translation,cutout,brightness" for the limited-data regime
    # --- StyleGAN2-ADA (family stylegan2: models/stylegan2.py, train/ada.py, train/stylegan_family.py; Karras et
    # al. 2020). Also read by it: z_dim, width (channels min(width * size / res, 8 * width)), class_cond. ---
    w_dim: int = 512  # the intermediate latent w
    map_layers: int = 8  # fully connected layers of the mapping network z -> w
    mbstd_group: int = 4  # minibatch-stddev group size (the discriminator)
    r1_gamma: float = 1.0  # R1 penalty weight gamma on the real images (0 = off)
    r1_every: int = 16  # lazy R1: on every k-th discriminator step, the term times k
    ada: str = "bgc"  # ADA pipeline: "bgc", some of its letters, or operation names (train/ada.py); "" = off
    ada_target: float = 0.6  # target of r_t = E[sign(D(real))]; 0 = p stays at ada_p
    ada_interval: int = 4  # discriminator steps between two adjustments of p
    ada_kimg: float = 500.0  # thousand real images over which p can move from 0 to 1
    ada_p: float = 0.0  # initial augmentation probability
    truncation: float = 1.0  # psi when sampling (1 = no truncation)
    # --- diffusion (family ddpm, models/ddpm.py; Ho et al. 2020, DDIM sampling Song et al. 2021) ---
    unet_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # UNet block widths = width x these
    unet_layers: int = 2  # residual blocks per UNet level
    unet_attention: list[int] = field(default_factory=lambda: [16])  # feature-map sizes with self-attention
    dropout: float = 0.1  # in the UNet's residual blocks (Ho et al.: 0.1 on CIFAR-10)
    class_cond: bool = False  # condition on the label vectors (the denoiser; StyleGAN2 reads it too)
    noise_schedule: str = "linear"  # linear (Ho et al.) | cosine (Nichol & Dhariwal)
    diffusion_steps: int = 1000  # T, the forward process's steps
    sample_steps: int = 50  # DDIM steps when sampling (eta 0)
    sample_batch: int = 128  # images denoised at once when sampling
    preview_steps: int = 10  # DDIM steps for the training previews (sample grids): a fifth of sample_steps' cost
    seed: int = 0
    log_every: int = 10  # host syncs (loss .item()) only every log_every steps
    sample_every: int = 200
    ckpt_every: int = 200
    fid_every: int = 0  # evaluate FID every K steps (0 = off) and keep best.pt
    fid_n: int = 256
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16) | bf16 | fp16 | no
    channels_last: str = "auto"  # auto (on CUDA, and on CPU under bf16) | on | off
    compile: bool = False  # torch.compile the networks (opt-in)
    cuda_graphs: bool = True  # on CUDA, each step captured in a CUDA graph where that is exact (train/graphs.py); else eager
    threads: int = 0  # CPU threads for torch (0 = torch's default)


# The project's tuned defaults: what `cxraug train` runs unless told otherwise. They start from the papers'
# optimisers but are not any paper's setup (e.g. the generator EMA, batch 64, wider 128 px networks).
TUNED_PRESETS: dict[str, dict] = {
    # Radford et al.: Adam 2e-4, beta1 0.5, batch 128, BCE.
    "dcgan-64": dict(family="dcgan", loss="bce", batch_size=128, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    "dcgan-128": dict(family="dcgan", loss="bce", batch_size=128, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    # Hussain et al.'s networks (see models/wgan.py) with RMSprop 5e-5, clip 0.01, n_critic 5.
    "wgan-hussain-96": dict(family="wgan", loss="wgan-clip", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5),
    "wgan-clip-64": dict(family="wgan", loss="wgan-clip", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5),
    # Gulrajani et al.: Adam 1e-4 (0.5, 0.9), lambda 10, n_critic 5.
    "wgan-gp-64": dict(family="wgangp", loss="wgan-gp", lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5),
    "wgan-gp-128": dict(family="wgangp", loss="wgan-gp", lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5),
    # Conditional GAN; projection D with spectral norm + hinge (Miyato & Koyama).
    "cgan-64": dict(family="cgan", loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9, n_critic=2),
    "cgan-128": dict(family="cgan", loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9, n_critic=2),
    # Zhu et al.: LSGAN, cycle 10, identity 0.5, pool 50, Adam 2e-4 (0.5, 0.999), batch 1.
    "cyclegan-128": dict(family="cyclegan", loss="lsgan", batch_size=1, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    "cyclegan-256": dict(
        family="cyclegan", loss="lsgan", batch_size=1, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1, n_blocks=9
    ),
    "cyclegan-64": dict(family="cyclegan", loss="lsgan", batch_size=1, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    # DDPM (Ho et al. 2020; docs/presets.md): epsilon-prediction UNet, linear betas over T=1000, Adam (0.9, 0.999),
    # EMA 0.9999; lr 1e-4 as the diffusers DDPM example (Ho et al.: 2e-4 at 32 px). Scaled down for ~1,000 CXR
    # images: base width 64 (Ho: 128), 4 levels at 64 px, 5 at 128 px; DDIM sampling in 50 steps (Song et al.).
    "ddpm-64": dict(family="ddpm", lr_g=1e-4, beta1=0.9, beta2=0.999, batch_size=64, width=64, ema_decay=0.9999,
                    unet_mult=[1, 2, 2, 2], unet_layers=2, unet_attention=[16], dropout=0.1, steps=10000,
                    sample_every=1000, ckpt_every=500),
    "ddpm-128": dict(family="ddpm", lr_g=1e-4, beta1=0.9, beta2=0.999, batch_size=64, width=64, ema_decay=0.9999,
                     unet_mult=[1, 1, 2, 2, 4], unet_layers=2, unet_attention=[16], dropout=0.1, steps=10000,
                     sample_every=1000, ckpt_every=500),
}

# StyleGAN2-ADA (Karras et al. 2020), the ADA paper's 256 px limited-data configuration scaled to each size
# (docs/presets.md): Adam 0.0025 with betas (0, 0.99), batch 64, one D step per G step, 512-d z and w, channels
# 64..512, minibatch-stddev groups of 4, generator EMA with a 20k-image half-life (0.5 ** (64 / 20000) per
# step), lazy R1 every 16 D steps with gamma 1 at 256 px scaled by (size / 256) ** 2, D's learning rate times
# 16/17 for the lazy regulariser, ADA 'bgc' toward r_t = 0.6, p adjusted every 4 steps, 0 -> 1 in 500k images.
_STYLEGAN2_ADA = dict(
    family="stylegan2", loss="bce", optimizer="adam", lr_g=0.0025, lr_d=0.0025 * 16 / 17, beta1=0.0, beta2=0.99,
    n_critic=1, batch_size=64, z_dim=512, w_dim=512, width=64, mbstd_group=4, ema_decay=0.9978, r1_every=16,
    ada="bgc", ada_target=0.6, ada_interval=4, ada_kimg=500.0, diffaug="",
)  # fmt: skip
TUNED_PRESETS.update({
    "stylegan2-ada-64": dict(_STYLEGAN2_ADA, map_layers=2, r1_gamma=1.0 * (64 / 256) ** 2),
    "stylegan2-ada-128": dict(_STYLEGAN2_ADA, map_layers=2, r1_gamma=1.0 * (128 / 256) ** 2),
    "stylegan2-ada-256": dict(_STYLEGAN2_ADA, map_layers=8, r1_gamma=1.0),
})  # fmt: skip

# Optimisers the CXR papers take from their sources (Ng & Hargreaves state them; Nguyen follows Ng).
_DCGAN_OPT = dict(optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1)  # Radford et al.
_WGANGP_OPT = dict(optimizer="adam", lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5, gp_lambda=10.0)
# The PyTorch DCGAN tutorial's networks (Ng & Hargreaves; Nguyen's 64 px listings): no conv bias anywhere.
_TUTORIAL_G = {"widths": [512, 256, 128, 64], "bias": False}
_TUTORIAL_D = {"widths": [64, 128, 256, 512], "bias": False}

# The papers' setups, faithful by default; docs/presets.md gives the paper value beside each preset value.
PAPER_PRESETS: dict[str, dict] = {
    # Hussain et al.: Keras WGAN, RMSprop 5e-5, clip 0.01, n_critic 5, 96 px, "20000 epochs" = Keras-GAN
    # iterations of one batch (batch 32 in that code), so a length in generator steps.
    "hussain-wgan-96": dict(
        family="wgan", loss="wgan-clip", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5, clip=0.01,
        batch_size=32, steps=20000, size=96,
    ),
    # Nguyen: DCGAN 64 px, BCE, batch 128, 500 epochs (2000 CLAHE images).
    "nguyen-dcgan-64": dict(
        family="dcgan", loss="bce", **_DCGAN_OPT, batch_size=128, epochs=500, g_layout=_TUTORIAL_G,
        d_layout=_TUTORIAL_D, size=64,
    ),
    # Nguyen: WGAN-GP 64 px; critic with parameter-free InstanceNorm after every conv, no bias.
    "nguyen-wgan-gp-64": dict(
        family="wgangp", loss="wgan-gp", **_WGANGP_OPT, batch_size=128, epochs=500, g_layout=_TUTORIAL_G,
        d_layout={**_TUTORIAL_D, "norm_first": True, "affine": False}, size=64,
    ),
    # Nguyen: WGAN-GP 128 px, G 512->32 and critic 16->256 with biases (3.6 M / 0.7 M parameters), 500 epochs.
    "nguyen-wgan-gp-128": dict(
        family="wgangp", loss="wgan-gp", **_WGANGP_OPT, batch_size=128, epochs=500,
        g_layout={"widths": [512, 256, 128, 64, 32], "bias": True},
        d_layout={"widths": [16, 32, 64, 128, 256], "bias": True, "norm_first": True, "affine": False}, size=128,
    ),
    # Ng & Hargreaves: the PyTorch DCGAN tutorial, Adam 2e-4 beta1 0.5, batch 128, 700 epochs (their best).
    "ng-dcgan-64": dict(
        family="dcgan", loss="bce", **_DCGAN_OPT, batch_size=128, epochs=700, g_layout=_TUTORIAL_G,
        d_layout=_TUTORIAL_D, size=64,
    ),
    # Ng & Hargreaves: the same networks, InstanceNorm in the critic, Adam 1e-4 (0.5, 0.9), batch 128, 700 epochs.
    "ng-wgan-gp-64": dict(
        family="wgangp", loss="wgan-gp", **_WGANGP_OPT, batch_size=128, epochs=700, g_layout=_TUTORIAL_G,
        d_layout=_TUTORIAL_D, size=64,
    ),
    # Zunair & Hamza: CycleGAN (Zhu et al.) at 256 px with the log-likelihood GAN loss and the cycle loss only
    # (their objective has no identity term); Zhu et al.'s Adam 2e-4 (0.5, 0.999), batch 1, pool 50, 200 epochs.
    "zunair-cyclegan-256": dict(
        family="cyclegan", loss="bce", optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1,
        batch_size=1, n_blocks=9, cycle_lambda=10.0, identity_lambda=0.0, pool_size=50, epochs=200, size=256,
    ),
    # Sundaram & Hulkund used a pretrained progressive GAN (Segal et al.) conditioned on 14-label vectors; the
    # closest trainable substitute is the conditional GAN (projection critic, hinge). Progressive GANs average
    # the generator's weights (EMA 0.999), so that stays on.
    "sundaram-cgan": dict(
        family="cgan", loss="hinge", optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9, n_critic=2,
        batch_size=64, ema_decay=0.999, epochs=100, size=128,
    ),
}  # fmt: skip
for _p in PAPER_PRESETS.values():  # EMA off unless the paper uses it
    _p.setdefault("ema_decay", 0.0)

PRESETS: dict[str, dict] = {**PAPER_PRESETS, **TUNED_PRESETS}


def preset(name: str) -> dict:
    """The preset as a config dict (``data.size`` from its ``size`` or else the name's suffix)."""
    if not isinstance(name, str) or name not in PRESETS:
        from cxraug.errors import ConfigError

        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    fields = dict(PRESETS[name])
    size = int(fields.pop("size", 0) or name.rsplit("-", 1)[1])
    return {"preset": name, **fields, "data": {"size": size}}


def steps_for_epochs(epochs: int, n_images: int, batch_size: int, processes: int = 1) -> int:
    """Generator steps in ``epochs`` passes over ``n_images``: one step per batch, the last batch of a pass
    partial (as a PyTorch DataLoader without drop_last), ``processes`` data-parallel processes sharing a pass."""
    if epochs < 0 or n_images < 1 or batch_size < 1 or processes < 1:
        raise ValueError(f"epochs={epochs}, n_images={n_images}, batch_size={batch_size}, processes={processes}")
    return epochs * math.ceil(n_images / (batch_size * processes))


def training_images(cfg: TrainConfig, counts: dict[str, int], total: int) -> int:
    """How many images one epoch passes over: the chosen class, the smaller CycleGAN domain (the larger is
    undersampled to it), or the whole collection. ``counts``: images per class."""
    from cxraug.models.artifact import family_of

    if family_of(cfg.family).takes_source and cfg.domain_a and cfg.domain_b:
        return min(counts.get(cfg.domain_a, 0), counts.get(cfg.domain_b, 0))
    if cfg.cls:
        return counts.get(cfg.cls, 0)
    return total


def resolve_steps(cfg: TrainConfig, counts: dict[str, int], total: int, processes: int = 1) -> TrainConfig:
    """With ``cfg.epochs`` set, fix ``cfg.steps`` from the training-set size and batch (once, before training;
    the saved config keeps both). Without it, ``steps`` stands."""
    if cfg.epochs > 0:
        n = training_images(cfg, counts, total)
        if n > 0:
            cfg.steps = steps_for_epochs(cfg.epochs, n, cfg.batch_size, processes)
    return cfg


def steps_over_epochs(overrides: list[str]) -> list[str]:
    """An explicit ``steps=N`` (``--steps``) beats a preset's epochs: add ``epochs=0`` unless epochs are set too."""
    keys = {o.split("=", 1)[0].strip() for o in overrides}
    return [*overrides, "epochs=0"] if "steps" in keys and "epochs" not in keys else list(overrides)
