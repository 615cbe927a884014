"""Each GAN family = its networks + a loss strategy; the engine only calls these methods.

``critic_loss(batch)`` and ``generator_loss(batch)`` return (loss, logs). A batch is
``(x, y)`` — images [B,1,S,S] in [-1,1] and label vectors [B,K] — or, for translation, ``(a, b)``.

Randomness: every draw (noise ``z``, DiffAugment's parameters, the gradient penalty's ``eps``, image
pool choices) comes from the family's own ``rng`` (a ``torch.Generator`` on the training device) or
the pools' generators, seeded per process by the engine; :meth:`state` holds them for an exact resume.
During a generator update the engine switches the critics' ``requires_grad`` off; the families call
the plain critic modules there (``self.critics[...]``), not their DDP wrappers, so no critic gradient
is computed or all-reduced.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxraug.config import to_dict
from cxraug.data.cache import CachedDataset
from cxraug.errors import CXRAugError
from cxraug.models import (
    DCGANDiscriminator,
    HussainCritic,
    PatchDiscriminator,
    ProjectionDiscriminator,
    WGANGPCritic,
)
from cxraug.models.artifact import GeneratorFamily, family_of
from cxraug.models.cyclegan import ImagePool
from cxraug.train.config import TrainConfig
from cxraug.train.diffaug import DiffAugment
from cxraug.train.diffusion_family import DDPMTraining
from cxraug.train.family import TRAINING, TrainingFamily, trains
from cxraug.train.losses import LOSSES, GANLoss, WassersteinGP, WeightClip, cycle_loss
from cxraug.train.seeding import seeded_init, stream_seed
from cxraug.train.stylegan_family import StyleGAN2Training

# The built-in families: NoiseGANTraining and CycleGANTraining below, DDPMTraining and StyleGAN2Training in their
# modules (imported here, so that TRAINING holds all of them once this module is loaded).
__all__ = ["TRAINING", "CycleGANTraining", "DDPMTraining", "NoiseGANTraining", "StyleGAN2Training", "TrainingFamily",
           "build_critic", "build_generator", "make_family", "make_loss", "trains"]  # fmt: skip


def make_loss(cfg: TrainConfig) -> GANLoss:
    if cfg.loss == "wgan-clip":
        return WeightClip(cfg.clip)
    if cfg.loss == "wgan-gp":
        return WassersteinGP(cfg.gp_lambda)
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose from {sorted(LOSSES)}")
    return LOSSES[cfg.loss]()


def build_generator(cfg: TrainConfig, n_labels: int = 0) -> nn.Module:
    return family_of(cfg.family).build(to_dict(cfg), n_labels)


def build_critic(cfg: TrainConfig, n_labels: int = 0) -> nn.Module | None:
    """The critic of a noise GAN or CycleGAN (one of each pair). None for the others: StyleGAN2-ADA builds its
    discriminator in its own module (``train.stylegan_family``), a diffusion model has none."""
    s, w = cfg.data.size, cfg.width
    critics = {
        "dcgan": lambda: DCGANDiscriminator(s, w, **cfg.d_layout),  # paper layouts: train/config.py
        "wgan": lambda: HussainCritic(s),
        "wgangp": lambda: WGANGPCritic(s, w, **cfg.d_layout),
        "cgan": lambda: ProjectionDiscriminator(n_labels, s, w),
        "cyclegan": lambda: PatchDiscriminator(1, w),
    }
    return critics[cfg.family]() if cfg.family in critics else None


@trains("dcgan", "wgan", "wgangp", "cgan")
class NoiseGANTraining(TrainingFamily):
    """DCGAN, WGAN (clip), WGAN-GP and the conditional GAN: one G, one D, noise (+ labels) in."""

    graphable = True  # every draw on the device generator, no host sync: a CUDA graph can hold a whole step

    def __init__(self, cfg: TrainConfig, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        self.cfg, self.n_labels, self.rng = cfg, n_labels, rng
        self.spec: type[GeneratorFamily] = family_of(cfg.family)
        self.conditional = self.spec.conditional
        self.loss = make_loss(cfg)
        self.aug = DiffAugment(cfg.diffaug) if cfg.diffaug else None
        with seeded_init(cfg.seed):
            self.G = build_generator(cfg, n_labels)
            self.D = build_critic(cfg, n_labels)
        self.generators, self.critics = {"G": self.G}, {"D": self.D}

    def select_data(self, data: CachedDataset) -> tuple[CachedDataset, CachedDataset | None]:
        return (data.only_class(self.cfg.cls) if self.cfg.cls else data), None

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.aug(x, generator=self.rng) if self.aug else x

    def noise(self, n: int, device) -> torch.Tensor:  # [n, z]
        return torch.randn(n, self.cfg.z_dim, device=device, generator=self.rng)

    def critic_loss(self, batch):
        """Draw order on ``rng``: z, DiffAugment(real), DiffAugment(fake), the penalty's eps."""
        x, y = batch
        y = y if self.conditional else None
        with torch.no_grad():
            fake = self.G(self.noise(x.size(0), x.device), y)
        real_aug, fake_aug = self._augment(x), self._augment(fake)  # the critic sees, and is penalised on, these

        def critic(t: torch.Tensor, yy: torch.Tensor | None = None) -> torch.Tensor:
            return self.D(t, yy) if self.conditional else self.D(t)

        loss = self.loss.critic(critic(real_aug, y), critic(fake_aug, y))
        logs = {"d_loss": loss.detach()}
        pen = self.loss.penalty(critic, real_aug, fake_aug, y, generator=self.rng)
        if pen is not None:
            logs["gp"] = pen.detach()
            loss = loss + pen
        return loss, logs

    def after_critic_step(self) -> None:
        self.loss.after_critic_step(self.critics["D"])

    def generator_loss(self, batch):
        x, y = batch
        y = y if self.conditional else None
        fake = self.G(self.noise(x.size(0), x.device), y)
        d = self.critics["D"]  # plain module: frozen, not all-reduced
        out = d(self._augment(fake), y) if self.conditional else d(self._augment(fake))
        loss = self.loss.generator(out)
        return loss, {"g_loss": loss.detach()}



