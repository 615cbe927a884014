"""The one interface of a generator family, and its registry.

A family is one module of this package holding one :class:`Family` subclass, registered with ``@register``:

- what it is: ``name`` (the config's ``family``), ``paper`` (a citation), its capabilities (``conditional``,
  ``takes_source`` for a translating family, ``has_critic``), the networks it checkpoints (``names``; ``main`` is
  the one sampled and averaged by the EMA);
- what it builds, from the run's config (a ``TrainConfig`` as a dict, whose typed sections, e.g.
  :class:`cxraug.models.stylegan2.StyleGAN2Config`, hold the family's own defaults): :meth:`Family.build`, the
  sampled generator; :meth:`Family.build_critics`, the networks its critic optimiser trains;
- sampling: an instance wraps a trained generator (:func:`cxraug.families.artifact.load_generator` makes it from a
  checkpoint) and draws ``sample(n, labels=None, source=None, generator=None)``;
- training: ``training``, its :class:`Training` subclass (None: a family that is sampled only), which the engine
  builds per run and calls for the losses; :meth:`Family.check_config` refuses the family's own bad settings
  before any run folder exists.

:data:`FAMILIES` is the only list of families; a family defined outside ``src/`` (a test, a plug-in) registers
itself the same way. The networks themselves live in :mod:`cxraug.models`. docs/architecture.md: "How to add a
generator family".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cxraug.data.cache import CachedDataset
from cxraug.errors import CXRAugError
from cxraug.models.common import ConfigSection

Config = dict[str, Any]  # a run's config as a dict (TrainConfig through cxraug.config.to_dict)
Batch = tuple[torch.Tensor, torch.Tensor]  # (images [B,1,S,S] in [-1,1], label vectors [B,K]) or (a, b)
Logs = dict[str, torch.Tensor]


class Family(ABC):
    """A generator family; an instance is a trained generator ready to sample.

    ``sample`` returns images [n,1,S,S] in [-1,1] (float32, CPU) and their label vectors [n,K]. Random draws come
    from ``generator`` (a CPU ``torch.Generator``), so a seed gives the same images on any device up to float
    rounding.
    """

    name: ClassVar[str]
    paper: ClassVar[str] = ""  # the paper(s) it follows (``cxraug train --list-presets`` lists the families with it)
    main: ClassVar[str] = "G"  # the network that is sampled (and averaged by the EMA)
    names: ClassVar[tuple[str, ...]] = ("G",)  # every generator network the family trains and checkpoints
    conditional: ClassVar[bool] = False  # sample() honours `labels`
    takes_source: ClassVar[bool] = False  # sample() translates `source` images instead of drawing noise
    has_critic: ClassVar[bool] = True  # build_critics() gives networks for a critic optimiser (checked per run)
    #: its own options as a typed section (defaults in one place; ``stylegan2: {w_dim: 128}`` in a config), or None
    section: ClassVar[type[ConfigSection] | None] = None
    #: the config keys that set its networks' size (named when they would not fit the device's memory)
    size_keys: ClassVar[tuple[str, ...]] = ("width", "z_dim", "g_layout", "d_layout")
    training: ClassVar[type[Training] | None] = None  # how it is trained; None: sampled only

    artifact: Any = None  # the GeneratorArtifact it was loaded from (set by artifact.load_generator)

    def __init__(self, net: nn.Module, config: Config, class_names: list[str], real_labels: torch.Tensor):
        self.net, self.config, self.class_names = net, config, list(class_names)
        self.real_labels = torch.nan_to_num(real_labels.float())  # [N, K]

    # --- what it builds --------------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def build(cls, config: Config, n_labels: int) -> nn.Module:
        """A freshly initialised generator network (the sampled one, ``main``) for this config."""

    @classmethod
    def build_critics(cls, config: Config, n_labels: int) -> dict[str, nn.Module]:
        """The networks its critic optimiser trains, by checkpoint name ({} for a family without critic)."""
        return {}

    @classmethod
    def conditional_for(cls, config: Config) -> bool:
        """Whether a generator this config trains will honour `labels` (known before it exists)."""
        return cls.conditional

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Refuse the family's own bad settings (a ``TrainConfig``) with one line; nothing to check by default."""

    # --- sampling --------------------------------------------------------------------------------------------
    @abstractmethod
    def sample(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def preview(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        source: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What training previews (the sample grids) draw: ``sample`` unless a family's sampling is slow enough
        to bound (a diffusion model previews with fewer sampler steps)."""
        return self.sample(n, labels=labels, source=source, generator=generator)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def size(self) -> int:
        return int(self.config["data"]["size"])

    @property
    def target_class(self) -> str | None:
        """The class its images belong to (None: any, as given by the label vectors)."""
        return self.config.get("cls")

    @property
    def shared_labels(self) -> list[str]:
        """The labels all its images carry: ``--class``, or those every training row is positive for (a study
        trains its generator on the minority's images alone); [] for a generator of several classes."""
        if self.target_class:
            return [self.target_class]
        rows = self.real_labels
        if len(rows) == 0:
            return []
        return [c for c, p in zip(self.class_names, (rows > 0.5).all(0).tolist()) if p]

    @property
    def preset(self) -> str:
        return str(self.config.get("preset", self.name))

    def _real_rows(self, n: int, generator: torch.Generator | None) -> torch.Tensor:  # [n, K]
        """Label vectors for ``n`` images: drawn from the training rows, which for an unconditional generator
        trained on one class (``--class``) all carry it. One trained on several classes at once has no say in
        its images' class: they are unlabelled (zeros), not given the class of a random training row."""
        if len(self.real_labels) == 0 or (not self.conditional and not self.shared_labels):
            return torch.zeros(n, len(self.class_names))
        return self.real_labels[torch.randint(len(self.real_labels), (n,), generator=generator)]


class Training(ABC):
    """How a family is trained: what the engine calls.

    Built as ``cls(cfg, n_labels, rng, pool_seed)`` (``cfg``: the run's ``TrainConfig``), its networks inside
    ``cxraug.seeding.seeded_init(cfg.seed)`` (the seed's own initialisation stream: two runs of one seed start
    from the same weights, and the caller's global RNG is untouched). ``rng`` is its own generator on the training
    device (every draw of noise, augmentation or penalty comes from it, so :meth:`state` makes a resume exact), and
    ``pool_seed`` seeds any host-side pool. :attr:`graphable`: its losses can be captured in one CUDA graph (static
    shapes, no host-side draws or syncs).
    """

    graphable: ClassVar[bool] = False

    spec: type[Family]  # the family it trains
    generators: dict[str, nn.Module]  # every network the generator optimiser trains, by checkpoint name
    critics: dict[str, nn.Module]  # every network the critic optimiser trains ({} for none)
    conditional: bool = False  # the losses read the labels
    rng: torch.Generator

    @property
    def takes_source(self) -> bool:
        return self.spec.takes_source

    @property
    def has_critic(self) -> bool:
        return bool(self.critics)

    @abstractmethod
    def select_data(self, data: CachedDataset) -> tuple[CachedDataset, CachedDataset | None]:
        """The images it trains on: (one set, None), or the (source, target) domains of a translating family."""

    @abstractmethod
    def generator_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]: ...

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, Logs]:
        """A family with ``critics`` overrides this; the engine never calls it on one without (``has_critic``)."""
        raise CXRAugError(f"the {self.spec.name} family has no critic to train")

    def after_critic_step(self) -> None:
        """After each critic optimiser step (e.g. weight clipping); nothing by default."""

    def state(self) -> dict:
        """Everything random it holds, for an exact resume (by default its ``rng``)."""
        return {"rng": self.rng.get_state()}

    def load_state(self, st: dict) -> None:
        if "rng" in st:
            self.rng.set_state(st["rng"])


#: name -> family; filled by :func:`register`
FAMILIES: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: add a :class:`Family` subclass to :data:`FAMILIES` under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise TypeError(f"{cls!r} is not a Family")
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} has no name")
    if cls.training is not None and not (isinstance(cls.training, type) and issubclass(cls.training, Training)):
        raise TypeError(f"{cls.__name__}.training is {cls.training!r}, not a Training subclass")
    if cls.main not in cls.names:
        raise TypeError(f"{cls.__name__}.main {cls.main!r} is not one of its networks {cls.names}")
    FAMILIES[cls.name] = cls
    return cls


