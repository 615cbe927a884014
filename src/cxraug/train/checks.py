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
from cxraug.io import check_device

log = logging.getLogger("cxraug")

OPTIMIZERS = ("adam", "rmsprop")
LOSSES = ("bce", "wgan-clip", "wgan-gp", "hinge", "lsgan")
AMP = ("auto", "bf16", "fp16", "no")
CHANNELS_LAST = ("auto", "on", "off")


def _rules(cfg: Any) -> list[tuple[str, bool, str]]:
    def num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    return [
        ("steps", num(cfg.steps) and cfg.steps >= 1, "an integer >= 1"),
        ("epochs", num(getattr(cfg, "epochs", 0)) and getattr(cfg, "epochs", 0) >= 0, "an integer >= 0 (0 = use steps)"),
        ("batch_size", num(cfg.batch_size) and cfg.batch_size >= 1, "an integer >= 1"),
        ("lr_g", num(cfg.lr_g) and cfg.lr_g > 0, "a number > 0"),
        ("lr_d", num(cfg.lr_d) and cfg.lr_d > 0, "a number > 0"),
        ("beta1", num(cfg.beta1) and 0 <= cfg.beta1 < 1, "within [0, 1)"),
        ("beta2", num(cfg.beta2) and 0 <= cfg.beta2 < 1, "within [0, 1)"),
        ("n_critic", num(cfg.n_critic) and cfg.n_critic >= 1, "an integer >= 1"),
        ("z_dim", num(cfg.z_dim) and cfg.z_dim >= 1, "an integer >= 1"),
        ("width", num(cfg.width) and cfg.width >= 1, "an integer >= 1"),
        ("n_blocks", num(cfg.n_blocks) and cfg.n_blocks >= 1, "an integer >= 1"),
        ("clip", num(cfg.clip) and cfg.clip > 0, "a number > 0"),
        ("gp_lambda", num(cfg.gp_lambda) and cfg.gp_lambda >= 0, "a number >= 0"),
        ("cycle_lambda", num(cfg.cycle_lambda) and cfg.cycle_lambda >= 0, "a number >= 0"),
        ("identity_lambda", num(cfg.identity_lambda) and cfg.identity_lambda >= 0, "a number >= 0"),
        ("pool_size", num(cfg.pool_size) and cfg.pool_size >= 0, "an integer >= 0"),
        ("ema_decay", num(cfg.ema_decay) and 0 <= cfg.ema_decay < 1, "within [0, 1)"),
        ("seed", num(cfg.seed) and 0 <= cfg.seed < 2**32, "an integer within 0..2^32-1"),
        ("log_every", num(cfg.log_every) and cfg.log_every >= 1, "an integer >= 1"),
        ("sample_every", num(cfg.sample_every) and cfg.sample_every >= 1, "an integer >= 1"),
        ("ckpt_every", num(cfg.ckpt_every) and cfg.ckpt_every >= 1, "an integer >= 1"),
        ("fid_every", num(cfg.fid_every) and cfg.fid_every >= 0, "an integer >= 0 (0 = off)"),
        ("fid_n", num(cfg.fid_n) and cfg.fid_n >= 2, "an integer >= 2"),
        ("threads", num(cfg.threads) and cfg.threads >= 0, "an integer >= 0 (0 = torch's default)"),
        ("optimizer", cfg.optimizer in OPTIMIZERS, " | ".join(OPTIMIZERS)),
        ("loss", cfg.loss in LOSSES, " | ".join(LOSSES)),
        ("amp", cfg.amp in AMP, " | ".join(AMP)),
        ("channels_last", cfg.channels_last in CHANNELS_LAST, " | ".join(CHANNELS_LAST)),
    ]


def check_train_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the first out-of-range field (``--steps``/``--set key=...``)."""
    for key, ok, what in _rules(cfg):
        if not ok:
            flag = f"--{key.replace('_', '-')}" if key in ("steps", "batch_size", "seed") else f"--set {key}"
            raise ConfigError(f"{key} must be {what}, got {getattr(cfg, key)!r} ({flag})")
    check_device(cfg.device)
    cfg.data.validate()


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
