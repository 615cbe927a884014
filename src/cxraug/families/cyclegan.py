"""CycleGAN (Zhu et al. 2017) for unpaired translation, as Zunair & Hamza translate normal CXRs to COVID-19:
G_AB, G_BA, D_A, D_B (:mod:`cxraug.models.cyclegan`); LSGAN + cycle + identity losses, image pools.

Sampling translates each given source (domain A) image exactly once, as Zunair & Hamza translate every
majority-class training image to the minority class; the images are labelled domain B.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cxraug.config import to_dict
from cxraug.data.cache import CachedDataset
from cxraug.data.preprocess import u8_to_tensor
from cxraug.errors import CXRAugError
from cxraug.families.base import Batch, Config, Family, Logs, Training, family_of, register
from cxraug.families.losses import cycle_loss
from cxraug.families.noise import make_loss
from cxraug.models.cyclegan import ImagePool, PatchDiscriminator, ResnetGenerator
from cxraug.seeding import seeded_init


class CycleGANTraining(Training):
    """Both generators and both critics; the critics see fakes drawn from the image pools (Shrivastava et al.)."""

    graphable = False  # the image pools draw on the host and branch in Python

    def __init__(self, cfg: Any, n_labels: int, rng: torch.Generator, pool_seed: int = 0):
        self.cfg, self.rng = cfg, rng
        self.spec = family_of(cfg.family)
        self.loss = make_loss(cfg)
        config = to_dict(cfg)
        with seeded_init(cfg.seed):
            self.G_AB, self.G_BA = self.spec.build(config, 0), self.spec.build(config, 0)
            critics = self.spec.build_critics(config, 0)
        self.D_A, self.D_B = critics["D_A"], critics["D_B"]
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

    def generator_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
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

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        a, b = batch
        if self._fakes is None:  # first step: make fakes without a generator update
            with torch.no_grad():
                self._fakes = (self.G_BA(b), self.G_AB(a))
        fake_a, fake_b = self.pool_a.query(self._fakes[0]), self.pool_b.query(self._fakes[1])
        loss = self.loss.critic(self.D_A(a), self.D_A(fake_a)) + self.loss.critic(self.D_B(b), self.D_B(fake_b))
        return loss, {"d_loss": loss.detach()}

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


@register
class CycleGAN(Family):
    """G_AB translates each given source (domain A) image once; labels = domain B."""

    name = "cyclegan"
    paper = "Zhu et al. 2017, arXiv:1703.10593; as Zunair & Hamza (normal -> COVID-19)"
    main = "G_AB"
    names = ("G_AB", "G_BA")
    takes_source = True
    size_keys = ("width", "n_blocks")
    training = CycleGANTraining

    @classmethod
    def build(cls, config: Config, n_labels: int = 0) -> nn.Module:
        return ResnetGenerator(1, config["width"], config["n_blocks"])

    @classmethod
    def build_critics(cls, config: Config, n_labels: int = 0) -> dict[str, nn.Module]:
        return {"D_A": PatchDiscriminator(1, config["width"]), "D_B": PatchDiscriminator(1, config["width"])}

    @property
    def target_class(self) -> str | None:
        return self.config.get("domain_b")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Translate ``source[:n]`` (uint8 [N,S,S] or float [N,1,S,S] in [-1,1]); fewer if it has fewer."""
        if source is None or len(source) == 0:
            a = self.config.get("domain_a") or "domain A"
            raise CXRAugError(
                f"a {self.preset} generator translates images: give the {a} images to translate (--source DIR)"
            )
        x = source[:n]
        if isinstance(x, np.ndarray):
            x = u8_to_tensor(x)  # uint8 [n,S,S] -> [n,1,S,S] in [-1,1]
        y = torch.zeros(len(x), len(self.class_names))  # [n, K]: one-hot domain B
        if self.target_class in self.class_names:
            y[:, self.class_names.index(self.target_class)] = 1
        self.net.eval()
        return self.net(x.to(self.device)).float().cpu(), y
