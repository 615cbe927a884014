"""The training side of a generator family: one typed interface and its registry.

A family is two classes with one name: its sampler (a :class:`cxraug.models.artifact.GeneratorFamily`, registered
with ``@cxraug.models.artifact.register``: builds the sampled network from a config, samples, says whether it is
conditional or translates source images) and its trainer (a :class:`TrainingFamily` here, registered with
``@trains(name)``): builds every network it trains, computes the losses, holds its random state. The engine calls
nothing else. Each registry is the only list of its families; a family defined outside ``src/`` (a test, a
plug-in) registers itself the same way. docs/architecture.md: "How to add a generator family".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from cxraug.data.cache import CachedDataset
from cxraug.errors import CXRAugError
from cxraug.models.artifact import GeneratorFamily

Batch = tuple[torch.Tensor, torch.Tensor]  # (images [B,1,S,S] in [-1,1], label vectors [B,K]) or (a, b)
Logs = dict[str, torch.Tensor]


class TrainingFamily(ABC):
    """What the engine needs of a family.

    Built as ``cls(cfg, n_labels, rng, pool_seed)``, its networks inside ``cxraug.train.seeding.seeded_init(cfg.seed)``
    (the seed's own initialisation stream: two runs of one seed start from the same weights, and the caller's global
    RNG is untouched). ``rng`` is the family's own generator on the training device
    (every draw of noise, augmentation or penalty comes from it, so :meth:`state` makes a resume exact), and
    ``pool_seed`` seeds any host-side pool. Capabilities: :attr:`conditional` (the losses read the labels),
    :attr:`takes_source` (a translating family: batches are (a, b)), :attr:`has_critic` (an empty ``critics``:
    no critic update, no critic optimiser), :attr:`graphable` (its losses can be captured in one CUDA graph:
    static shapes, no host-side draws or syncs).
    """

    name: ClassVar[str] = ""  # set by @trains
    graphable: ClassVar[bool] = False
    #: checks the family's own config fields before any run folder exists (``train.checks``); None: nothing to check
    check_config: ClassVar[Callable[[Any], None] | None] = None

    spec: type[GeneratorFamily]  # the sampling side of the same family
    generators: dict[str, nn.Module]  # every network the generator optimiser trains, by checkpoint name
    critics: dict[str, nn.Module]  # every network the critic optimiser trains ({} for none)
    conditional: bool = False

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
        raise CXRAugError(f"the {self.name or type(self).__name__} family has no critic to train")

    def after_critic_step(self) -> None:
        """After each critic optimiser step (e.g. weight clipping); nothing by default."""

    def state(self) -> dict:
        """Everything random it holds, for an exact resume (by default its ``rng``)."""
        return {"rng": self.rng.get_state()}

    def load_state(self, st: dict) -> None:
        if "rng" in st:
            self.rng.set_state(st["rng"])


#: name -> training family; filled by :func:`trains`
TRAINING: dict[str, type[TrainingFamily]] = {}


def trains(*names: str) -> Callable[[type[TrainingFamily]], type[TrainingFamily]]:
    """Class decorator: ``cls`` trains the families ``names`` (one class may train several, e.g. the noise GANs)."""

    def register(cls: type[TrainingFamily]) -> type[TrainingFamily]:
        if not (isinstance(cls, type) and issubclass(cls, TrainingFamily)):
            raise TypeError(f"{cls!r} is not a TrainingFamily")
        for n in names:
            TRAINING[n] = cls
        cls.name = cls.name or names[0]
        return cls

    return register