@trains("cyclegan")
class CycleGANTraining(TrainingFamily):
    """CycleGAN: G_AB, G_BA, D_A, D_B; LSGAN + cycle + identity losses, image pools."""

    graphable = False  # the image pools draw on the host and branch in Python

    def __init__(self, cfg: TrainConfig, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        self.cfg, self.rng = cfg, rng
        self.spec: type[GeneratorFamily] = family_of(cfg.family)
        self.loss = make_loss(cfg)
        with seeded_init(cfg.seed):
            self.G_AB, self.G_BA = build_generator(cfg), build_generator(cfg)
            self.D_A, self.D_B = build_critic(cfg), build_critic(cfg)
        self.generators = {"G_AB": self.G_AB, "G_BA": self.G_BA}
        self.critics = {"D_A": self.D_A, "D_B": self.D_B}
        self.pool_a, self.pool_b = ImagePool(cfg.pool_size, pool_seed), ImagePool(cfg.pool_size, pool_seed + 1)
        self._fakes: tuple[torch.Tensor, torch.Tensor] | None = None  # the last generator step's (fake A, fake B)

    def select_data(self, data: CachedDataset) -> tuple[CachedDataset, CachedDataset]:
        cfg = self.cfg
        if not (cfg.domain_a and cfg.domain_b):
            raise CXRAugError("CycleGAN needs domain_a and domain_b (e.g. --domain-a normal --domain-b covid)")
        a, b = data.only_class(cfg.domain_a), data.only_class(cfg.domain_b)
        # Zunair & Hamza: balance the two domains by undersampling the larger one.
        rng = np.random.default_rng(cfg.seed)
        n = min(len(a), len(b))
        a = a.subset(np.sort(rng.choice(len(a), n, replace=False))) if len(a) > n else a
        b = b.subset(np.sort(rng.choice(len(b), n, replace=False))) if len(b) > n else b
        return a, b

    def generator_loss(self, batch):
        a, b = batch
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        d_a, d_b = self.critics["D_A"], self.critics["D_B"]  # plain modules: frozen, not all-reduced
        adv = self.loss.generator(d_b(fake_b)) + self.loss.generator(d_a(fake_a))
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
        st = {"rng": self.rng.get_state(), "pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}
        if self._fakes is not None:
            st["fakes"] = [f.cpu() for f in self._fakes]
        return st

    def load_state(self, st: dict) -> None:
        dev = next(self.G_AB.parameters()).device
        self.pool_a.load(st["pool_a"], dev)
        self.pool_b.load(st["pool_b"], dev)
        if "rng" in st:
            self.rng.set_state(st["rng"])
        if "fakes" in st:
            self._fakes = tuple(f.to(dev) for f in st["fakes"])


def make_family(cfg: TrainConfig, n_labels: int, *, rng: torch.Generator | None = None, pool_seed: int | None = None):
    """The training family for ``cfg.family``; ``rng`` draws on its device (default: CPU, the ``noise`` stream
    of ``cfg.seed``, as the engine's process 0)."""
    family_of(cfg.family)  # a clear error for an unknown name
    if cfg.family not in TRAINING:
        known = ", ".join(sorted(TRAINING))
        raise CXRAugError(f"GAN family {cfg.family!r} can be sampled but not trained here; trainable: {known}")
    rng = rng if rng is not None else torch.Generator().manual_seed(stream_seed(cfg.seed, "noise"))
    pool_seed = stream_seed(cfg.seed, "pool") if pool_seed is None else pool_seed
    return TRAINING[cfg.family](cfg, n_labels, rng, pool_seed)
