"""The training side of the diffusion family (``ddpm``): one denoiser, no critic.

Loss (Ho et al. 2020, Algorithm 1, the "simple" objective): for a batch of real images x_0 draw
t ~ U{0, ..., T-1} and eps ~ N(0, I), form x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with the
scheduler's ``add_noise``, and minimise the mean squared error between eps and the network's prediction
eps_theta(x_t, t[, y]). The engine makes the optimiser step and keeps the EMA of the denoiser (Ho et al.:
decay 0.9999, here with the engine's warm-up), which is what sampling uses.

Randomness: t and eps are drawn, in that order, from the family's ``rng`` (the engine's per-process
generator on the training device), so :meth:`state` holds everything needed for an exact resume; dropout
runs on the engine's ambient stream. ``critics`` is empty: the engine makes no critic update and has no
critic optimiser. ``diffaug`` is not used: DiffAugment augments what a discriminator sees, and a diffusion
model trained on augmented images would learn to generate the augmentations.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cxraug.config import to_dict
from cxraug.data.cache import CachedDataset
from cxraug.models.artifact import GeneratorFamily, family_of
from cxraug.models.ddpm import noise_scheduler
from cxraug.train.config import TrainConfig
from cxraug.train.family import TrainingFamily, trains
from cxraug.train.seeding import seeded_init


def check_config(cfg: TrainConfig) -> None:
    """A GAN loss given to a denoiser is refused, not recorded in the run's config as if it had trained it."""
    from cxraug.errors import ConfigError

    if cfg.loss != TrainConfig.loss:
        raise ConfigError(f"a DDPM trains by the denoising objective ||eps - eps_theta||^2; --set loss={cfg.loss} "
                          "has no effect on it")  # fmt: skip


@trains("ddpm")
class DDPMTraining(TrainingFamily):
    """DDPM: ``generators = {"G": denoiser}``, no critics; loss = ||eps - eps_theta(x_t, t)||^2."""

    graphable = False  # diffusers' scheduler moves and indexes its tables per call: not proven capturable
    check_config = staticmethod(check_config)  # also run by train.checks before any run folder exists

    def __init__(self, cfg: TrainConfig, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        self.cfg, self.n_labels, self.rng = cfg, n_labels, rng
        self.spec: type[GeneratorFamily] = family_of(cfg.family)
        config = to_dict(cfg)
        with seeded_init(cfg.seed):  # the init stream; the caller's global RNG untouched
            self.G = self.spec.build(config, n_labels)
        self.conditional = getattr(self.G, "label_proj", None) is not None
        self.scheduler = noise_scheduler(config)  # q(x_t | x_0): betas, alpha_bar
        self.T = int(self.scheduler.config.num_train_timesteps)
        self.generators: dict[str, torch.nn.Module] = {"G": self.G}
        self.critics: dict[str, torch.nn.Module] = {}

    def select_data(self, data: CachedDataset) -> tuple[CachedDataset, None]:
        return (data.only_class(self.cfg.cls) if self.cfg.cls else data), None

    def draw(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B] (long) and eps [B,1,S,S], in this order from ``rng``."""
        t = torch.randint(0, self.T, (x0.size(0),), device=x0.device, generator=self.rng)
        eps = torch.randn(x0.shape, device=x0.device, dtype=torch.float32, generator=self.rng)
        return t, eps

    def generator_loss(self, batch):
        x0, y = batch  # [B,1,S,S] in [-1,1], [B,K]
        t, eps = self.draw(x0)
        x_t = self.scheduler.add_noise(x0.float(), eps, t)  # sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
        pred = self.G(x_t, t, y if self.conditional else None)  # eps_theta(x_t, t[, y])
        loss = F.mse_loss(pred.float(), eps)
        return loss, {"mse": loss.detach()}

    # critic_loss, after_critic_step, state (its rng) and load_state: TrainingFamily's defaults
