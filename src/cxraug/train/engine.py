"""One training engine for every GAN family.

Loop: ``n_critic`` critic updates, one generator update, EMA update = one step. Every
``log_every`` steps the losses are synced to the host (no ``.item()`` in between), checked for
NaN/divergence, written to ``losses.csv`` and shown on the progress bar with images/s. Every
``sample_every`` steps a fixed-noise grid is saved; every ``ckpt_every`` steps ``last.pt`` is
written atomically with everything needed to continue bit-for-bit (networks, optimisers, EMA,
step, RNG states, history). Multi-GPU/multi-node via Hugging Face Accelerate
(``accelerate launch -m cxraug train ...``); a single CPU process is the default.

Randomness never touches torch's global RNG state: each process draws batches, noise, DiffAugment
parameters, penalty ``eps`` and image-pool choices from its own ``torch.Generator`` objects, seeded from a
hash of (stream, seed, rank) (:func:`cxraug.train.seeding.stream_seed`), so under torchrun every rank draws
different noise while the DDP replicas stay identical. Draws that cannot take a generator (dropout) run on a
per-rank "ambient" stream swapped in around each step. All of these, for every rank, are in the
checkpoint.

A checkpoint is a :class:`cxraug.models.artifact.GeneratorArtifact` (what sampling needs) plus the
training state (critics, optimisers, EMA count, RNG streams, history).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from cxraug.config import from_dict, save_config, to_dict
from cxraug.data.cache import CachedDataset
from cxraug.data.preprocess import u8_to_tensor
from cxraug.errors import CheckpointError, CXRAugError, show_path
from cxraug.io import atomic_path, crash_hook, load_checkpoint
from cxraug.models.artifact import FORMAT as CKPT_FORMAT
from cxraug.models.artifact import LEGACY_FORMAT, GeneratorArtifact, GeneratorFamily, pick_device
from cxraug.models.artifact import load_generator as load_family
from cxraug.plotting import plot_curves, save_grid
from cxraug.train.config import TrainConfig
from cxraug.train.families import make_family
from cxraug.train.graphs import StepGraph, graph_blocker
from cxraug.train.seeding import stream_seed

log = logging.getLogger("cxraug.train")
__all__ = ["CKPT_FORMAT", "Trainer", "TrainingDiverged", "load_generator", "pick_device"]

FIXED_SEED = 12345  # the preview grid's noise, labels and source images: the same in every run and step


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}


class TrainingDiverged(CXRAugError):
    pass


AMP_ENV = "CXRAUG_AMP"  # auto | bf16 | fp16 | no (fp32): overrides the hardware detection below


def default_amp(device: torch.device) -> str:
    """bf16 autocast where the hardware does bf16 natively: CUDA, and CPUs with AVX-512-BF16/AMX, where it
    measured 1.8x faster than fp32 at 64 px with the same FID trajectory (BENCHMARKS.md). fp32 elsewhere.
    ``$CXRAUG_AMP`` (bf16, fp16 or no) replaces the detection, e.g. ``CXRAUG_AMP=no`` runs a bf16 machine
    on the fp32 route to check the time budget of a CPU without bf16; an explicit ``amp`` setting wins."""
    forced = os.environ.get(AMP_ENV, "").strip().lower()
    forced = {"": "auto", "fp32": "no"}.get(forced, forced)
    if forced != "auto":
        if forced not in AMP_DTYPES:
            raise CXRAugError(f"${AMP_ENV} must be auto, bf16, fp16 or no (fp32), not {forced!r}")
        return forced
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "bf16"
    return "no"


def _accelerator(device: torch.device):
    """Accelerate (device placement, DDP under `accelerate launch`/torchrun) without its mixed precision:
    that is per-process global state, so a second Trainer with another precision in the same process
    (a notebook, a study, a benchmark) would silently share the first one's. The engine autocasts itself.
    A plain process that switches device is given a fresh state."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        return Accelerator(cpu=device.type == "cpu", mixed_precision="no")
    except ValueError:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=device.type == "cpu", mixed_precision="no")


