"""Training StyleGAN2-ADA (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" and
"Training Generative Adversarial Networks with Limited Data"): the losses and regularisers of the papers.

- Loss: the non-saturating logistic loss, D: softplus(D(G(z))) + softplus(-D(x)), G: softplus(-D(G(z))).
- R1 (Mescheder et al. 2018) on the real images, lazily (the StyleGAN2 paper, Sec. 4): on every
  ``r1_every``-th discriminator step the term (gamma / 2) E ||grad_x D(aug(x))||^2 times ``r1_every`` is added
  to that step's loss (the gradient taken with respect to the un-augmented reals, through the augmentation).
- ADA (:mod:`cxraug.families.ada`): every image the discriminator sees, real or fake, in either player's update,
  is augmented with probability p; p follows r_t = E[sign(D(aug(x_real)))] toward ``ada_target``. ``ada_p`` and
  ``ada_rt`` are in every step's logs (hence ``losses.csv``), and in the checkpoint.
- The generator EMA is the engine's (``ema_decay``); the noise inputs draw from the family's ``rng``.

DiffAugment (``diffaug``), when set as well, is applied after ADA to the same images.

Sampling draws z and the per-layer noise maps on the CPU from ``generator``; ``labels`` [n, K] are honoured when
the network is class-conditional (else real label rows are reported, as for the other noise generators); ``psi``
(default: the config's ``truncation``, 1 = none) truncates w toward its mean. The networks:
:mod:`cxraug.models.stylegan2`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cxraug.config import to_dict
from cxraug.data.cache import CachedDataset
from cxraug.errors import ConfigError
from cxraug.families.ada import AdaptiveAugment, parse_policy
from cxraug.families.base import Batch, Config, Family, Logs, Training, family_of, register
from cxraug.families.diffaug import DiffAugment
from cxraug.models.stylegan2 import StyleGAN2Config, build_discriminator, build_generator
from cxraug.seeding import seeded_init

# this family's fields, checked before anything is built: (test, what it must be)
RULES = {
    "w_dim": (lambda v: v >= 1, "an integer >= 1"),
    "map_layers": (lambda v: v >= 1, "an integer >= 1"),
    "mbstd_group": (lambda v: v >= 1, "an integer >= 1"),
    "r1_gamma": (lambda v: v >= 0, "a number >= 0 (0 = off)"),
    "r1_every": (lambda v: v >= 1, "an integer >= 1"),
    "ada_target": (lambda v: 0 <= v < 1, "within [0, 1) (0 = p fixed at ada_p)"),
    "ada_interval": (lambda v: v >= 1, "an integer >= 1"),
    "ada_kimg": (lambda v: v > 0, "a number > 0"),
    "ada_p": (lambda v: 0 <= v <= 1, "within [0, 1]"),
    "truncation": (lambda v: math.isfinite(v), "a finite number"),
}


def check_config(cfg: Any) -> None:
    """One line naming the first StyleGAN2-ADA field out of range (``--set key=...``)."""
    for key, (ok, what) in RULES.items():
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not ok(v):
            raise ConfigError(f"{key} must be {what}, got {v!r} (--set {key})")
    try:
        parse_policy(cfg.ada)
    except ValueError as e:
        raise ConfigError(f"{e} (--set ada)") from None
    if cfg.loss != "bce":  # recorded in the run's config, so it must be what trained it
        raise ConfigError(f"StyleGAN2-ADA trains with the non-saturating logistic loss (loss: bce), not "
                          f"{cfg.loss!r} (--set loss)")  # fmt: skip


class StyleGAN2Training(Training):
    """One mapping + synthesis generator G, one residual discriminator D; (z, noise maps[, labels]) in."""

    # The R1 and ADA schedules branch on host-side counters (R1 every r1_every steps, p adjusted every
    # ada_interval steps): one captured graph cannot replay both kinds of step.
    graphable = False

    def __init__(self, cfg: Any, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        check_config(cfg)
        self.cfg, self.n_labels, self.rng = cfg, n_labels, rng
        self.spec = family_of(cfg.family)
        self.conditional = bool(getattr(cfg, "class_cond", False)) and n_labels > 0
        conf = to_dict(cfg)
        with seeded_init(cfg.seed):  # the init stream; the caller's global RNG untouched
            self.G = self.spec.build(conf, n_labels)
            self.D = self.spec.build_critics(conf, n_labels)["D"]
        self.generators, self.critics = {"G": self.G}, {"D": self.D}
        self.ada = AdaptiveAugment(cfg.ada, cfg.ada_p, cfg.ada_target, cfg.ada_interval, cfg.ada_kimg, rng.device)
        self.diffaug = DiffAugment(cfg.diffaug) if cfg.diffaug else None
        self.d_steps = 0  # discriminator steps so far (lazy R1 schedule)

    def select_data(self, data: CachedDataset) -> tuple[CachedDataset, None]:
        return (data.only_class(self.cfg.cls) if self.cfg.cls else data), None

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ada(x, generator=self.rng)
        return self.diffaug(x, generator=self.rng) if self.diffaug else x

    def _fake(self, n: int, y: torch.Tensor | None, device: torch.device | str) -> torch.Tensor:
        z = torch.randn(n, self.cfg.z_dim, device=device, generator=self.rng)  # [n, z]
        return self.G(z, y, generator=self.rng)  # noise maps drawn inside, on rng

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        """Draw order on ``rng``: z, the noise maps, ADA(real), ADA(fake)."""
        x, y = batch
        y = y if self.conditional else None
        with torch.no_grad():
            fake = self._fake(x.size(0), y, x.device)
        r1_now = self.cfg.r1_gamma > 0 and self.d_steps % self.cfg.r1_every == 0
        real = x.detach().requires_grad_(r1_now)
        d_real = self.D(self._augment(real), y)  # [B]
        d_fake = self.D(self._augment(fake), y)
        loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        logs = {"d_loss": loss.detach(), "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
        if r1_now:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)  # [B, 1, S, S]
            r1 = grad.float().square().sum(dim=(1, 2, 3)).mean()
            loss = loss + (self.cfg.r1_gamma / 2) * r1 * self.cfg.r1_every
            logs["r1"] = r1.detach()
        self.ada.accumulate(d_real)
        self.d_steps += 1
        return loss, {**logs, **self.ada.logs()}

    def after_critic_step(self) -> None:
        self.ada.adjust(self.cfg.batch_size)

    def generator_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        x, y = batch
        y = y if self.conditional else None
        fake = self._fake(x.size(0), y, x.device)
        out = self.critics["D"](self._augment(fake), y)  # plain module: frozen, not all-reduced
        loss = F.softplus(-out).mean()
        return loss, {"g_loss": loss.detach()}

    def state(self) -> dict:
        return {"rng": self.rng.get_state(), "ada": self.ada.state(), "d_steps": self.d_steps}

    def load_state(self, st: dict) -> None:
        if "rng" in st:
            self.rng.set_state(st["rng"])
        if "ada" in st:
            self.ada.load_state(st["ada"])
        self.d_steps = int(st.get("d_steps", 0))


@register
class StyleGAN2ADA(Family):
    """A mapping + synthesis generator G and a residual discriminator D; z, noise maps (and labels) in."""

    name = "stylegan2"
    paper = "Karras et al. 2020, arXiv:1912.04958 (StyleGAN2) and arXiv:2006.06676 (ADA)"
    size_keys = ("width", "z_dim", "w_dim", "map_layers")
    section = StyleGAN2Config
    training = StyleGAN2Training

    def __init__(self, net: nn.Module, config: Config, class_names: list[str], real_labels: torch.Tensor):
        super().__init__(net, config, class_names, real_labels)
        opts = StyleGAN2Config.from_config(config)
        self.conditional = opts.class_cond  # per checkpoint, not per family name
        self.psi = opts.truncation

    @classmethod
    def conditional_for(cls, config: Config) -> bool:
        return StyleGAN2Config.from_config(config).class_cond  # class-conditional by configuration

    @classmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        return build_generator(config, n_labels)

    @classmethod
    def build_critics(cls, config: Config, n_labels: int) -> dict[str, nn.Module]:
        return {"D": build_discriminator(config, n_labels)}

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_config(cfg)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
        psi: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        z = torch.randn(n, net.z_dim, generator=generator)  # [n, z]
        y = self._real_rows(n, generator) if labels is None else labels.float()  # [n, K]
        noise = [torch.randn(s, generator=generator).to(self.device) for s in net.noise_shapes(n)]
        net.eval()
        out = net(z.to(self.device), y.to(self.device) if self.conditional else None, noise=noise,
                  psi=self.psi if psi is None else psi)  # fmt: skip
        return out.float().clamp(-1, 1).cpu(), y
