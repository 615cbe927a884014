"""Each GAN family = its networks + a loss strategy; the engine only calls these methods.

``critic_loss(batch)`` and ``generator_loss(batch)`` return (loss, logs). A batch is
``(x, y)`` — images [B,1,S,S] in [-1,1] and label vectors [B,K] — or, for CycleGAN, ``(a, b)``.
"""

from __future__ import annotations

import torch
from torch import nn

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
from cxraug.models.cyclegan import ImagePool
from cxraug.train.config import TrainConfig
from cxraug.train.diffaug import DiffAugment
from cxraug.train.losses import LOSSES, GANLoss, WassersteinGP, WeightClip, cycle_loss


def make_loss(cfg: TrainConfig) -> GANLoss:
    if cfg.loss == "wgan-clip":
        return WeightClip(cfg.clip)
    if cfg.loss == "wgan-gp":
        return WassersteinGP(cfg.gp_lambda)
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose from {sorted(LOSSES)}")
    return LOSSES[cfg.loss]()


def build_generator(cfg: TrainConfig, n_labels: int = 0) -> nn.Module:
    s, z, w = cfg.data.size, cfg.z_dim, cfg.width
    return {
        "dcgan": lambda: DCGANGenerator(z, s, w, **cfg.g_layout),  # paper layouts: train/config.py
        "wgan": lambda: HussainGenerator(z, s),
        "wgangp": lambda: WGANGPGenerator(z, s, w, **cfg.g_layout),
        "cgan": lambda: ConditionalGenerator(n_labels, z, s, w),
        "cyclegan": lambda: ResnetGenerator(1, w, cfg.n_blocks),
    }[cfg.family]()


def build_critic(cfg: TrainConfig, n_labels: int = 0) -> nn.Module:
    s, w = cfg.data.size, cfg.width
    return {
        "dcgan": lambda: DCGANDiscriminator(s, w, **cfg.d_layout),  # paper layouts: train/config.py
        "wgan": lambda: HussainCritic(s),
        "wgangp": lambda: WGANGPCritic(s, w, **cfg.d_layout),
        "cgan": lambda: ProjectionDiscriminator(n_labels, s, w),
        "cyclegan": lambda: PatchDiscriminator(1, w),
    }[cfg.family]()


class AdversarialFamily:
    """DCGAN, WGAN (clip), WGAN-GP and the conditional GAN: one G, one D, noise (+ labels) in."""

    def __init__(self, cfg: TrainConfig, n_labels: int):
        self.cfg, self.n_labels = cfg, n_labels
        self.conditional = cfg.family == "cgan"
        self.loss = make_loss(cfg)
        self.aug = DiffAugment(cfg.diffaug) if cfg.diffaug else None
        self.G = build_generator(cfg, n_labels)
        self.D = build_critic(cfg, n_labels)
        self.generators, self.critics = {"G": self.G}, {"D": self.D}

    def _d(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        x = self.aug(x) if self.aug else x
        return self.D(x, y) if self.conditional else self.D(x)

    def noise(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.cfg.z_dim, device=device, generator=generator)

    def critic_loss(self, batch):
        x, y = batch
        y = y if self.conditional else None
        with torch.no_grad():
            fake = self.G(self.noise(x.size(0), x.device), y)
        loss = self.loss.critic(self._d(x, y), self._d(fake, y))
        logs = {"d_loss": loss.detach()}
        pen = self.loss.penalty(lambda t, yy=None: self.D(t, yy) if self.conditional else self.D(t), x, fake, y)
        if pen is not None:
            logs["gp"] = pen.detach()
            loss = loss + pen
        return loss, logs

    def after_critic_step(self) -> None:
        self.loss.after_critic_step(self.D)

    def generator_loss(self, batch):
        x, y = batch
        y = y if self.conditional else None
        fake = self.G(self.noise(x.size(0), x.device), y)
        loss = self.loss.generator(self._d(fake, y))
        return loss, {"g_loss": loss.detach()}


class CycleFamily:
    """CycleGAN: G_AB, G_BA, D_A, D_B; LSGAN + cycle + identity losses, image pools."""

    def __init__(self, cfg: TrainConfig, n_labels: int = 0):
        self.cfg = cfg
        self.loss = make_loss(cfg)
        self.G_AB, self.G_BA = build_generator(cfg), build_generator(cfg)
        self.D_A, self.D_B = build_critic(cfg), build_critic(cfg)
        self.generators = {"G_AB": self.G_AB, "G_BA": self.G_BA}
        self.critics = {"D_A": self.D_A, "D_B": self.D_B}
        self.pool_a, self.pool_b = ImagePool(cfg.pool_size, cfg.seed), ImagePool(cfg.pool_size, cfg.seed + 1)
        self._fakes: tuple[torch.Tensor, torch.Tensor] | None = None

    def generator_loss(self, batch):
        a, b = batch
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        adv = self.loss.generator(self.D_B(fake_b)) + self.loss.generator(self.D_A(fake_a))
        cyc = cycle_loss(a, self.G_BA(fake_b)) + cycle_loss(b, self.G_AB(fake_a))
        loss = adv + self.cfg.cycle_lambda * cyc
        logs = {"g_loss": adv.detach(), "cycle": cyc.detach()}
        if self.cfg.identity_lambda > 0:
            idt = cycle_loss(b, self.G_AB(b)) + cycle_loss(a, self.G_BA(a))
            loss = loss + self.cfg.identity_lambda * self.cfg.cycle_lambda * idt
            logs["identity"] = idt.detach()
        self._fakes = (fake_a.detach(), fake_b.detach())
        return loss, logs

    def critic_loss(self, batch):
        a, b = batch
        if self._fakes is None:  # first step: make fakes without a generator update
            with torch.no_grad():
                self._fakes = (self.G_BA(b), self.G_AB(a))
        fake_a, fake_b = self.pool_a.query(self._fakes[0]), self.pool_b.query(self._fakes[1])
        loss = self.loss.critic(self.D_A(a), self.D_A(fake_a)) + self.loss.critic(self.D_B(b), self.D_B(fake_b))
        return loss, {"d_loss": loss.detach()}

    def after_critic_step(self) -> None:
        pass

    def state(self) -> dict:
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_state(self, st: dict) -> None:
        self.pool_a.load(st["pool_a"])
        self.pool_b.load(st["pool_b"])


def make_family(cfg: TrainConfig, n_labels: int):
    if cfg.family == "cyclegan":
        return CycleFamily(cfg)
    if cfg.family in ("dcgan", "wgan", "wgangp", "cgan"):
        return AdversarialFamily(cfg, n_labels)
    raise ValueError(f"unknown family {cfg.family!r}")