class Trainer:
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
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = pick_device(cfg.device)
        self.amp = cfg.amp if cfg.amp != "auto" else default_amp(device)
        if self.amp not in AMP_DTYPES:
            raise CXRAugError(f"amp must be auto, bf16, fp16 or no, not {cfg.amp!r}")
        self.acc = _accelerator(device)
        self.device = self.acc.device
        # fp16 needs loss scaling; bf16 has float32's range and does not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        # channels_last: on CUDA, and on CPUs under bf16, where oneDNN's bf16 convolutions prefer it (+17-22 % for
        # DCGAN-64 on top of bf16; within noise in fp32; BENCHMARKS.md §1)
        auto_cl = self.device.type == "cuda" or (self.device.type == "cpu" and self.amp == "bf16")
        self.channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and auto_cl)
        if self.device.type == "cuda":  # fixed shapes: cuDNN times its algorithms once (unless determinism is asked)
            torch.backends.cudnn.benchmark = not torch.backends.cudnn.deterministic

        self.class_names = list(data.class_names)
        self.n_labels = len(self.class_names)
        rank = self.acc.process_index
        self.rng = torch.Generator(self.device).manual_seed(stream_seed(cfg.seed, "noise", rank))  # z, aug, eps
        # each process of a multi-GPU/multi-node run (`accelerate launch`) draws its own batches
        self.sampler = torch.Generator().manual_seed(stream_seed(cfg.seed, "sampler", rank))
        self._ambient = self._ambient_init(stream_seed(cfg.seed, "ambient", rank))
        self.family = make_family(cfg, self.n_labels, self.rng, stream_seed(cfg.seed, "pool", rank))
        self.spec: type[GeneratorFamily] = self.family.spec
        self.data_a, self.data_b = self.family.select_data(data)
        self._on_device_a, self._on_device_b = self._resident(self.data_a), self._resident(self.data_b)
        fused = self.device.type == "cuda"
        self._static_idx: torch.Tensor | None = None  # under a CUDA graph: the step's batch indices, on the device
        self._static_draw = 0
        self._graph: StepGraph | None = None
        blocker = graph_blocker(self) if cfg.cuda_graphs else None
        if cfg.cuda_graphs and blocker and self.device.type == "cuda":
            log.info("cuda_graphs: %s; training eagerly", blocker)
        self._capturable = cfg.cuda_graphs and blocker is None  # optimisers keep their step counts on the device
        self.opt_g = self._optimizer(self.family.generators, cfg.lr_g, fused)
        # a family without critics (diffusion) has no critic optimiser and makes no critic update
        self.opt_d = self._optimizer(self.family.critics, cfg.lr_d, fused) if self.family.critics else None
        for m in (*self.family.generators.values(), *self.family.critics.values()):
            m.to(self.device)
            if self.channels_last:
                m.to(memory_format=torch.channels_last)
        self.ema = None
        main_g = self.main_generator
        if cfg.ema_decay > 0:
            self.ema = AveragedModel(main_g, multi_avg_fn=self._ema_update, use_buffers=True)
        # Under `accelerate launch`/torchrun the losses must run through the DDP-wrapped networks (gradients are
        # all-reduced there); the family's dicts keep the plain modules for state dicts and EMA.
        nets = {**self.family.generators, **self.family.critics}
        opts = [o for o in (self.opt_g, self.opt_d) if o is not None]
        prepared = self.acc.prepare(*nets.values(), *opts)  # >= 2 objects: a tuple
        wrapped, opts = prepared[: len(nets)], prepared[len(nets) :]
        self.opt_g, self.opt_d = opts[0], (opts[1] if len(opts) > 1 else None)
        for name, m in zip(nets, wrapped):
            setattr(self.family, name, m)
        if cfg.compile:
            for name, m in {**self.family.generators, **self.family.critics}.items():
                setattr(self.family, name, torch.compile(m))
        fixed = torch.Generator().manual_seed(FIXED_SEED)  # preview inputs: 64 z with real label rows, 8 images
        self.fixed_noise = torch.randn(64, cfg.z_dim, generator=fixed)
        lab = np.nan_to_num(self.data_a.labels)
        self.fixed_labels = torch.from_numpy(lab[torch.randint(len(lab), (64,), generator=fixed).numpy()])
        self.fixed_source = self.fixed_a = self.data_a.batch(
            torch.randint(len(self.data_a), (8,), generator=fixed).numpy()
        )
        if self._capturable:
            self._graph = StepGraph(self)
        self.step = 0
        self.history: dict[str, list[list[float]]] = {}
        self.best_fid: float | None = None
        self.images_seen = 0

    def _ema_update(self, avg: list[torch.Tensor], cur: list[torch.Tensor], n_averaged) -> None:
        # Warm-up (as in timm/StyleGAN): a fixed 0.999 from step 0 averages the first, wildly different
        # weights and yields a near-constant generator for the first thousands of steps.
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        avg = [a for a in avg if a.is_floating_point()]
        cur = [c for c in cur if c.is_floating_point()]
        if avg:
            torch._foreach_lerp_(avg, cur, 1 - d)

    # ------------------------------------------------------------------ setup
    def _optimizer(self, nets: dict[str, nn.Module], lr: float, fused: bool) -> torch.optim.Optimizer:
        params = [p for m in nets.values() for p in m.parameters()]
        cap = self._capturable
        if self.cfg.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, capturable=cap)
        if self.cfg.optimizer == "adam":
            betas = (self.cfg.beta1, self.cfg.beta2)
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None, capturable=cap)
        raise CXRAugError(f"unknown optimizer {self.cfg.optimizer!r} (adam or rmsprop)")

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

    def _ambient_init(self, seed: int) -> dict[str, torch.Tensor]:
        st = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            st["cuda"] = torch.Generator(self.device).manual_seed(seed).get_state()
        return st

    @contextlib.contextmanager
    def _ambient_rng(self) -> Iterator[None]:
        """Run a step with this process's own stream as torch's global RNG (for draws that take no generator:
        dropout), then give the caller its global state back."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self._ambient["cpu"])
            if cuda:
                torch.cuda.set_rng_state(self._ambient["cuda"], self.device)
            yield
            self._ambient["cpu"] = torch.get_rng_state()
            if cuda:
                self._ambient["cuda"] = torch.cuda.get_rng_state(self.device)

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

    def _log(self, pending: list[dict[str, torch.Tensor]], bar, rate: float) -> None:
        keys = sorted({k for p in pending for k in p})
        stacked = {k: torch.stack([p[k].float() for p in pending if k in p]).mean() for k in keys}
        vals = {k: float(v) for k, v in zip(keys, torch.stack(list(stacked.values())).cpu().tolist())}
        for k, v in vals.items():
            if not np.isfinite(v) or abs(v) > 1e7:
                raise TrainingDiverged(
                    f"{k} became {v} at step {self.step}: training diverged. The last good checkpoint is "
                    f"{self.run_dir / 'checkpoints' / 'last.pt'}; lower the learning rates or use another preset."
                )
            self.history.setdefault(k, []).append([self.step, v])
        self.history.setdefault("images_per_s", []).append([self.step, rate])
        bar.set_postfix({**{k: f"{v:.3f}" for k, v in vals.items()}, "img/s": f"{rate:.0f}"})

    # ------------------------------------------------------------------ outputs
    def generator_family(self, use_ema: bool = True) -> GeneratorFamily:
        """The models-level sampler around the current EMA (or live) generator, as synthesis would load it."""
        g = self.ema.module if use_ema and self.ema is not None else self.acc.unwrap_model(self.main_generator)
        real = torch.from_numpy(np.nan_to_num(np.asarray(self.data_a.labels, np.float32)))
        return self.spec(g, to_dict(self.cfg), self.class_names, real)

    @torch.no_grad()
    def sample(self, n: int = 64, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Preview images from the EMA generator (or the live one): [n,1,S,S] in [-1,1] on CPU, the same
        noise (or source images) at every call. Translating generators give one per fixed source image."""
        fixed = torch.Generator().manual_seed(FIXED_SEED)
        imgs, _ = self.generator_family().preview(n, labels=labels, source=self.fixed_source, generator=fixed)
        return imgs

    def save_samples(self) -> Path:
        dest = self.run_dir / "samples" / f"step-{self.step:06d}.png"
        imgs = self.sample()
        if self.spec.takes_source:  # row of inputs above their translations
            imgs = torch.cat([self.fixed_source, imgs])
        save_grid(imgs, dest, nrow=8)
        save_grid(imgs, self.run_dir / "samples.png", nrow=8)
        return dest

    def save_curves(self) -> None:
        rows = [(s, k, v) for k, pts in self.history.items() for s, v in pts]
        with atomic_path(self.run_dir / "losses.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "metric", "value"])
            w.writerows(sorted(rows))
        series = {k: [tuple(p) for p in v] for k, v in self.history.items() if k not in ("images_per_s", "fid")}
        plot_curves(series, self.run_dir / "losses.png", title=f"{self.cfg.preset} losses")
        try:  # TensorBoard as well, when it is installed
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        with SummaryWriter(str(self.run_dir / "tb")) as tb:
            for s, k, v in rows:
                tb.add_scalar(k, v, s)

    def _evaluate(self) -> None:
        fid = float(self.eval_hook(self))
        self.history.setdefault("fid", []).append([self.step, fid])
        if self.best_fid is None or fid < self.best_fid:
            self.best_fid = fid
            self.save_checkpoint(self.run_dir / "checkpoints" / "best.pt")
        log.info("step %d: FID %.2f (best %.2f)", self.step, fid, self.best_fid)

    # ------------------------------------------------------------------ checkpoints
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
        fam = self.family
        unwrap = self.acc.unwrap_model
        art = GeneratorArtifact.from_dict(st, source)
        self._check_same_run(st, source)
        legacy = st.get("format") == LEGACY_FORMAT
        try:
            critics = st["nets"] if legacy else st["critics"]
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
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None and legacy and st.get("ema") is not None:
            self.ema.load_state_dict(st["ema"])
        elif self.ema is not None and art.ema is not None:
            self.ema.module.load_state_dict(art.ema[self.spec.main])
            self.ema.n_averaged.copy_(st["ema_n_averaged"])
        try:
            ranks = st.get("per_rank") or [{"sampler": st["rng"]["sampler"], "family": st.get("family", {})}]
            step, history = int(st["step"]), {k: [list(p) for p in v] for k, v in st["history"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{show_path(source)}: incomplete training checkpoint (no usable {e})") from e
        if len(ranks) == self.acc.num_processes:  # same world size: every process continues its own streams
            mine = ranks[self.acc.process_index]
            self.sampler.set_state(mine["sampler"])
            if "ambient" in mine:
                self._ambient = dict(mine["ambient"])
            fam.load_state(mine.get("family", {}))
        else:
            log.warning("checkpoint from %d process(es), resumed on %d: random streams start afresh from the seed",
                        len(ranks), self.acc.num_processes)  # fmt: skip
        self.step = step
        self.images_seen = int(st.get("images_seen", 0))
        self.history = history
        self.best_fid = st.get("best_fid")
        if self._graph is not None:  # the optimisers' state tensors are new: warm up and capture again
            self._graph = StepGraph(self)

    def resume(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_checkpoint(path), path)


# Settings a resume may change: how long the run goes on and how it runs, not what it computes
RESUME_FREE = frozenset({"steps", "epochs", "device", "threads", "amp", "channels_last", "compile", "cuda_graphs",
                         "log_every", "sample_every", "ckpt_every", "fid_every", "fid_n", "sample_batch"})  # fmt: skip


def changed_settings(a: dict, b: dict) -> list[str]:
    """The fields two resolved configs (``to_dict``) differ in, but for what a resume may change."""
    return sorted(k for k in a.keys() | b.keys() if k not in RESUME_FREE and a.get(k) != b.get(k))


def config_from_checkpoint(st: dict) -> TrainConfig:
    return from_dict(TrainConfig, st["config"])


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True):
    """(generator network in eval mode, TrainConfig, artifact dict): the trainer's view of a checkpoint.
    Sampling code uses :func:`cxraug.models.artifact.load_generator` instead."""
    fam = load_family(path, device, use_ema)
    return fam.net, from_dict(TrainConfig, fam.config), fam.artifact.to_dict()
