"""The generator artifact: what a trained GAN is, owned by the models layer, not by the trainer.

A :class:`GeneratorArtifact` is the typed form of a checkpoint: the GAN family, the training config
(a plain dict), the generator weights (live and EMA), the perceptual hashes of every training image and
the duplicate detector's features of each (:mod:`cxraug.data.dedupe`: ORB keypoints and descriptors, no
pixels), so that a study can prove the generator never saw one of its test images, not even cropped,
padded or rescaled, the class names and real label
vectors, the step, and a format version. The trainer's ``last.pt`` is this artifact plus the
training state (critics, optimisers, RNG streams); :meth:`GeneratorArtifact.load` reads either, and
the earlier ``cxraug-gan/1`` checkpoints too. Files are written atomically and read with
``weights_only=True``.

Each GAN family is a :class:`GeneratorFamily` subclass registered by name: it builds its generator
network from a config and knows how to ``sample(n, labels=None, source=None, generator=None)``.
Noise generators (DCGAN, WGAN, WGAN-GP) are defined here, the conditional GAN and the translation
generator beside their networks. :func:`load_generator` gives the family object for a checkpoint;
synthesis, metrics and the study sample through it without importing the trainer.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cxraug.errors import CheckpointError, CXRAugError, show_path
from cxraug.io import load_checkpoint, save_checkpoint
from cxraug.models.dcgan import DCGANGenerator
from cxraug.models.wgan import HussainGenerator
from cxraug.models.wgangp import WGANGPGenerator

FORMAT = "cxraug-gan/2"
LEGACY_FORMAT = "cxraug-gan/1"  # the trainer's checkpoint before the artifact existed: read, never written


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU; anything else is passed to ``torch.device``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


StateDict = dict[str, torch.Tensor]


@dataclass
class GeneratorArtifact:
    family: str  # a key of GENERATORS
    config: dict[str, Any]  # the training config (TrainConfig as a dict)
    weights: dict[str, StateDict]  # live generator network(s) by name
    ema: dict[str, StateDict] | None = None  # EMA weights of the sampled network, or None
    train_phash: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 8, dtype=torch.uint8))  # [N,8]
    # the duplicate detector's features of the training images (Signatures.to_state as tensors); None: older files
    train_signatures: dict[str, torch.Tensor] | None = None
    class_names: list[str] = field(default_factory=list)
    real_labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # [N,K] training labels
    step: int = 0
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "family": self.family, "config": self.config, "step": self.step,
                "class_names": list(self.class_names), "real_labels": self.real_labels,
                "train_phash": self.train_phash, "train_signatures": self.train_signatures,
                "weights": self.weights, "ema": self.ema}  # fmt: skip

    @classmethod
    def from_dict(cls, st: dict[str, Any], source: str | os.PathLike = "checkpoint") -> GeneratorArtifact:
        """The artifact of a loaded checkpoint dict, its fields checked (a missing or mistyped one is a
        :class:`CheckpointError` naming ``source``, not a KeyError or TypeError deep in the loading code)."""
        try:
            art = cls._from_dict(st, source)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            why = f"no {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{show_path(source)} is not a usable cxraug GAN checkpoint ({why})") from None
        art.validate(source)
        return art

    def validate(self, source: str | os.PathLike = "checkpoint") -> None:
        """Types of every field: weights are name -> {parameter name: tensor} mappings, labels and hashes tensors."""
        where = show_path(source)

        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{where} is not a usable cxraug GAN checkpoint ({what})")

        if not isinstance(self.family, str):
            raise bad(f"family is {type(self.family).__name__}, not a name")
        family_of(self.family)  # a known family
        if not isinstance(self.config, dict) or not isinstance(self.config.get("data"), dict):
            raise bad("its config is not a mapping with a data section")
        for what, nets in (("weights", self.weights), ("ema", self.ema)):
            if nets is None and what == "ema":
                continue
            if not isinstance(nets, dict):
                raise bad(f"{what} is a {type(nets).__name__}, not a mapping of networks")
            for name, sd in nets.items():
                if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in sd.items()):  # fmt: skip
                    raise bad(f"{what}[{name!r}] is not a mapping of parameter names to tensors")
        if not isinstance(self.real_labels, torch.Tensor) or not isinstance(self.train_phash, torch.Tensor):
            raise bad("real_labels / train_phash are not tensors")
        sig = self.train_signatures
        if sig is not None and not (isinstance(sig, dict) and all(isinstance(v, torch.Tensor) for v in sig.values())):
            raise bad("train_signatures is not a mapping of tensors")
        if not all(isinstance(c, str) for c in self.class_names):
            raise bad("class_names are not names")

    @classmethod
    def _from_dict(cls, st: dict[str, Any], source: str | os.PathLike) -> GeneratorArtifact:
        fmt = st.get("format") if isinstance(st, dict) else None
        if fmt == FORMAT:
            return cls(family=st["family"], config=st["config"], weights=st["weights"], ema=st.get("ema"),
                       train_phash=st["train_phash"], train_signatures=st.get("train_signatures"),
                       class_names=list(st["class_names"]), real_labels=st["real_labels"],
                       step=int(st.get("step", 0)))  # fmt: skip
        if fmt == LEGACY_FORMAT:  # flat trainer dict: nets = generators + critics, ema = AveragedModel state
            family = st["config"]["family"]
            names = family_of(family).names
            ema = None
            if st.get("ema") is not None:
                ema = {family_of(family).main: {k.removeprefix("module."): v for k, v in st["ema"].items()
                                                if k.startswith("module.")}}  # fmt: skip
            return cls(family=family, config=st["config"], weights={k: st["nets"][k] for k in names}, ema=ema,
                       train_phash=st.get("train_phash", torch.zeros(0, 8, dtype=torch.uint8)),
                       class_names=list(st["class_names"]), real_labels=st["real_labels"], step=int(st["step"]))  # fmt: skip
        raise CheckpointError(f"{show_path(source)} is not a cxraug GAN checkpoint")

    def save(self, dest: str | os.PathLike) -> Path:
        """Write atomically (temp file, fsync, rename)."""
        return save_checkpoint(self.to_dict(), dest)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneratorArtifact:
        """Read a generator artifact or a trainer checkpoint (``weights_only=True``)."""
        return cls.from_dict(load_checkpoint(path), path)

    @property
    def fingerprints(self) -> np.ndarray:
        """pHashes of the training images, packed [N,8] uint8 (see :func:`cxraug.data.stats.fingerprints`)."""
        return self.train_phash.numpy()

    def signatures(self, source: str | os.PathLike = "checkpoint"):
        """The duplicate detector's features of the training images (:class:`cxraug.data.dedupe.Signatures`,
        features only), or None for a checkpoint written before they were recorded."""
        from cxraug.data.dedupe import Signatures

        if self.train_signatures is None:
            return None
        try:
            return Signatures.from_state({k: v.numpy() for k, v in self.train_signatures.items()})
        except ValueError as e:
            raise CheckpointError(f"{show_path(source)} is not a usable cxraug GAN checkpoint ({e})") from None


class GeneratorFamily(ABC):
    """A trained generator ready to sample: one subclass per GAN family.

    ``sample`` returns images [n,1,S,S] in [-1,1] (float32, CPU) and their label vectors [n,K].
    Random draws come from ``generator`` (a CPU ``torch.Generator``), so a seed gives the same images on
    any device up to float rounding.
    """

    name: ClassVar[str]
    main: ClassVar[str] = "G"  # the network that is sampled (and averaged by the EMA)
    names: ClassVar[tuple[str, ...]] = ("G",)  # every generator network the family trains
    conditional: ClassVar[bool] = False  # sample() honours `labels`
    takes_source: ClassVar[bool] = False  # sample() translates `source` images instead of drawing noise

    def __init__(self, net: nn.Module, config: dict[str, Any], class_names: list[str], real_labels: torch.Tensor):
        self.net, self.config, self.class_names = net, config, list(class_names)
        self.real_labels = torch.nan_to_num(real_labels.float())  # [N, K]

    @classmethod
    def conditional_for(cls, config: dict[str, Any]) -> bool:
        """Whether a generator this config trains will honour `labels` (known before it exists)."""
        return cls.conditional

    @classmethod
    @abstractmethod
    def build(cls, config: dict[str, Any], n_labels: int) -> nn.Module:
        """A freshly initialised generator network for this config."""

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


GENERATORS: dict[str, type[GeneratorFamily]] = {}


def register(cls: type[GeneratorFamily]) -> type[GeneratorFamily]:
    GENERATORS[cls.name] = cls
    return cls


def family_of(name: str) -> type[GeneratorFamily]:
    if name not in GENERATORS:
        raise CXRAugError(f"unknown GAN family {name!r}; known: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name]


class NoiseGenerator(GeneratorFamily):
    """z ~ N(0, I) -> image. Label vectors are drawn from the real ones (for the manifest) unless given."""

    networks: ClassVar[dict[str, Callable[[dict[str, Any]], nn.Module]]] = {}

    @classmethod
    def build(cls, config: dict[str, Any], n_labels: int) -> nn.Module:
        return cls.networks[cls.name](config)

    @torch.no_grad()
    def sample(self, n, labels=None, source=None, generator=None):
        z = torch.randn(n, int(self.config["z_dim"]), generator=generator)  # [n, z]
        y = self._real_rows(n, generator) if labels is None else labels.float()  # [n, K]
        self.net.eval()
        return self.net(z.to(self.device), y.to(self.device)).float().cpu(), y


NoiseGenerator.networks = {
    "dcgan": lambda c: DCGANGenerator(c["z_dim"], c["data"]["size"], c["width"], **(c.get("g_layout") or {})),
    "wgan": lambda c: HussainGenerator(c["z_dim"], c["data"]["size"]),
    "wgangp": lambda c: WGANGPGenerator(c["z_dim"], c["data"]["size"], c["width"], **(c.get("g_layout") or {})),
}
for _name in NoiseGenerator.networks:
    register(type(f"{_name.upper()}Family", (NoiseGenerator,), {"name": _name, "__module__": __name__}))


def load_generator(
    path: str | os.PathLike | GeneratorArtifact, device: str | torch.device = "cpu", use_ema: bool = True
) -> GeneratorFamily:
    """The family object of a checkpoint, its network in eval mode on ``device`` (EMA weights when present)."""
    art = path if isinstance(path, GeneratorArtifact) else GeneratorArtifact.load(path)
    where = show_path(path) if not isinstance(path, GeneratorArtifact) else "the artifact"
    fam = family_of(art.family)
    dev = pick_device(device) if isinstance(device, str) else device
    _check_buildable(fam, art, where, dev)
    net = fam.build(art.config, len(art.class_names))
    nets = art.ema if use_ema and art.ema else art.weights
    if fam.main not in nets:
        raise CheckpointError(f"{where}: no {fam.main!r} network among its weights ({', '.join(map(str, nets))})")
    try:
        net.load_state_dict(nets[fam.main])
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        raise CheckpointError(f"{where}: weights do not fit its {art.family} config ({msg})") from e
    g = fam(net.to(dev).eval(), art.config, art.class_names, art.real_labels)
    g.artifact = art
    return g


def _check_buildable(fam: type[GeneratorFamily], art: GeneratorArtifact, where: str, device: torch.device) -> None:
    """Build the checkpoint's generator on the meta device first (nothing allocated): a config lacking a field
    (``z_dim``), holding a mistyped one, or asking for more memory than ``device`` has is one line naming the file
    (a KeyError, a TypeError and the allocator's "can't allocate 512000000000 bytes" traceback before)."""
    from cxraug.models.common import gb, memory_bytes, tensor_bytes

    try:
        with torch.device("meta"):
            net = fam.build(art.config, len(art.class_names))
    except KeyError as e:
        raise CheckpointError(f"{where}: its config has no {e} for its {art.family} generator") from None
    except (TypeError, ValueError, RuntimeError, OverflowError, AttributeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{where}: its config does not build a {art.family} generator ({msg})") from None
    need, have = 2 * tensor_bytes(net), memory_bytes(device)  # the network plus the state dict loaded into it
    if have and need > have:
        raise CheckpointError(f"{where}: its {art.family} generator (width {art.config.get('width')!r}, z_dim "
                              f"{art.config.get('z_dim')!r}) needs about {gb(need)}, more than the {gb(have)} of "
                              f"memory on {device}")  # fmt: skip
