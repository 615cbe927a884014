"""Up-front checks of a training config, its data and a checkpoint to resume: one clear line per bad value,
before any work (a negative ``steps`` used to exit 0 naming a checkpoint that was never written; a batch of
100,000 on 6 images allocated 17 GB; an empty ``--class`` died inside ``torch.randint``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from cxraug.data.cache import CachedDataset
from cxraug.errors import CheckpointError, ConfigError, show_path
from cxraug.families.losses import LOSSES as LOSS_CLASSES
from cxraug.io import check_device

log = logging.getLogger("cxraug")

OPTIMIZERS = ("adam", "rmsprop")
LOSSES = tuple(LOSS_CLASSES)
AMP = ("auto", "bf16", "fp16", "no")
CHANNELS_LAST = ("auto", "on", "off")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(lo: int):
    return lambda v: _num(v) and v >= lo


RULES: dict[str, tuple[Any, str]] = {
    "steps": (_int_at_least(1), "an integer >= 1"),
    "epochs": (_int_at_least(0), "an integer >= 0 (0 = use steps)"),
    "batch_size": (_int_at_least(1), "an integer >= 1"),
    "lr_g": (lambda v: _num(v) and v > 0, "a number > 0"),
    "lr_d": (lambda v: _num(v) and v > 0, "a number > 0"),
    "beta1": (lambda v: _num(v) and 0 <= v < 1, "within [0, 1)"),
    "beta2": (lambda v: _num(v) and 0 <= v < 1, "within [0, 1)"),
    "n_critic": (_int_at_least(1), "an integer >= 1"),
    "z_dim": (_int_at_least(1), "an integer >= 1"),
    "width": (_int_at_least(1), "an integer >= 1"),
    "n_blocks": (_int_at_least(1), "an integer >= 1"),
    "clip": (lambda v: _num(v) and v > 0, "a number > 0"),
    "gp_lambda": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "cycle_lambda": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "identity_lambda": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "pool_size": (_int_at_least(0), "an integer >= 0"),
    "ema_decay": (lambda v: _num(v) and 0 <= v < 1, "within [0, 1)"),
    "seed": (lambda v: _num(v) and 0 <= v < 2**32, "an integer within 0..2^32-1"),
    "log_every": (_int_at_least(1), "an integer >= 1"),
    "sample_every": (_int_at_least(1), "an integer >= 1"),
    "ckpt_every": (_int_at_least(1), "an integer >= 1"),
    "fid_every": (_int_at_least(0), "an integer >= 0 (0 = off)"),
    "fid_n": (_int_at_least(2), "an integer >= 2"),
    "threads": (_int_at_least(0), "an integer >= 0 (0 = torch's default)"),
    "optimizer": (lambda v: v in OPTIMIZERS, " | ".join(OPTIMIZERS)),
    "loss": (lambda v: v in LOSSES, " | ".join(LOSSES)),
    "amp": (lambda v: v in AMP, " | ".join(AMP)),
    "channels_last": (lambda v: v in CHANNELS_LAST, " | ".join(CHANNELS_LAST)),
}


def check_train_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the first out-of-range field (``--steps``/``--set key=...``)."""
    for key, (ok, what) in RULES.items():
        if hasattr(cfg, key) and not ok(getattr(cfg, key)):
            flag = f"--{key.replace('_', '-')}" if key in ("steps", "batch_size", "seed") else f"--set {key}"
            raise ConfigError(f"{key} must be {what}, got {getattr(cfg, key)!r} ({flag})")
    check_device(cfg.device)
    cfg.data.validate()
    if cfg.diffaug:
        from cxraug.families.diffaug import DiffAugment

        try:
            DiffAugment(cfg.diffaug)
        except ValueError as e:
            raise ConfigError(f"{e} (--set diffaug)") from None
    _check_family(cfg)
    _check_domains(cfg)
    _check_size(cfg)


def _check_family(cfg: Any) -> None:
    """The family's own fields (``Family.check_config``: e.g. StyleGAN2-ADA's R1 and ADA settings)."""
    from cxraug.families import family_of

    family_of(cfg.family).check_config(cfg)


def _check_domains(cfg: Any) -> None:
    """A translating family (CycleGAN) needs two different classes of the data, named before any decoding
    (they are looked up in the data by :func:`fit_to_data`, before any run folder)."""
    from cxraug.families import family_of

    if not family_of(cfg.family).takes_source:
        return
    data = show_path(cfg.data.path)
    if not (cfg.domain_a and cfg.domain_b):
        raise ConfigError(f"{cfg.preset} translates between two classes of {data}: give both --domain-a and "
                          "--domain-b (e.g. --domain-a normal --domain-b covid)")  # fmt: skip
    if cfg.domain_a == cfg.domain_b:
        raise ConfigError(f"--domain-a and --domain-b are both {cfg.domain_a!r}: a CycleGAN translates between "
                          f"two different classes of {data}")  # fmt: skip


