"""A whole training step in one CUDA graph: the critic updates, the generator update, their optimiser steps
and (WGAN-GP) the penalty's double backward, replayed with one launch instead of thousands.

A step on a small GAN is bound by the host: Python, autograd and one kernel launch per op (BENCHMARKS.md
§6: at 64 px the H100's kernels are busy for 15-29 % of an eager step). CUDA graphs (NVIDIA; PyTorch's
"whole-network capture", https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs) record the step's
kernels once and replay them. What that needs, and how the engine gives it:

- static inputs: the training images are resident on the device (uint8), so a batch is a gather by
  indices. The indices are drawn on the host from the engine's sampler stream, in exactly the eager
  order, and copied into one static device buffer before each replay (pinned, double-buffered, no sync);
- static randomness: noise, augmentation parameters and the penalty's ``eps`` come from the family's
  device ``torch.Generator``, registered with the graph, so each replay draws fresh numbers and advances
  the generator exactly as the eager step would (same Philox offsets, so the same numbers);
- optimisers built ``capturable`` (their step counters on the device);
- autocast entered and left inside the capture, its cast cache on as in eager steps (bf16 rounds the same);
- the first ``warmup`` steps of a run (or after a resume) run eagerly through the same code path: the
  allocator and cuDNN settle before the capture, and they are real training steps, so nothing is rolled back.
  Capturing runs no kernel; the captured step is then replayed for that step and every later one.

The EMA update (its decay depends on the step number) and logging stay outside the graph. The step's
losses come out as one static tensor that is cloned after each replay. Eager and graphed training give
the same losses and weights for the same seed (tests/test_cuda.py).

Only where it can be exact: a CUDA device, one process, a family that declares ``graphable``, every
training image resident on the device, and no fp16 loss scaling (its inf checks sync with the host).
:func:`graph_blocker` names what stands in the way; the engine then trains eagerly and says why.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import torch


class Trainer(Protocol):
    """What a graphed step needs of the engine's ``Trainer`` (named here so this module does not import the engine)."""

    device: torch.device
    acc: Any  # accelerate.Accelerator
    cfg: Any  # TrainConfig
    family: Any  # the training family
    data_a: Any
    data_b: Any
    amp: str
    sampler: torch.Generator
    rng: torch.Generator
    _on_device_a: Any
    _on_device_b: Any

    @property
    def n_critic(self) -> int: ...

    def static_batches(self, idx: torch.Tensor) -> contextlib.AbstractContextManager[None]: ...

    def step_updates(self) -> dict[str, torch.Tensor]: ...


def graph_blocker(tr: Trainer) -> str | None:
    """Why ``tr``'s step cannot be captured in a CUDA graph, or None when it can."""
    if tr.device.type != "cuda":
        return f"CUDA graphs need a CUDA device (training runs on {tr.device.type})"
    if tr.acc.num_processes > 1:
        return "CUDA graphs are single-process here (multi-process training all-reduces through DDP)"
    if not getattr(tr.family, "graphable", False):
        return f"the {tr.cfg.family} family's step cannot be captured (host-side draws or branching)"
    if tr._on_device_a is None or (tr.data_b is not None and tr._on_device_b is None):
        return "the training images do not fit in a quarter of the GPU's free memory (batches come from the host)"
    if tr.amp == "fp16":
        return "fp16 loss scaling checks for infs on the host; use amp=bf16 or no"
    if tr.cfg.compile:
        return "compile=true and cuda_graphs=true are alternatives; pick one"
    return None


class StepGraph:
    """Runs :meth:`Trainer.step_updates` eagerly for ``warmup`` steps, then captures it once and replays it."""

    def __init__(self, tr: Trainer, warmup: int = 3):
        self.tr, self.eager_left = tr, warmup  # eager steps left before the capture
        self.sets = [tr.data_a] + ([tr.data_b] if tr.data_b is not None else [])
        n_draws = (tr.n_critic + 1) * len(self.sets)  # one batch per update and dataset, in the eager order
        b = tr.cfg.batch_size
        self.idx = torch.zeros(n_draws, b, dtype=torch.long, device=tr.device)  # [draws, B] static indices
        self.host = [torch.zeros(n_draws, b, dtype=torch.long).pin_memory() for _ in range(2)]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.keys: list[str] = []
        self.out: torch.Tensor | None = None  # [len(keys)] the captured step's losses

    def _stage_indices(self) -> None:
        """This step's batch indices from the sampler stream (as the eager step draws them) into ``idx``."""
        tr, buf = self.tr, self.host[self.turn]
        if self.copied[self.turn] is not None:  # the copy two steps ago from this pinned buffer has finished
            self.copied[self.turn].synchronize()
        b = tr.cfg.batch_size
        rows = [torch.randint(len(ds), (b,), generator=tr.sampler) for _ in range(tr.n_critic + 1) for ds in self.sets]
        torch.stack(rows, out=buf)
        self.idx.copy_(buf, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.copied[self.turn] = ev
        self.turn ^= 1

    def step(self) -> dict[str, torch.Tensor]:
        """One training step (without EMA): eager during warm-up, else a replay of the captured graph."""
        tr = self.tr
        self._stage_indices()
        if self.eager_left > 0:
            self.eager_left -= 1
            side = torch.cuda.Stream()  # warm-up off the default stream, as the capture will be
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), tr.static_batches(self.idx):
                logs = tr.step_updates()
            torch.cuda.current_stream().wait_stream(side)
            return logs
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return dict(zip(self.keys, self.out.clone().unbind(0)))

    def _capture(self) -> None:
        tr = self.tr
        g = torch.cuda.CUDAGraph()
        g.register_generator_state(tr.rng)  # the family's draws; torch's default generator is registered already
        with torch.cuda.graph(g), tr.static_batches(self.idx):
            logs = tr.step_updates()
            self.keys = sorted(logs)
            self.out = torch.stack([logs[k].float() for k in self.keys])
        self.graph = g
