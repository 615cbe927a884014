"""One training engine for every generator family.

Loop: ``n_critic`` critic updates, one generator update, EMA update = one step. Every
``log_every`` steps the losses are synced to the host (no ``.item()`` in between), checked for
NaN/divergence, written to ``losses.csv`` and shown on the progress bar with images/s. Every
``sample_every`` steps a fixed-noise grid is saved; every ``ckpt_every`` steps ``last.pt`` is
written atomically with everything needed to continue bit-for-bit (networks, optimisers, EMA,
step, RNG states, history). Multi-GPU/multi-node via Hugging Face Accelerate
(``accelerate launch -m cxraug train ...``); a single CPU process is the default.

Randomness never touches torch's global RNG state: each process draws batches, noise, DiffAugment
parameters, penalty ``eps`` and image-pool choices from its own ``torch.Generator`` objects, seeded from a
hash of (stream, seed, rank) (:func:`cxraug.seeding.stream_seed`), so under torchrun every rank draws
different noise while the DDP replicas stay identical. Draws that cannot take a generator (dropout) run on a
per-rank "ambient" stream swapped in around each step. All of these, for every rank, are in the
checkpoint.

A checkpoint is a :class:`cxraug.families.artifact.GeneratorArtifact` (what sampling needs) plus the
training state (critics, optimisers, EMA count, RNG streams, history).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cxraug.config import save_config
from cxraug.data.cache import CachedDataset
from cxraug.data.preprocess import u8_to_tensor
from cxraug.families.artifact import FORMAT as CKPT_FORMAT
from cxraug.models.common import pick_device
from cxraug.train.checkpoints import (
    RESUME_FREE,
    CheckpointStore,
    changed_settings,
    config_from_checkpoint,
)
from cxraug.train.config import TrainConfig
from cxraug.train.observers import TrainingDiverged, TrainingOutputs
from cxraug.train.setup import AMP_DTYPES, AMP_ENV, FIXED_SEED, TrainerSetup, default_amp

__all__ = ["AMP_DTYPES", "AMP_ENV", "CKPT_FORMAT", "FIXED_SEED", "RESUME_FREE", "Trainer", "TrainingDiverged",
           "changed_settings", "config_from_checkpoint", "default_amp", "pick_device"]  # fmt: skip


class Trainer(TrainerSetup, CheckpointStore, TrainingOutputs):
    """The loop; set-up (:mod:`~cxraug.train.setup`), checkpoints (:mod:`~cxraug.train.checkpoints`) and what a run
    shows (:mod:`~cxraug.train.observers`) live in their own modules."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: CachedDataset,
        run_dir: str | os.PathLike,
        progress: bool = True,
        eval_hook: Callable[[Trainer], float] | None = None,
    ):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.eval_hook = eval_hook
        self._setup_device(cfg)
        self._setup_family(cfg, data)
        self._setup_networks(cfg)
        self._setup_previews(cfg)
        self.step = 0
        self.history: dict[str, list[list[float]]] = {}
        self.best_fid: float | None = None
        self.images_seen = 0

    @property
    def n_critic(self) -> int:
        """Critic updates per step: the config's ``n_critic``, 0 for a family without critics."""
        return self.cfg.n_critic if self.family.critics else 0

    @property
    def main_generator(self) -> nn.Module:
        return self.family.generators[self.spec.main]

    @property
    def real_images(self) -> np.ndarray:
        """The images the generator learns to make (uint8 [N,S,S]): the target domain when translating."""
        return np.asarray((self.data_b if self.data_b is not None else self.data_a).images)

    @property
    def source_images(self) -> np.ndarray | None:
        """The images a translating generator takes in (uint8 [N,S,S]); None for noise generators."""
        return np.asarray(self.data_a.images) if self.spec.takes_source else None

    # ------------------------------------------------------------------ data
    def _resident(self, ds: CachedDataset | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The uint8 images and labels on the accelerator, when they fit in a quarter of its free memory
        (898 images at 128 px are 15 MB): a batch is then one gather there, with no host-to-device copy of
        float images per step. CPU training keeps the memory-mapped cache."""
        if ds is None or self.device.type == "cpu":
            return None
        need = ds.images.nbytes + ds.labels.nbytes
        if self.device.type == "cuda" and need > torch.cuda.mem_get_info(self.device)[0] // 4:
            return None
        imgs = torch.from_numpy(np.array(ds.images, dtype=np.uint8)).to(self.device)  # a writable copy of the memmap
        return imgs, torch.from_numpy(np.nan_to_num(ds.labels).astype(np.float32)).to(self.device)

    @contextlib.contextmanager
    def static_batches(self, idx: torch.Tensor) -> Iterator[None]:
        """Batches gathered by the rows of ``idx`` [draws, B] (device indices drawn beforehand from the sampler
        in the eager order): the form a CUDA graph can replay."""
        self._static_idx, self._static_draw = idx, 0
        try:
            yield
        finally:
            self._static_idx = None

    def _draw(self, ds: CachedDataset, on_device: tuple[torch.Tensor, torch.Tensor] | None):
        if self._static_idx is not None and on_device is not None:
            i = self._static_idx[self._static_draw]
            self._static_draw += 1
            return u8_to_tensor(on_device[0][i]), on_device[1][i]
        idx = torch.randint(len(ds), (self.cfg.batch_size,), generator=self.sampler)
        if on_device is not None:
            i = idx.to(self.device, non_blocking=True)
            return u8_to_tensor(on_device[0][i]), on_device[1][i]
        i = np.sort(idx.numpy())
        x = ds.batch(i)
        return x.to(self.device, non_blocking=True), torch.from_numpy(np.nan_to_num(ds.labels[i])).to(self.device)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._draw(self.data_a, self._on_device_a)
        if self.data_b is not None:
            y, _ = self._draw(self.data_b, self._on_device_b)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            if y.dim() == 4:
                y = y.contiguous(memory_format=torch.channels_last)
        return x, y

    # ------------------------------------------------------------------ loop
    def _update(self, opt, loss_fn, frozen: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """One optimiser step on ``loss_fn``; the ``frozen`` networks' parameters do not require grad meanwhile
        (no gradient is computed, accumulated or all-reduced for them)."""
        params = [p for m in frozen.values() for p in m.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            opt.zero_grad(set_to_none=True)
            with self.autocast():
                loss, logs = loss_fn(self._batch())
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        finally:
            for p in params:
                p.requires_grad_(True)
        return logs

    def autocast(self) -> torch.autocast:
        dtype = AMP_DTYPES[self.amp]
        # Under a CUDA graph the autocast region opens and closes inside the capture, so its cast cache (a weight is
        # cast once per region and the gradients of its uses summed before the cast back) is captured as it runs
        # eagerly: without it, bf16 steps would round differently from eager ones.
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def step_updates(self) -> dict[str, torch.Tensor]:
        """A step's optimiser updates: ``n_critic`` critic updates, then one generator update (what a CUDA graph holds)."""
        fam, logs = self.family, {}
        for _ in range(self.n_critic):
            logs.update(self._update(self.opt_d, fam.critic_loss, frozen=fam.generators))
            fam.after_critic_step()
        logs.update(self._update(self.opt_g, fam.generator_loss, frozen=fam.critics))
        return logs

    def train_step(self) -> dict[str, torch.Tensor]:
        fam = self.family
        for m in (*fam.generators.values(), *fam.critics.values()):
            m.train()
        with self._ambient_rng():
            logs = self._graph.step() if self._graph is not None else self.step_updates()
        if self.ema is not None:
            self.ema.update_parameters(self.acc.unwrap_model(self.main_generator))
        self.step += 1
        self.images_seen += self.cfg.batch_size * (self.n_critic + 1)
        return logs

    def fit(self, steps: int | None = None) -> Path:
        cfg = self.cfg
        total = steps if steps is not None else cfg.steps
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        pending: list[dict[str, torch.Tensor]] = []
        t0, seen0 = time.perf_counter(), self.images_seen
        if self.progress and self.acc.is_main_process:
            n = len(self.data_a) + (len(self.data_b) if self.data_b is not None else 0)
            procs = f" x {self.acc.num_processes} processes" if self.acc.num_processes > 1 else ""
            prec = "float32" if self.amp == "no" else f"{self.amp} autocast"
            tqdm.write(f"{cfg.preset}: {n} images, batch {cfg.batch_size}, on {self.device}{procs}, {prec}, "
                       f"channels_last {'on' if self.channels_last else 'off'}")  # fmt: skip
        bar = tqdm(total=total, initial=self.step, desc=cfg.preset, unit="step", disable=not self.progress)
        while self.step < total:
            pending.append(self.train_step())
            bar.update(1)
            last = self.step == total
            if self.step % cfg.log_every == 0 or last:
                rate = (self.images_seen - seen0) / max(time.perf_counter() - t0, 1e-9)
                self._log(pending, bar, rate)
                pending = []
            if self.acc.is_main_process:
                if self.step % cfg.sample_every == 0 or last:
                    self.save_samples()
                if cfg.fid_every and self.eval_hook and (self.step % cfg.fid_every == 0 or last):
                    self._evaluate()
            if self.step % cfg.ckpt_every == 0 or last:
                per_rank = self.per_rank_states()  # every process takes part (a gather under torchrun)
                if self.acc.is_main_process:
                    self.save_checkpoint(self.run_dir / "checkpoints" / "last.pt", per_rank)
        bar.close()
        if self.acc.is_main_process:
            self.save_curves()
        self.acc.wait_for_everyone()  # multi-process: nobody leaves while the main process still writes
        return self.run_dir / "checkpoints" / "last.pt"

    def close(self, clean: bool = True) -> None:
        """End multi-process training: take the process group down now, while the interpreter is whole.

        ``destroy_process_group`` alone does not: the DDP wrappers (held by the family and by Accelerate) keep
        the gloo group alive, with its socket loop and worker threads, into interpreter finalisation. A rank
        that exits with those threads still running aborts now and then (SIGABRT, "terminate called without
        an active exception"; more often under CPU load), and torchrun then SIGTERMs the other rank. So all
        processes first meet (a barrier: no collective is in flight), the wrappers are dropped (the family
        gets its plain modules back: sampling and checkpoints still work), and destroying the group then joins
        gloo's threads here. ``clean=False`` (an error path: a peer may be gone or stuck in a collective, and
        joining could wait for gloo's timeout) only destroys the group, as before.
        """
        if not clean:
            self.acc.end_training()
            return
        if self.acc.num_processes > 1:
            self.acc.wait_for_everyone()
        self._graph = None  # a captured step holds the wrapped networks
        for name, m in {**self.family.generators, **self.family.critics}.items():
            setattr(self.family, name, m)  # the plain modules, not their DDP (or compiled) wrappers
        self.acc.free_memory()  # Accelerate's own references to the wrappers; collects the garbage
        self.acc.end_training()  # destroy_process_group: its last holder goes, gloo's threads are joined