def family_of(name: str) -> type[Family]:
    """The registered family of that name (one line naming the known ones if there is none)."""
    if name not in FAMILIES:
        raise CXRAugError(f"unknown generator family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def make_training(cfg: Any, n_labels: int, *, rng: torch.Generator | None = None,
                  pool_seed: int | None = None) -> Training:  # fmt: skip
    """How ``cfg.family`` trains, built for this run (``cfg``: a ``TrainConfig``); ``rng`` draws on its device
    (default: CPU, the ``noise`` stream of ``cfg.seed``, as the engine's process 0)."""
    from cxraug.seeding import stream_seed

    family = family_of(cfg.family)
    if family.training is None:
        trainable = ", ".join(sorted(n for n, f in FAMILIES.items() if f.training is not None))
        raise CXRAugError(f"generator family {cfg.family!r} can be sampled but not trained here; trainable: {trainable}")
    rng = rng if rng is not None else torch.Generator().manual_seed(stream_seed(cfg.seed, "noise"))
    pool_seed = stream_seed(cfg.seed, "pool") if pool_seed is None else pool_seed
    training = family.training(cfg, n_labels, rng, pool_seed)
    # what the checkpoint records and the engine relies on: the family's word and what its training built agree
    if set(training.generators) != set(family.names) or bool(training.critics) != family.has_critic:
        raise TypeError(f"{family.__name__}: its training built generators {sorted(training.generators)} and critics "
                        f"{sorted(training.critics)}; the family declares names {list(family.names)} and "
                        f"has_critic={family.has_critic}")  # fmt: skip
    return training
