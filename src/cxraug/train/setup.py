"""How a training run is set up: device, precision (autocast, loss scaling, channels_last), Accelerate/DDP, the
random streams, the family's networks with their optimisers and EMA, CUDA-graph capture and the preview inputs.
A mixin of :class:`cxraug.train.engine.Trainer` (it reads and sets the trainer's attributes)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cxraug.data.cache import CachedDataset
from cxraug.errors import CXRAugError
from cxraug.families.base import Family, make_training
from cxraug.models.common import pick_device
from cxraug.seeding import stream_seed
from cxraug.train.config import TrainConfig
from cxraug.train.graphs import StepGraph, graph_blocker

log = logging.getLogger("cxraug.train")

FIXED_SEED = 12345  # the preview grid's noise, labels and source images: the same in every run and step


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}


AMP_ENV = "CXRAUG_AMP"  # auto | bf16 | fp16 | no (fp32): overrides the hardware detection below


def default_amp(device: torch.device) -> str:
    """bf16 autocast where the hardware does bf16 natively: CUDA, and CPUs with AVX-512-BF16/AMX, where it
    measured faster than fp32 at 64 px with the same FID trajectory (BENCHMARKS.md §1). fp32 elsewhere.
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


class TrainerSetup:
    """The set-up half of the trainer: everything ``Trainer.__init__`` builds before the first step."""

    def _setup_device(self, cfg: TrainConfig) -> None:
        """Threads, device, autocast precision, loss scaler, channels_last, cuDNN autotuning."""
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
        # channels_last: on CUDA, and on CPUs under bf16, where oneDNN's bf16 convolutions prefer it (faster for
        # DCGAN-64 on top of bf16; within noise in fp32; BENCHMARKS.md §1)
        auto_cl = self.device.type == "cuda" or (self.device.type == "cpu" and self.amp == "bf16")
        self.channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and auto_cl)
        if self.device.type == "cuda":  # fixed shapes: cuDNN times its algorithms once (unless determinism is asked)
            torch.backends.cudnn.benchmark = not torch.backends.cudnn.deterministic

    def _setup_family(self, cfg: TrainConfig, data: CachedDataset) -> None:
        """This process's random streams, the family (its networks and losses) and its training images."""
        self.class_names = list(data.class_names)
        self.n_labels = len(self.class_names)
        rank = self.acc.process_index
        self.rng = torch.Generator(self.device).manual_seed(stream_seed(cfg.seed, "noise", rank))  # z, aug, eps
        # each process of a multi-GPU/multi-node run (`accelerate launch`) draws its own batches
        self.sampler = torch.Generator().manual_seed(stream_seed(cfg.seed, "sampler", rank))
        self._ambient = self._ambient_init(stream_seed(cfg.seed, "ambient", rank))
        self.family = make_training(cfg, self.n_labels, rng=self.rng, pool_seed=stream_seed(cfg.seed, "pool", rank))
        self.spec: type[Family] = self.family.spec
        self.data_a, self.data_b = self.family.select_data(data)
        self._on_device_a, self._on_device_b = self._resident(self.data_a), self._resident(self.data_b)

    def _setup_networks(self, cfg: TrainConfig) -> None:
        """Optimisers, device placement, EMA, the DDP wrappers (Accelerate), torch.compile, CUDA-graph capture."""
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
        if cfg.ema_decay > 0:
            self.ema = AveragedModel(self.main_generator, multi_avg_fn=self._ema_update, use_buffers=True)
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

    def _setup_previews(self, cfg: TrainConfig) -> None:
        """The preview grid's fixed inputs: 64 noise vectors with real label rows, 8 source images."""
        fixed = torch.Generator().manual_seed(FIXED_SEED)
        self.fixed_noise = torch.randn(64, cfg.z_dim, generator=fixed)
        lab = np.nan_to_num(self.data_a.labels)
        self.fixed_labels = torch.from_numpy(lab[torch.randint(len(lab), (64,), generator=fixed).numpy()])
        self.fixed_source = self.fixed_a = self.data_a.batch(
            torch.randint(len(self.data_a), (8,), generator=fixed).numpy()
        )
        if self._capturable:
            self._graph = StepGraph(self)

    def _ema_update(self, avg: list[torch.Tensor], cur: list[torch.Tensor], n_averaged) -> None:
        # Warm-up (as in timm/StyleGAN): a fixed 0.999 from step 0 averages the first, wildly different
        # weights and yields a near-constant generator for the first thousands of steps.
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        avg = [a for a in avg if a.is_floating_point()]
        cur = [c for c in cur if c.is_floating_point()]
        if avg:
            torch._foreach_lerp_(avg, cur, 1 - d)

    def _optimizer(self, nets: dict[str, nn.Module], lr: float, fused: bool) -> torch.optim.Optimizer:
        params = [p for m in nets.values() for p in m.parameters()]
        cap = self._capturable
        if self.cfg.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, capturable=cap)
        if self.cfg.optimizer == "adam":
            betas = (self.cfg.beta1, self.cfg.beta2)
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None, capturable=cap)
        raise CXRAugError(f"unknown optimizer {self.cfg.optimizer!r} (adam or rmsprop)")

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

