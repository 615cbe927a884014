"""Independent random streams from one user seed.

A run's seed feeds several consumers: the networks' initial weights (torch's layer defaults draw from the
global CPU generator), the training noise (z, augmentations, diffusion's epsilon), the data sampler, the
image pool. If two of them are seeded with the *same integer* they produce the *same numbers*: a
StyleGAN2 mapping layer initialised with ``randn(w_dim, z_dim)`` from seed 0 has as its weight rows exactly
the first latent vectors that ``torch.Generator().manual_seed(0)`` draws at synthesis, so those images met a
pre-activation about sqrt(z_dim) times its usual size and came out visibly saturated (the mapping's
equalized learning rate, x0.01, keeps the rows nearly unchanged through training).

Each consumer therefore gets its own 63-bit seed, a hash of (stream name, seed, rank): no small integer a
user types (``--seed 0``, the FID hook's seed, the preview grid's) can coincide with another stream.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

__all__ = ["STREAMS", "seeded_init", "stream_seed"]

# one stream per kind of draw: weight init, training noise (z, augmentations, epsilon), data sampler, torch's
# global RNG during a step (dropout), CycleGAN's image pool
STREAMS = ("init", "noise", "sampler", "ambient", "pool")


def stream_seed(seed: int, stream: str, rank: int = 0) -> int:
    """A 63-bit seed for ``stream`` (one of ``STREAMS``) of process ``rank``, derived from the user's ``seed``
    by BLAKE2b: deterministic across machines and Python versions (unlike ``hash()``), distinct per stream
    and rank."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; one of {STREAMS}")
    digest = hashlib.blake2b(f"cxraug:{stream}:{int(seed)}:{int(rank)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Network initialisation from the ``init`` stream of ``seed`` (torch's layer defaults draw from the
    global CPU RNG), the caller's global RNG state given back afterwards: no global state changes."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(stream_seed(seed, "init"))
        yield
