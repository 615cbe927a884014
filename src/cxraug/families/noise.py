"""What the noise GANs share: z (+ labels) -> one generator G, judged by one critic D.

DCGAN, WGAN (weight clipping), WGAN-GP and the conditional GAN are each a module of this package whose family
subclasses :class:`NoiseGAN` and says which networks it builds; they train the same way
(:class:`NoiseGANTraining`), with the loss their config names (:func:`make_loss`).

``critic_loss(batch)`` and ``generator_loss(batch)`` return (loss, logs). A batch is ``(x, y)``: images
[B,1,S,S] in [-1,1] and label vectors [B,K]. Randomness: every draw (noise ``z``, DiffAugment's parameters, the
gradient penalty's ``eps``) comes from the family's own ``rng`` (a ``torch.Generator`` on the training device),
seeded per process by the engine; :meth:`Training.state` holds it for an exact resume. During a generator update
the engine switches the critics' ``requires_grad`` off; the losses call the plain critic modules there
(``self.critics[...]``), not their DDP wrappers, so no critic gradient is computed or all-reduced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cxraug.config import to_dict
from cxraug.data.cache import CachedDataset
from cxraug.families.base import Batch, Family, Logs, Training, family_of
from cxraug.families.diffaug import DiffAugment
from cxraug.families.losses import LOSSES, GANLoss, WassersteinGP, WeightClip
from cxraug.seeding import seeded_init


def make_loss(cfg: Any) -> GANLoss:
    """The loss a config names (``loss``, with ``clip`` / ``gp_lambda`` for the Wasserstein ones)."""
    if cfg.loss == "wgan-clip":
        return WeightClip(cfg.clip)
    if cfg.loss == "wgan-gp":
        return WassersteinGP(cfg.gp_lambda)
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose from {sorted(LOSSES)}")
    return LOSSES[cfg.loss]()


class NoiseGANTraining(Training):
    """One G, one D, noise (+ labels) in; the loss strategy from the config."""

    graphable = True  # every draw on the device generator, no host sync: a CUDA graph can hold a whole step

    def __init__(self, cfg: Any, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        self.cfg, self.n_labels, self.rng = cfg, n_labels, rng
        self.spec = family_of(cfg.family)
        self.conditional = self.spec.conditional
        self.loss = make_loss(cfg)
        self.aug = DiffAugment(cfg.diffaug) if cfg.diffaug else None
        config = to_dict(cfg)
        with seeded_init(cfg.seed):
            self.G = self.spec.build(config, n_labels)
            self.D = self.spec.build_critics(config, n_labels)["D"]
        self.generators, self.critics = {"G": self.G}, {"D": self.D}

    def select_data(self, data: CachedDataset) -> tuple[CachedDataset, CachedDataset | None]:
        return (data.only_class(self.cfg.cls) if self.cfg.cls else data), None

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.aug(x, generator=self.rng) if self.aug else x

    def noise(self, n: int, device: torch.device | str) -> torch.Tensor:  # [n, z]
        return torch.randn(n, self.cfg.z_dim, device=device, generator=self.rng)

    def _critic(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.D(t, y) if self.conditional else self.D(t)

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        """Draw order on ``rng``: z, DiffAugment(real), DiffAugment(fake), the penalty's eps."""
        x, y = batch
        y = y if self.conditional else None
        with torch.no_grad():
            fake = self.G(self.noise(x.size(0), x.device), y)
        real_aug, fake_aug = self._augment(x), self._augment(fake)  # the critic sees, and is penalised on, these
        loss = self.loss.critic(self._critic(real_aug, y), self._critic(fake_aug, y))
        logs = {"d_loss": loss.detach()}
        pen = self.loss.penalty(self._critic, real_aug, fake_aug, y, generator=self.rng)
        if pen is not None:
            logs["gp"] = pen.detach()
            loss = loss + pen
        return loss, logs

    def after_critic_step(self) -> None:
        self.loss.after_critic_step(self.critics["D"])

    def generator_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        x, y = batch
        y = y if self.conditional else None
        fake = self.G(self.noise(x.size(0), x.device), y)
        d = self.critics["D"]  # plain module: frozen, not all-reduced
        out = d(self._augment(fake), y) if self.conditional else d(self._augment(fake))
        loss = self.loss.generator(out)
        return loss, {"g_loss": loss.detach()}


class NoiseGAN(Family):
    """z ~ N(0, I) -> image. Label vectors are drawn from the real ones (for the manifest) unless given."""

    training = NoiseGANTraining

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, int(self.config["z_dim"]), generator=generator)  # [n, z]
        y = self._real_rows(n, generator) if labels is None else labels.float()  # [n, K]
        self.net.eval()
        return self.net(z.to(self.device), y.to(self.device)).float().cpu(), y
