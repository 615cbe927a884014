"""The generator artifact: what a trained generator is, a typed checkpoint that needs no trainer to read.

A :class:`GeneratorArtifact` holds the family's name, the training config (a plain dict), the generator weights
(live and EMA), the perceptual hashes of every training image and the duplicate detector's features of each
(:mod:`cxraug.data.dedupe`: ORB keypoints and descriptors, no pixels), so that a study can prove the generator
never saw one of its test images, not even cropped, padded or rescaled, the class names and real label vectors,
the step, and a format version. The trainer's ``last.pt`` is this artifact plus the training state (critics,
optimisers, RNG streams); :meth:`GeneratorArtifact.load` reads either. The earlier ``cxraug-gan/1`` trainer
checkpoints are read here and nowhere else: :func:`current_format` turns one into today's layout, for the artifact
and for a resume alike. Files are written atomically and read with ``weights_only=True``.

:func:`load_generator` gives the :class:`cxraug.families.base.Family` instance of a checkpoint, ready to sample:
synthesis, metrics and the study sample through it without importing the trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxraug.errors import CheckpointError, show_path
from cxraug.families.base import Family, family_of
from cxraug.io import load_checkpoint, save_checkpoint
from cxraug.models.common import pick_device

FORMAT = "cxraug-gan/2"
LEGACY_FORMAT = "cxraug-gan/1"  # the trainer's checkpoint before the artifact existed: read, never written


StateDict = dict[str, torch.Tensor]


@dataclass
class GeneratorArtifact:
    family: str  # a key of cxraug.families.FAMILIES
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
        st = current_format(st, source)
        fmt = st.get("format") if isinstance(st, dict) else None
        if fmt == FORMAT:
            return cls(family=st["family"], config=st["config"], weights=st["weights"], ema=st.get("ema"),
                       train_phash=st["train_phash"], train_signatures=st.get("train_signatures"),
                       class_names=list(st["class_names"]), real_labels=st["real_labels"],
                       step=int(st.get("step", 0)))  # fmt: skip
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


def current_format(st: Any, source: str | os.PathLike = "checkpoint") -> Any:
    """A checkpoint dict in today's layout: a legacy ``cxraug-gan/1`` trainer dict (``nets`` = generators and
    critics together, ``ema`` = a ``torch.optim.swa_utils.AveragedModel`` state, one ``rng`` entry) converted to
    ``weights`` / ``critics`` / ``ema`` + ``ema_n_averaged`` / ``per_rank``; anything else returned as it is. A
    legacy dict missing a part is a :class:`CheckpointError` naming ``source``."""
    if not (isinstance(st, dict) and st.get("format") == LEGACY_FORMAT):
        return st
    try:
        return _from_legacy(st)
    except (KeyError, TypeError, AttributeError) as e:
        why = f"no {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{show_path(source)} is not a usable cxraug GAN checkpoint ({LEGACY_FORMAT}: "
                              f"{why})") from None  # fmt: skip


def _from_legacy(st: dict) -> dict:
    family = family_of(st["config"]["family"])
    nets, ema = st["nets"], st.get("ema")
    new = {k: v for k, v in st.items() if k not in ("nets", "ema", "rng", "family")}
    new["format"], new["family"] = FORMAT, family.name
    new["weights"] = {k: nets[k] for k in family.names}
    new["critics"] = {k: v for k, v in nets.items() if k not in family.names}
    new["ema"] = None if ema is None else {family.main: {k.removeprefix("module."): v for k, v in ema.items()
                                                         if k.startswith("module.")}}  # fmt: skip
    new["ema_n_averaged"] = None if ema is None else ema.get("n_averaged")
    new.setdefault("train_phash", torch.zeros(0, 8, dtype=torch.uint8))
    if isinstance(st.get("rng"), dict) and "sampler" in st["rng"]:  # (a resume needs it; sampling does not)
        new["per_rank"] = [{"sampler": st["rng"]["sampler"], "family": st.get("family") or {}}]  # its family state
    return new


def load_generator(
    path: str | os.PathLike | GeneratorArtifact, device: str | torch.device = "cpu", use_ema: bool = True
) -> Family:
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


def _check_buildable(fam: type[Family], art: GeneratorArtifact, where: str, device: torch.device) -> None:
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
