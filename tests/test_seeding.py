"""Independent random streams (cxraug.seeding).

The bug this guards against: networks were initialised from ``torch.manual_seed(seed)`` and synthesis draws
its noise from ``torch.Generator().manual_seed(seed)``: the same integer gives the same numbers. StyleGAN2's
mapping layer, ``randn(w_dim, z_dim)`` at seed 0, then had as weight rows exactly the first 128 latent
vectors that ``cxraug synthesize`` draws with its default ``--seed 0``; those images came out saturated
(3x the pixels at +-1 of any other seed on the covid-cxnet 64 px run of BENCHMARKS.md section 9).

The reference: independent standard-normal vectors in d dimensions have cosine similarity with mean 0 and
standard deviation 1/sqrt(d); independent streams share no run of values.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import gan_cfg
from cxraug.families import make_training
from cxraug.seeding import seeded_init, stream_seed


def _stream_heads(m: int, seeds=range(4)) -> list[torch.Tensor]:
    """The first ``m`` normal and uniform draws of a fresh CPU generator per small seed: what a user's
    ``--seed 0..3`` (synthesis, the FID hook's seed 0) feeds a sampler."""
    out = []
    for s in seeds:
        out.append(torch.randn(m, generator=torch.Generator().manual_seed(s)))
        out.append(torch.rand(m, generator=torch.Generator().manual_seed(s)))
    return out


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm() + 1e-30))


def test_stylegan2_mapping_rows_are_not_the_latents_synthesis_draws():
    """The mechanism of the saturated seed-0 images: every mapping weight row against the first 256 latents
    of seeds 0-3, in 128 dimensions. Independent: |cos| has sd 1/sqrt(128) = 0.088, so over 4 x 256 x 128
    pairs the largest is about 0.4 (a 0.6 bound is 6.8 sd). The old code gave cos = 1.000 for seed 0."""
    cfg = gan_cfg("stylegan2-ada-64", data={"size": 32}, width=4, z_dim=128, w_dim=128, map_layers=1, seed=0)
    fam = make_training(cfg, 0)
    w = next(p for n, p in fam.G.named_parameters() if p.dim() == 2).detach()  # the first mapping layer
    assert tuple(w.shape) == (128, 128)
    wn = w / w.norm(dim=1, keepdim=True)
    for s in range(4):
        z = torch.randn(256, 128, generator=torch.Generator().manual_seed(s))  # as synth.generate draws them
        cos = (z / z.norm(dim=1, keepdim=True)) @ wn.T
        assert cos.abs().max() < 0.6, f"seed {s}: a mapping row is the latent synthesis draws ({cos.abs().max():.3f})"
    assert 6 * (1 / math.sqrt(128)) < 0.6


FAMILIES = {
    "dcgan-64": {},
    "wgan-gp-64": {},
    "cgan-64": {},
    "cyclegan-64": {},
    "stylegan2-ada-64": {"width": 4, "z_dim": 16, "w_dim": 16, "map_layers": 1},
    "ddpm-64": {"width": 16, "unet_mult": [1, 2], "unet_layers": 1, "unet_attention": [8]},
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_no_initial_weight_is_a_copy_of_a_sampling_stream(name):
    """For every trainable family, seed 0: no weight tensor's first 64 values are (an affine copy of) the first
    64 normal or uniform draws of seeds 0-3. Independent 64-value sequences have |corr| with sd 1/8; the bound
    0.9 is far above chance and far below the exact copy (corr 1) the old seeding produced."""
    cfg = gan_cfg(name, data={"size": 32}, seed=0, **FAMILIES[name])
    fam = make_training(cfg, 2)
    heads = _stream_heads(64)
    for net in fam.generators.values():
        for pname, p in net.named_parameters():
            v = p.detach().flatten()
            if v.numel() < 64 or float(v[:64].std()) == 0:
                continue  # constant inits (zeros, ones) hold no draws
            worst = max(abs(_corr(v[:64], h)) for h in heads)
            assert worst < 0.9, f"{name}: {pname} starts with a sampling stream's values (corr {worst:.3f})"


def test_streams_differ_per_name_seed_and_rank_and_are_stable():
    seeds = {stream_seed(s, n, r) for s in range(3) for n in ("init", "noise", "sampler") for r in range(2)}
    assert len(seeds) == 18 and all(0 <= s < 2**63 for s in seeds)
    assert not seeds & set(range(100_000))  # no small integer a user types
    assert stream_seed(0, "init") == stream_seed(0, "init")
    with pytest.raises(ValueError, match="unknown random stream"):
        stream_seed(0, "nosie")  # a misspelt stream must not silently get a seed of its own


def test_seeded_init_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    with seeded_init(0):
        a = torch.randn(5)
    assert torch.equal(torch.rand(3), expect)
    with seeded_init(0):
        assert torch.equal(torch.randn(5), a)
