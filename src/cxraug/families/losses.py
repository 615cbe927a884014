"""GAN losses as small strategy objects: ``critic(d_real, d_fake)`` and ``generator(d_fake)``.

- :class:`NonSaturatingBCE` — DCGAN (sigmoid + BCE, applied to logits for stability);
- :class:`Wasserstein` — WGAN critic/generator losses; with :class:`WeightClip` (Arjovsky et al.)
  or :func:`gradient_penalty` (Gulrajani et al., :class:`WassersteinGP`);
- :class:`Hinge` — conditional GAN with a projection discriminator;
- :class:`LSGAN` — least squares (Mao et al.), CycleGAN's adversarial loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class GANLoss(ABC):
    name = "gan"

    @abstractmethod
    def critic(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def generator(self, d_fake: torch.Tensor) -> torch.Tensor: ...

    def penalty(
        self, critic: Callable, real: torch.Tensor, fake: torch.Tensor, y=None, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """A regulariser on the inputs the critic loss saw (after DiffAugment); None for most losses."""
        return None

    def after_critic_step(self, critic: nn.Module) -> None:
        pass


class NonSaturatingBCE(GANLoss):
    name = "bce"

    def critic(self, d_real, d_fake):
        return F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(
            d_fake, torch.zeros_like(d_fake)
        )

    def generator(self, d_fake):
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


class Wasserstein(GANLoss):
    name = "wasserstein"

    def critic(self, d_real, d_fake):  # minimise -(E[D(x)] - E[D(G(z))])
        return d_fake.mean() - d_real.mean()

    def generator(self, d_fake):
        return -d_fake.mean()


class WeightClip(Wasserstein):
    """WGAN: clamp every critic parameter to [-c, c] after each critic update."""

    name = "wgan-clip"

    def __init__(self, clip: float = 0.01):
        self.clip = clip

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        for p in critic.parameters():
            p.clamp_(-self.clip, self.clip)


def gradient_penalty(
    critic: Callable,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    y=None,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on x_hat = eps*real + (1-eps)*fake, eps ~ U[0,1] per sample
    (Gulrajani et al. 2017), drawn from ``generator`` unless given. With DiffAugment, ``real`` and ``fake``
    are the augmented images the critic loss saw."""
    if eps is None:
        eps = torch.rand(real.size(0), 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat, y) if y is not None else critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


class WassersteinGP(Wasserstein):
    name = "wgan-gp"

    def __init__(self, gp_lambda: float = 10.0):
        self.gp_lambda = gp_lambda

    def penalty(self, critic, real, fake, y=None, generator=None):
        dev = real.device.type
        if torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.float16:
            # float16 cannot carry the penalty's double backward (the loss scale collapses to ~1 within a
            # few steps); bf16 and float32 can. Under fp16 the penalty alone runs in float32.
            with torch.autocast(dev, enabled=False):
                return self.gp_lambda * gradient_penalty(critic, real.float(), fake.float(), y=y, generator=generator)
        return self.gp_lambda * gradient_penalty(critic, real, fake, y=y, generator=generator)


class Hinge(GANLoss):
    name = "hinge"

    def critic(self, d_real, d_fake):
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()

    def generator(self, d_fake):
        return -d_fake.mean()


class LSGAN(GANLoss):
    name = "lsgan"

    def critic(self, d_real, d_fake):
        return 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))

    def generator(self, d_fake):
        return F.mse_loss(d_fake, torch.ones_like(d_fake))


def cycle_loss(real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """L1 cycle-consistency ||F(G(x)) - x||_1 (Zhu et al.)."""
    return F.l1_loss(reconstructed, real)


DEFAULT_LOSS = "wgan-gp"  # TrainConfig's default ``loss``
LOSSES = {"bce": NonSaturatingBCE, "wgan-clip": WeightClip, "wgan-gp": WassersteinGP, "hinge": Hinge, "lsgan": LSGAN}