def _check_size(cfg: Any) -> None:
    """The image size the family's networks are built for, before any decoding or run folder: the family
    builds its generator and critic on the meta device (no memory, no initialisation) and refuses a size
    it cannot be built for with one line."""
    import torch

    from cxraug.config import to_dict
    from cxraug.families import family_of

    family, config = family_of(cfg.family), to_dict(cfg)
    try:
        with torch.device("meta"):
            g, critics = family.build(config, 1), family.build_critics(config, 1)
    except TypeError as e:  # a layout option the networks do not take (--set g_layout.KEY=...)
        raise ConfigError(f"{cfg.preset}: g_layout / d_layout: {e} (--set g_layout.KEY=... or d_layout.KEY=...)") from None
    except (ValueError, RuntimeError, OverflowError) as e:  # e.g. a negative channel width in g_layout.widths
        raise ConfigError(f"{cfg.preset}: its networks cannot be built from this config ({_first_line(e)}); check "
                          "width, z_dim, g_layout / d_layout and the family's sizes (--set KEY=...)") from None  # fmt: skip
    check_network_memory(cfg, g, critics)
    if family.takes_source and critics:
        _check_translation_size(cfg, g, next(iter(critics.values())))


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# Bytes per float32 parameter while training: the weights, their gradients, Adam's two moments, the EMA copy.
TRAIN_BYTES_PER_WEIGHT = 5


def check_network_memory(cfg: Any, g: Any, critics: dict[str, Any]) -> None:
    """Refuse networks (built on the meta device: one generator ``g``, as every one of the family's ``names`` is
    built, and its ``critics``) whose training state would not fit the device's memory, with one line naming the
    sizes that set them (``width: 10000000`` used to end in the allocator's "can't allocate 40960000000000 bytes"
    traceback when the networks were built)."""
    from cxraug.families import family_of
    from cxraug.models.common import gb, memory_bytes, pick_device, tensor_bytes

    try:
        device = pick_device(cfg.device)
    except RuntimeError:
        device = "cpu"
    family = family_of(cfg.family)
    weights = len(family.names) * tensor_bytes(g) + tensor_bytes(*critics.values())  # bytes at float32
    need = TRAIN_BYTES_PER_WEIGHT * weights
    have = memory_bytes(device)
    if have and need > have:
        keys = family.size_keys
        sizes = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in keys if getattr(cfg, k, None) not in (None, {}, []))
        raise ConfigError(f"{cfg.preset}: networks of {weights // 4:,} weights ({sizes}, "
                          f"{cfg.data.size} px) need about {gb(need)} to train, more than the {gb(have)} of memory "
                          f"on {device}; lower --set {' / '.join(keys)}")  # fmt: skip


def _translates_at(g: Any, d: Any, size: int) -> str | None:
    """Why a translating generator ``g`` and its critic ``d`` cannot train on ``size`` px images (None: they
    can). Shapes only: a forward pass on the meta device computes nothing."""
    import torch

    x = torch.empty(1, 1, size, size, device="meta")  # [B, 1, S, S]
    try:
        y = g(x)
        d(x)
    except (RuntimeError, ValueError) as e:
        return str(e).splitlines()[0]
    if tuple(y.shape) != tuple(x.shape):
        return f"the generator turns {size} px images into {y.shape[-1]} px ones"
    return None


def _check_translation_size(cfg: Any, g: Any, d: Any) -> None:
    """CycleGAN's cycle loss compares an image with its round trip, so the generator must give back the size it
    was given, and the PatchGAN critic needs room for its strides: checked at the configured size before any
    decoding (a 42 px CycleGAN used to fail at the first step with a tensor-size traceback, a 16 px one with an
    instance-norm error)."""
    s = cfg.data.size
    why = _translates_at(g, d, s)
    if why is None:
        return
    near = [t for t in sorted(range(max(s - 16, 16), s + 17), key=lambda t: (abs(t - s), t))
            if t != s and _translates_at(g, d, t) is None][:2]  # fmt: skip
    hint = f"; sizes that work nearby: {', '.join(map(str, sorted(near)))}" if near else ""
    raise ConfigError(f"{cfg.preset} cannot train on {s} px images of {show_path(cfg.data.path)} ({why}); choose "
                      f"another --size{hint}")  # fmt: skip


def fit_to_data(cfg: Any, ds: CachedDataset) -> None:
    """Refuse a ``--class``/domain with no images; cap the batch at the training images (with a note)."""
    chosen = [c for c in (cfg.cls, cfg.domain_a, cfg.domain_b) if c]
    counts = ds.counts()
    for c in chosen:
        if c not in counts:
            raise ConfigError(f"class {c!r} is not in {show_path(cfg.data.path)}; classes are {list(counts)}")
        if counts[c] == 0:
            raise ConfigError(f"class {c!r} has no readable images in {show_path(cfg.data.path)} (counts: {counts})")
    if cfg.domain_a and cfg.domain_b:
        n = min(counts[cfg.domain_a], counts[cfg.domain_b])
    else:
        n = counts[cfg.cls] if cfg.cls else len(ds)
    if cfg.batch_size > n:
        log.warning(f"note: batch size {cfg.batch_size} capped at the {n} training image(s)")
        cfg.batch_size = n


def check_resumable(st: Any, path: str | Path) -> None:
    """A training checkpoint written by ``cxraug train`` (not a generator artifact, not a foreign file)."""
    if not isinstance(st, dict) or not isinstance(st.get("config"), dict) or "family" not in st["config"]:
        raise CheckpointError(f"{show_path(path)} is not a cxraug training checkpoint; cannot resume from it")
    if "opt_g" not in st or "opt_d" not in st:
        raise CheckpointError(f"{show_path(path)} holds a generator only (no optimiser state); "
                              "resume needs a run's checkpoints/last.pt")  # fmt: skip
