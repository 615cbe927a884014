"""Training configuration and the named presets that reproduce each paper's setup."""

from __future__ import annotations

from dataclasses import dataclass, field

from cxraug.data.source import DataConfig


@dataclass
class TrainConfig:
    preset: str = "wgan-gp-64"
    family: str = "wgangp"  # dcgan | wgan | wgangp | cgan | cyclegan
    data: DataConfig = field(default_factory=DataConfig)
    cls: str | None = None  # train on this class only (e.g. COVID); None = all images
    domain_a: str | None = None  # CycleGAN source class (e.g. normal)
    domain_b: str | None = None  # CycleGAN target class (e.g. covid)
    z_dim: int = 100
    width: int = 64  # ngf/ndf
    n_blocks: int = 6  # CycleGAN residual blocks
    batch_size: int = 64
    steps: int = 2000  # generator updates
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
    threads: int = 0  # CPU threads for torch (0 = torch's default)


PRESETS: dict[str, dict] = {
    # Radford et al. / Nguyen: Adam 2e-4, beta1 0.5, batch 128, BCE.
    "dcgan-64": dict(family="dcgan", loss="bce", batch_size=128, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    "dcgan-128": dict(family="dcgan", loss="bce", batch_size=128, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    # Hussain et al.: RMSprop 5e-5, clip 0.01, n_critic 5, 96x96 (see models/wgan.py).
    "wgan-hussain-96": dict(family="wgan", loss="wgan-clip", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5),
    "wgan-clip-64": dict(family="wgan", loss="wgan-clip", optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5),
    # Gulrajani et al. / Nguyen: Adam 1e-4 (0.5, 0.9), lambda 10, n_critic 5.
    "wgan-gp-64": dict(family="wgangp", loss="wgan-gp", lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5),
    "wgan-gp-128": dict(family="wgangp", loss="wgan-gp", lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5),
    # Sundaram & Hulkund-style conditional GAN; projection D with spectral norm + hinge (Miyato & Koyama).
    "cgan-64": dict(family="cgan", loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9, n_critic=2),
    "cgan-128": dict(family="cgan", loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.9, n_critic=2),
    # Zhu et al. / Zunair & Hamza: LSGAN, cycle 10, identity 0.5, pool 50, Adam 2e-4 (0.5, 0.999), batch 1.
    "cyclegan-128": dict(family="cyclegan", loss="lsgan", batch_size=1, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
    "cyclegan-256": dict(
        family="cyclegan", loss="lsgan", batch_size=1, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1, n_blocks=9
    ),
    "cyclegan-64": dict(family="cyclegan", loss="lsgan", batch_size=1, lr_g=2e-4, lr_d=2e-4, beta2=0.999, n_critic=1),
}


def preset(name: str) -> dict:
    """The preset as a config dict (``data.size`` from the name's suffix)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    size = int(name.rsplit("-", 1)[1])
    return {"preset": name, **PRESETS[name], "data": {"size": size}}
