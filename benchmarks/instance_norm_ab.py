"""A/B of the instance-norm kernels in a WGAN-GP critic update, interleaved in one process.

    python benchmarks/instance_norm_ab.py [SIZE WIDTH BATCH REPEATS] [--threads N] [--clock cpu|wall]
                                         [--bf16] [--channels-last]

One update = critic on real and fake, the gradient penalty's double backward, Adam. Kernels:
``plain`` (cxraug's plain tensor ops), ``torch`` (``nn.InstanceNorm2d``), ``F`` (``F.instance_norm``,
what cxraug uses on CPU). Prints the median and minimum seconds per update. On a machine shared with
other work use ``--threads 1 --clock cpu`` (CPU time barely moves with contention). ``--bf16 --channels-last``
is the engine's route on a CPU with native bf16 (bf16 autocast, channels_last images and weights).
"""

from __future__ import annotations

import argparse
import time

import torch

import cxraug.models.common as common
from cxraug.families.losses import gradient_penalty
from cxraug.models import WGANGPCritic


class TorchIN(torch.nn.InstanceNorm2d):
    def __init__(self, ch: int):
        super().__init__(ch, affine=True)


def _kernel(fn):
    class Fixed(common.InstanceNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return fn(x, self.weight, self.bias, self.eps)

    return Fixed


KINDS = {"plain": _kernel(common.instance_norm_plain), "torch": TorchIN, "F": _kernel(common.instance_norm_native)}


def critic(kind: str, size: int, width: int) -> torch.nn.Module:
    orig = common.InstanceNorm2d
    common.InstanceNorm2d = KINDS[kind]  # norm2d builds the critic's norms from this name
    try:
        return WGANGPCritic(size=size, width=width)
    finally:
        common.InstanceNorm2d = orig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("args", nargs="*", type=int, help="SIZE WIDTH BATCH REPEATS (default 64 64 64 5)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast, as the engine on a CPU with native bf16")
    p.add_argument("--channels-last", action="store_true", help="channels_last images and critic weights")
    a = p.parse_args()
    size, width, batch, repeats = (a.args + [64, 64, 64, 5][len(a.args) :])[:4]
    if a.threads:
        torch.set_num_threads(a.threads)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    nets = {k: critic(k, size, width).to(memory_format=fmt) for k in KINDS}
    opts = {k: torch.optim.Adam(m.parameters(), 1e-4) for k, m in nets.items()}
    real = torch.randn(batch, 1, size, size).contiguous(memory_format=fmt)
    fake = torch.randn(batch, 1, size, size).contiguous(memory_format=fmt)

    def update(k: str) -> None:
        d = nets[k]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = d(fake).mean() - d(real).mean() + 10 * gradient_penalty(d, real, fake)
        opts[k].zero_grad()
        loss.backward()
        opts[k].step()

    times: dict[str, list[float]] = {k: [] for k in nets}
    for k in nets:
        update(k)  # warm-up
    for _ in range(repeats):
        for k in nets:
            t0 = clock()
            update(k)
            times[k].append(clock() - t0)
    print(f"WGAN-GP critic update, {size} px, width {width}, batch {batch}, {torch.get_num_threads()} thread(s), "
          f"{a.clock} clock, {'bf16 autocast' if a.bf16 else 'float32'}, "
          f"{'channels_last' if a.channels_last else 'contiguous'}")  # fmt: skip
    for k, v in times.items():
        v.sort()
        print(f"  {k:<6} median {v[len(v) // 2]:.3f} s   min {v[0]:.3f} s")


if __name__ == "__main__":
    main()
