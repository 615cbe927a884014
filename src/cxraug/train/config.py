"""Training configuration and the named presets.

:class:`TrainConfig` is one flat dataclass: every key a run is configured and saved with (``--set w_dim=128``,
``w_dim: 128`` in a YAML config or a run's ``config.yaml``). The options of the StyleGAN2-ADA and DDPM families
take their defaults from the models layer's sections (:class:`cxraug.models.stylegan2.StyleGAN2Config`,
:class:`cxraug.models.ddpm.DDPMConfig`, the one place those defaults are written), which is also how those
networks read a config dict: ``StyleGAN2Config.from_config(config)``.

A user may also write a family's keys nested in its section, named in :data:`SECTIONS` (the one place):
``stylegan2: {w_dim: 128, r1_gamma: 0.5}`` or ``ddpm: {diffusion_steps: 500}`` in a YAML config or a preset
file, ``--set stylegan2.w_dim=128`` on the command line, ``stylegan2.w_dim=128`` in a study's ``gan:``
``overrides``. Each source (preset, ``--config`` file, the ``--set`` overrides) is flattened on its own before
the sources are merged (:func:`cxraug.config.flatten_sections`), so a nested key takes the flat key's place in
the order preset < config file < ``--set``; within one source, a key given both flat and in its section is
refused, as is a key its section does not have. What is built and saved stays flat: a run's ``config.yaml``
and every checkpoint's config read as before.

Presets are small YAML files shipped with the package, ``src/cxraug/train/presets/<name>.yaml``, one per preset
(after StudioGAN's ``configs/<data>/<model>.yaml``). Each starts with comment lines saying what it follows, then

- ``paper:`` the paper it reproduces (a citation) or, for the project's own, "project default; ..." and the
  sources it starts from;
- ``kind:`` ``paper`` — a paper's setup by name (``nguyen-wgan-gp-128``, ``hussain-wgan-96``, ...), faithful by
  default: architecture sizes, loss, optimiser, batch, no EMA unless the paper has one, length in epochs — or
  ``tuned``: the project's tuned defaults (``wgan-gp-64``, ``dcgan-64``, ...);
- optionally ``base:`` the name of another file of the folder whose keys are read first and overridden by this
  file's (one level of keys, no deep merge); a file whose name starts with ``_`` is such a base, not a preset;
- the config keys, flat as in ``--set`` or in a family's section (``stylegan2: {r1_gamma: 0.25}``; each file is
  flattened before it is merged with its base), and ``size``: the image size (without it, the number the name
  ends in).

:func:`preset` strips ``paper``, ``kind`` and ``base`` and returns the config dict; :data:`PRESETS` (and
:data:`PAPER_PRESETS`, :data:`TUNED_PRESETS`) map names to the files' config keys; :func:`list_presets` gives
(name, kind, paper) for ``cxraug train --list-presets``. The folder is read on first use, not at import.
``docs/presets.md`` sets each paper preset beside the paper's values and says why any differs.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, ClassVar, NamedTuple

from cxraug.config import flatten_sections, load_yaml
from cxraug.data.source import DataConfig
from cxraug.errors import ConfigError
from cxraug.families import FAMILIES, family_of
from cxraug.families.losses import DEFAULT_LOSS
from cxraug.models.common import ConfigSection
from cxraug.models.ddpm import DDPMConfig
from cxraug.models.stylegan2 import StyleGAN2Config

# The family sections' defaults (models layer), which TrainConfig's fields of those names take.
_STYLEGAN2, _DDPM = StyleGAN2Config(), DDPMConfig()

# The sections a user may write nested (``stylegan2: {w_dim: 128}``, ``--set stylegan2.w_dim=128``): section
# name -> the models layer's section, whose field names are TrainConfig's flat keys of the same names. The families
# say which section is theirs (Family.section).
SECTIONS: Mapping[str, type[ConfigSection]] = types.MappingProxyType(
    {name: fam.section for name, fam in FAMILIES.items() if fam.section is not None})


@dataclass
class TrainConfig:
    # read by cxraug.config.load_config / from_dict: each source's sections flattened onto these fields
    config_sections: ClassVar[Mapping[str, type[ConfigSection]]] = SECTIONS

    preset: str = "wgan-gp-64"
    family: str = "wgangp"  # dcgan | wgan | wgangp | cgan | cyclegan | stylegan2 | ddpm
    data: DataConfig = field(default_factory=DataConfig)
    cls: str | None = None  # train on this class only (e.g. COVID); None = all images
    domain_a: str | None = None  # CycleGAN source class (e.g. normal)
    domain_b: str | None = None  # CycleGAN target class (e.g. covid)
    z_dim: int = 100
    width: int = 64  # ngf/ndf
    n_blocks: int = 6  # CycleGAN residual blocks
    g_layout: dict[str, Any] = field(default_factory=dict)  # generator constructor options (paper layouts)
    d_layout: dict[str, Any] = field(default_factory=dict)  # critic constructor options (paper layouts)
    batch_size: int = 64
    steps: int = 2000  # generator updates
    epochs: int = 0  # > 0: length in passes over the training images; sets steps (resolve_steps)
    optimizer: str = "adam"  # adam | rmsprop
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    n_critic: int = 5
    loss: str = DEFAULT_LOSS  # bce | wgan-clip | wgan-gp | hinge | lsgan
    clip: float = 0.01
    gp_lambda: float = 10.0
    cycle_lambda: float = 10.0
    identity_lambda: float = 0.5  # times cycle_lambda; 0 disables the identity loss
    pool_size: int = 50
    ema_decay: float = 0.999  # 0 disables the generator EMA
    diffaug: str = ""  # e.g. "translation,cutout,brightness" for the limited-data regime
    # --- StyleGAN2-ADA (family stylegan2: models/stylegan2.py, families/ada.py, families/stylegan2.py; Karras et
    # al. 2020). What each field means, and its default: StyleGAN2Config (models/stylegan2.py). Also read by
    # it: z_dim, width, class_cond. ---
    w_dim: int = _STYLEGAN2.w_dim
    map_layers: int = _STYLEGAN2.map_layers
    mbstd_group: int = _STYLEGAN2.mbstd_group
    r1_gamma: float = _STYLEGAN2.r1_gamma
    r1_every: int = _STYLEGAN2.r1_every
    ada: str = _STYLEGAN2.ada
    ada_target: float = _STYLEGAN2.ada_target
    ada_interval: int = _STYLEGAN2.ada_interval
    ada_kimg: float = _STYLEGAN2.ada_kimg
    ada_p: float = _STYLEGAN2.ada_p
    truncation: float = _STYLEGAN2.truncation
    # --- diffusion (family ddpm, models/ddpm.py; Ho et al. 2020, DDIM sampling Song et al. 2021). What each
    # field means, and its default: DDPMConfig (models/ddpm.py). ---
    unet_mult: list[int] = field(default_factory=lambda: _DDPM.unet_mult.copy())
    unet_layers: int = _DDPM.unet_layers
    unet_attention: list[int] = field(default_factory=lambda: _DDPM.unet_attention.copy())
    dropout: float = _DDPM.dropout
    class_cond: bool = _DDPM.class_cond  # condition on the label vectors (the denoiser; StyleGAN2 reads it too)
    noise_schedule: str = _DDPM.noise_schedule
    diffusion_steps: int = _DDPM.diffusion_steps
    sample_steps: int = _DDPM.sample_steps
    sample_batch: int = _DDPM.sample_batch
    preview_steps: int = _DDPM.preview_steps
    seed: int = 0
    log_every: int = 10  # host syncs (loss .item()) only every log_every steps
    sample_every: int = 200
    ckpt_every: int = 200
    fid_every: int = 0  # evaluate FID every K steps (0 = off) and keep best.pt
    fid_n: int = 256
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16) | bf16 | fp16 | no
    channels_last: str = "auto"  # auto (on CUDA, and on CPU under bf16) | on | off
    compile: bool = False  # torch.compile the networks (opt-in)
    # on CUDA, each step captured in a CUDA graph where that is exact (train/graphs.py); else eager
    cuda_graphs: bool = True
    threads: int = 0  # CPU threads for torch (0 = torch's default)


# --------------------------------------------------------------------------- the presets folder
PRESET_KINDS = ("paper", "tuned")  # a paper's setup | the project's tuned default
_ABOUT = ("paper", "kind")  # what a preset file says about itself, beside its config keys


class PresetInfo(NamedTuple):
    """One preset as ``cxraug train --list-presets`` shows it."""

    name: str
    kind: str  # paper | tuned
    paper: str  # the paper it follows (a citation), or "project default; ..." and the sources it starts from


def _preset_files() -> dict[str, Traversable]:
    """Every ``presets/<name>.yaml`` of the package, by name (``_name``: a base file, no preset)."""
    folder = resources.files("cxraug.train") / "presets"
    return {f.name.removesuffix(".yaml"): f for f in folder.iterdir() if f.name.endswith(".yaml")}


def _read_preset(files: dict[str, Traversable], name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The file's keys, on top of those of the file its ``base`` names (read first, its paper and kind left out)."""
    if name not in files or name in chain:
        why = "no such file" if name not in files else "a loop"
        raise ConfigError(f"presets: {' -> '.join((*chain, name))}.yaml: {why}")
    data = load_yaml(files[name].read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"presets/{name}.yaml: expected a mapping of config keys")
    data = flatten_sections(data, SECTIONS, where=f"presets/{name}.yaml")  # each file flat, then merged
    base = data.pop("base", None)
    if base is None:
        return data
    inherited = {k: v for k, v in _read_preset(files, str(base), (*chain, name)).items() if k not in _ABOUT}
    return {**inherited, **data}


