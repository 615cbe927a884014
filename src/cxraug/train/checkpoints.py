"""The trainer's checkpoint store: what a checkpoint holds (the generator artifact plus critics, optimisers, EMA
count, every process's random streams, history), its atomic write, reading it back for an exact resume (a legacy
``cxraug-gan/1`` checkpoint converted first by :func:`cxraug.families.artifact.current_format`, the one place that
format is read), and the checks that a resume continues the same run. A mixin of :class:`cxraug.train.engine.Trainer`."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import torch

from cxraug.config import from_dict, to_dict
from cxraug.errors import CheckpointError, CXRAugError, show_path
from cxraug.families.artifact import GeneratorArtifact, current_format
from cxraug.io import atomic_path, crash_hook, load_checkpoint
from cxraug.train.config import TrainConfig
from cxraug.train.graphs import StepGraph

log = logging.getLogger("cxraug.train")


class CheckpointStore:
    """Saving and resuming a training run."""

    @functools.cached_property
    def train_fingerprints(self) -> np.ndarray:
        """pHashes of every training image (both domains for CycleGAN): lets a study prove that this
        generator never saw one of its test images."""
        from cxraug.data.stats import fingerprints

        sets = [self.data_a] + ([self.data_b] if self.data_b is not None else [])
        return np.concatenate([fingerprints(np.asarray(d.images)) for d in sets])

    @functools.cached_property
    def train_signatures(self) -> dict[str, torch.Tensor]:
        """The duplicate detector's features of every training image, read from its file (the cached square where
        there is none): lets a study find a cropped, padded or rescaled copy of one of them among its test images."""
        from cxraug.data.dedupe import Signatures, dataset_signatures

        sets = [self.data_a] + ([self.data_b] if self.data_b is not None else [])
        sig = Signatures.join([dataset_signatures(getattr(d, "paths", None) or [""] * len(d.images), d.images,
                                                  flipped=False, keep_images=False) for d in sets])  # fmt: skip
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sig.to_state().items()}

    def rng_state(self) -> dict:
        """This process's random streams and family state (pools, last fakes)."""
        return {"sampler": self.sampler.get_state(), "ambient": dict(self._ambient), "family": self.family.state()}

    def per_rank_states(self) -> list[dict]:
        """Every process's :meth:`rng_state`, rank order (a collective under multi-process training)."""
        own = self.rng_state()
        if self.acc.num_processes == 1:
            return [own]
        from accelerate.utils import gather_object

        return gather_object([own])

    def artifact(self) -> GeneratorArtifact:
        unwrap = self.acc.unwrap_model
        ema = None
        if self.ema is not None:
            ema = {self.spec.main: {k: v for k, v in self.ema.module.state_dict().items()}}
        return GeneratorArtifact(
            family=self.cfg.family,
            config=to_dict(self.cfg),
            weights={k: unwrap(m).state_dict() for k, m in self.family.generators.items()},
            ema=ema,
            train_phash=torch.from_numpy(self.train_fingerprints),
            train_signatures=self.train_signatures,
            class_names=self.class_names,
            real_labels=torch.from_numpy(np.ascontiguousarray(np.nan_to_num(self.data_a.labels))),
            step=self.step,
        )

    def state_dict(self, per_rank: list[dict] | None = None) -> dict:
        """The artifact's fields plus the training state; ``per_rank``: every process's streams (default: own)."""
        unwrap = self.acc.unwrap_model
        return {
            **self.artifact().to_dict(),
            "critics": {k: unwrap(m).state_dict() for k, m in self.family.critics.items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "scaler": self.scaler.state_dict(),
            "ema_n_averaged": self.ema.n_averaged.clone() if self.ema is not None else None,
            "per_rank": per_rank if per_rank is not None else [self.rng_state()],
            "images_seen": self.images_seen,
            "history": self.history,
            "best_fid": self.best_fid,
        }

    def save_checkpoint(self, dest: str | os.PathLike, per_rank: list[dict] | None = None) -> Path:
        st = self.state_dict(per_rank)
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as f:  # a file object: the archive inside is not named after the temp file
                torch.save(st, f)
            crash_hook("checkpoint-write", self.step)  # (tests) die with the new file half way to its place
        crash_hook("after-checkpoint", self.step)
        return Path(dest)

    def _check_same_run(self, st: dict, source: str | os.PathLike) -> None:
        """A resume continues the run the checkpoint comes from: the same settings (but how long it trains and how
        it runs: :data:`RESUME_FREE`) and the same training images; else it would mix two configurations, or two
        datasets, in one run and record only the second."""
        try:
            saved = to_dict(from_dict(TrainConfig, st["config"]))  # defaults for fields newer than the checkpoint
        except (CXRAugError, TypeError, ValueError):
            saved = st["config"]
        mine = to_dict(self.cfg)
        diff = changed_settings(saved, mine)
        if diff:
            shown = "; ".join(f"{k}: {saved.get(k)!r} there, {mine.get(k)!r} here" for k in diff[:4])
            raise CheckpointError(f"{show_path(source)} was trained with other settings ({shown}"
                                  f"{'; ...' if len(diff) > 4 else ''}): a resume continues that run unchanged; "
                                  "start a new run to change them")  # fmt: skip
        seen = np.asarray(st.get("train_phash", np.zeros((0, 8), np.uint8)))
        if len(seen) and not np.array_equal(seen, self.train_fingerprints):
            raise CheckpointError(f"{show_path(source)} was trained on other images than {self.cfg.data.path} holds now "
                                  f"({len(seen)} then, {len(self.train_fingerprints)} now, or the same number changed): "
                                  "resuming would mix two datasets in one run")  # fmt: skip

    def load_state_dict(self, st: dict, source: str | os.PathLike = "checkpoint") -> None:
        """Continue the run ``st`` was saved from (a current or a legacy ``cxraug-gan/1`` checkpoint, read by
        :func:`cxraug.families.artifact.current_format`)."""
        st = current_format(st, source)
        art = GeneratorArtifact.from_dict(st, source)
        self._check_same_run(st, source)
        self._load_networks(st, art, source)
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None and art.ema is not None:
            self.ema.module.load_state_dict(art.ema[self.spec.main])
            self.ema.n_averaged.copy_(st["ema_n_averaged"])
        self._load_progress(st, source)
        if self._graph is not None:  # the optimisers' state tensors are new: warm up and capture again
            self._graph = StepGraph(self)

    def _load_networks(self, st: dict, art: GeneratorArtifact, source: str | os.PathLike) -> None:
        """Generators, critics and optimisers."""
        fam, unwrap = self.family, self.acc.unwrap_model
        try:
            critics = st["critics"]
            for k, m in fam.generators.items():
                unwrap(m).load_state_dict(art.weights[k])
            for k, m in fam.critics.items():
                unwrap(m).load_state_dict(critics[k])
            self.opt_g.load_state_dict(st["opt_g"])
            if self.opt_d is not None:
                self.opt_d.load_state_dict(st["opt_d"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{show_path(source)}: its networks or optimiser state do not fit its "
                                  f"{self.cfg.family} config, or are missing ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else e!r})") from e  # fmt: skip
        # this run's choice, not the saving run's: a CUDA-graph run's capturable optimiser is not the CPU's
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups if opt is not None else []:
                if "capturable" in group:
                    group["capturable"] = self._capturable

    def _load_progress(self, st: dict, source: str | os.PathLike) -> None:
        """Step, history, images seen, best FID and every process's random streams."""
        try:
            ranks = st["per_rank"]
            step, history = int(st["step"]), {k: [list(p) for p in v] for k, v in st["history"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{show_path(source)}: incomplete training checkpoint (no usable {e})") from e
        if len(ranks) == self.acc.num_processes:  # same world size: every process continues its own streams
            mine = ranks[self.acc.process_index]
            self.sampler.set_state(mine["sampler"])
            if "ambient" in mine:
                self._ambient = dict(mine["ambient"])
            self.family.load_state(mine.get("family", {}))
        else:
            log.warning("checkpoint from %d process(es), resumed on %d: random streams start afresh from the seed",
                        len(ranks), self.acc.num_processes)  # fmt: skip
        self.step = step
        self.images_seen = int(st.get("images_seen", 0))
        self.history = history
        self.best_fid = st.get("best_fid")

    def resume(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_checkpoint(path), path)


# Settings a resume may change: how long the run goes on and how it runs, not what it computes
RESUME_FREE = frozenset({"steps", "epochs", "device", "threads", "amp", "channels_last", "compile", "cuda_graphs",
                         "log_every", "sample_every", "ckpt_every", "fid_every", "fid_n", "sample_batch",
                         "preview_steps"})  # fmt: skip


def changed_settings(a: dict, b: dict) -> list[str]:
    """The fields two resolved configs (``to_dict``) differ in, but for what a resume may change."""
    return sorted(k for k in a.keys() | b.keys() if k not in RESUME_FREE and a.get(k) != b.get(k))


def config_from_checkpoint(st: dict) -> TrainConfig:
    return from_dict(TrainConfig, st["config"])

