"""The diffusion family (``ddpm``, Ho et al. 2020, sampled with DDIM, Song et al. 2021): one denoiser, no critic.
The network, its noise schedule and the samplers: :mod:`cxraug.models.ddpm`.

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

Sampling: x_T ~ N(0, I) on the CPU ``generator``, then ``sample_steps`` DDIM steps (eta 0); training previews
take ``preview_steps``. Conditional (``class_cond``): ``labels`` [n,K] chosen by the caller, else rows of the
real labels; the unconditional model returns real label rows too (for the manifest), as the noise GANs do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxraug.config import to_dict
from cxraug.data.cache import CachedDataset
from cxraug.errors import ConfigError
from cxraug.families.base import Batch, Config, Family, Logs, Training, family_of, register
from cxraug.families.losses import DEFAULT_LOSS
from cxraug.models.ddpm import DDPMConfig, DenoisingUNet, check_sampling, ddim_scheduler, noise_scheduler
from cxraug.seeding import seeded_init


def check_config(cfg: Any) -> None:
    """A GAN loss given to a denoiser is refused, not recorded in the run's config as if it had trained it."""
    if cfg.loss != DEFAULT_LOSS:  # what a config that never set one holds
        raise ConfigError(f"a DDPM trains by the denoising objective ||eps - eps_theta||^2; --set loss={cfg.loss} "
                          "has no effect on it")  # fmt: skip


class DDPMTraining(Training):
    """DDPM: ``generators = {"G": denoiser}``, no critics; loss = ||eps - eps_theta(x_t, t)||^2."""

    graphable = False  # diffusers' scheduler moves and indexes its tables per call: not proven capturable

    def __init__(self, cfg: Any, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        self.cfg, self.n_labels, self.rng = cfg, n_labels, rng
        self.spec = family_of(cfg.family)
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

    def generator_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        x0, y = batch  # [B,1,S,S] in [-1,1], [B,K]
        t, eps = self.draw(x0)
        x_t = self.scheduler.add_noise(x0.float(), eps, t)  # sqrt(ab_t) x0 + sqrt(1 - ab_t) eps
        pred = self.G(x_t, t, y if self.conditional else None)  # eps_theta(x_t, t[, y])
        loss = F.mse_loss(pred.float(), eps)
        return loss, {"mse": loss.detach()}

    # critic_loss, after_critic_step, state (its rng) and load_state: Training's defaults


@register
class DDPM(Family):
    """A denoising UNet eps_theta(x_t, t[, y]); no critic."""

    name = "ddpm"
    paper = "Ho, Jain & Abbeel 2020, arXiv:2006.11239; DDIM sampling: Song, Meng & Ermon 2021, arXiv:2010.02502"
    has_critic = False
    size_keys = ("width", "unet_mult", "unet_layers")
    section = DDPMConfig
    training = DDPMTraining

    def __init__(self, net: nn.Module, config: Config, class_names: list[str], real_labels: torch.Tensor):
        super().__init__(net, config, class_names, real_labels)
        self.conditional = getattr(net, "label_proj", None) is not None  # an instance fact: class_cond in its config
        self.opts = DDPMConfig.from_config(config)

    @classmethod
    def conditional_for(cls, config: Config) -> bool:
        return DDPMConfig.from_config(config).class_cond  # class-conditional by configuration

    @classmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        check_sampling(config)  # a bad schedule or sampler setting is refused up front, with the network's shape
        return DenoisingUNet.from_config(config, n_labels)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_config(cfg)

    def preview(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training previews: DDIM with ``preview_steps`` (default 10) instead of ``sample_steps``, so that a
        sample grid costs a fifth of a full sampling (a rougher picture of the same x_T)."""
        return self.sample(n, labels=labels, generator=generator, steps=self.opts.preview_steps)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
        batch: int | None = None,
        steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images [n,1,S,S] in [-1,1] (float32, CPU) and their label vectors [n,K]. All of x_T is drawn
        first, so the images do not depend on ``batch`` (default: the config's ``sample_batch``). ``steps``: DDIM
        steps (default: the config's ``sample_steps``)."""
        size = self.size
        x_T = torch.randn(n, 1, size, size, generator=generator)  # [n,1,S,S], on the CPU
        y = self._real_rows(n, generator) if labels is None else labels.float()  # [n,K]
        sched = ddim_scheduler(self.config, steps)
        bs = max(1, int(batch or self.opts.sample_batch))
        dev = self.device
        self.net.eval()
        out = []
        for i in range(0, n, bs):
            x = x_T[i : i + bs].to(dev)
            yb = y[i : i + bs].to(dev) if self.conditional else None
            for t in sched.timesteps.tolist():
                eps = self.net(x, t, yb).float()  # eps_theta(x_t, t)
                x = sched.step(eps, t, x, eta=0.0).prev_sample  # x_{t - T/S}
            out.append(x.clamp(-1, 1).float().cpu())
        imgs = torch.cat(out) if out else torch.zeros(0, 1, size, size)
        return imgs, y