def _natural(name: str) -> list:
    """Sort key: ``cgan-64`` before ``cgan-128``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@functools.cache
def _registry() -> dict[str, tuple[PresetInfo, dict[str, Any]]]:
    """Every preset, read once from the package's files: paper presets first, then the tuned ones, each in
    natural name order."""
    files = _preset_files()
    found = []
    for name in (n for n in files if not n.startswith("_")):
        fields = _read_preset(files, name)
        info = PresetInfo(name, str(fields.pop("kind", "")), str(fields.pop("paper", "")))
        if info.kind not in PRESET_KINDS or not info.paper:
            raise ConfigError(f"presets/{name}.yaml: needs a paper (or project default) and a kind "
                              f"({' or '.join(PRESET_KINDS)})")  # fmt: skip
        found.append((info, fields))
    found.sort(key=lambda p: (PRESET_KINDS.index(p[0].kind), _natural(p[0].name)))
    return {info.name: (info, fields) for info, fields in found}


class _Presets(Mapping[str, dict]):
    """The presets (of one kind, or all) by name, as read-only config dicts: each lookup returns a fresh copy
    of the file's config keys (``size`` included where the file gives one). Nothing is read before first use."""

    def __init__(self, kind: str | None = None):
        self._kind = kind

    def _entries(self) -> dict[str, dict[str, Any]]:
        return {n: f for n, (info, f) in _registry().items() if self._kind in (None, info.kind)}

    def __getitem__(self, name: str) -> dict:
        return copy.deepcopy(self._entries()[name])

    def __contains__(self, name: object) -> bool:
        return name in self._entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def __repr__(self) -> str:
        return f"<presets{f' ({self._kind})' if self._kind else ''}: {', '.join(self)}>"


PAPER_PRESETS: Mapping[str, dict] = _Presets("paper")  # the papers' setups, faithful by default
TUNED_PRESETS: Mapping[str, dict] = _Presets("tuned")  # the project's tuned defaults
PRESETS: Mapping[str, dict] = _Presets()  # both: paper presets first


def list_presets() -> list[PresetInfo]:
    """(name, kind, paper) of every preset, paper presets first, each kind in natural name order."""
    return [info for info, _ in _registry().values()]


def preset(name: str) -> dict:
    """The preset as a config dict (``data.size`` from its ``size`` or else the name's suffix)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    fields = PRESETS[name]
    size = int(fields.pop("size", 0) or name.rsplit("-", 1)[1])
    return {"preset": name, **fields, "data": {"size": size}}


def steps_for_epochs(epochs: int, n_images: int, batch_size: int, *, processes: int = 1) -> int:
    """Generator steps in ``epochs`` passes over ``n_images``: one step per batch, the last batch of a pass
    partial (as a PyTorch DataLoader without drop_last), ``processes`` data-parallel processes sharing a pass."""
    if epochs < 0 or n_images < 1 or batch_size < 1 or processes < 1:
        raise ValueError(f"epochs={epochs}, n_images={n_images}, batch_size={batch_size}, processes={processes}")
    return epochs * math.ceil(n_images / (batch_size * processes))


def training_images(cfg: TrainConfig, counts: dict[str, int], total: int) -> int:
    """How many images one epoch passes over: the chosen class, the smaller CycleGAN domain (the larger is
    undersampled to it), or the whole collection. ``counts``: images per class."""
    if family_of(cfg.family).takes_source and cfg.domain_a and cfg.domain_b:
        return min(counts.get(cfg.domain_a, 0), counts.get(cfg.domain_b, 0))
    if cfg.cls:
        return counts.get(cfg.cls, 0)
    return total


def resolve_steps(cfg: TrainConfig, counts: dict[str, int], total: int, *, processes: int = 1) -> TrainConfig:
    """With ``cfg.epochs`` set, fix ``cfg.steps`` from the training-set size and batch (once, before training;
    the saved config keeps both). Without it, ``steps`` stands."""
    if cfg.epochs > 0:
        n = training_images(cfg, counts, total)
        if n > 0:
            cfg.steps = steps_for_epochs(cfg.epochs, n, cfg.batch_size, processes=processes)
    return cfg


def steps_over_epochs(overrides: list[str]) -> list[str]:
    """An explicit ``steps=N`` (``--steps``) beats a preset's epochs: add ``epochs=0`` unless epochs are set too."""
    keys = {o.split("=", 1)[0].strip() for o in overrides}
    return [*overrides, "epochs=0"] if "steps" in keys and "epochs" not in keys else list(overrides)
