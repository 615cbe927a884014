from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(
    os.environ.get("CXRAUG_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
).resolve()

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CXRAUG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def shared(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        pytest.skip(f"{p} not present (../shared/data is optional)")
    return p


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    from cxraug.data import write_phantom_folder

    return write_phantom_folder(
        tmp_path_factory.mktemp("phantom"), {"normal": 24, "covid": 12, "pneumonia": 12}, size=64, seed=1
    )


@pytest.fixture(scope="session")
def phantom_ds(tmp_path_factory):
    from cxraug.data.cache import build_cache
    from cxraug.data.phantom import phantom_collection
    from cxraug.data.preprocess import Preprocess

    coll = phantom_collection({"normal": 64, "covid": 64}, size=64, seed=3)
    return build_cache(coll, Preprocess(64), cache_root=tmp_path_factory.mktemp("pcache"), progress=False)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below root, to prove inputs were not touched."""
    out = {}
    for dp, _, fns in os.walk(root):
        for f in fns:
            p = os.path.join(dp, f)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def rand_u8(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


# Short real training runs, one per GAN family (the per-family overrides keep each run small).
FAMILY_CASES = {
    "dcgan-64": {},
    "wgan-clip-64": {"batch_size": 4},
    "wgan-gp-64": {},
    "cgan-64": {},
    "cyclegan-64": {"domain_a": "normal", "domain_b": "covid", "batch_size": 2},
}


def tiny_cache(tmp_path_factory, counts: dict[str, int], seed: int, size: int = 32):
    """Phantom images of ``counts`` per class, cached at ``size`` px: the small set of training-step tests."""
    from cxraug.data.cache import build_cache
    from cxraug.data.phantom import phantom_collection
    from cxraug.data.preprocess import Preprocess

    coll = phantom_collection(counts, size=size, seed=seed)
    return build_cache(coll, Preprocess(size), cache_root=tmp_path_factory.mktemp("tiny"), progress=False)


def gan_cfg(name: str, **kw):
    """A preset shrunk for tests: 24 steps of batch 16 at width 16; ``kw`` overrides any field."""
    from cxraug.config import from_dict
    from cxraug.train.config import TrainConfig, preset

    d = preset(name)
    d.update(steps=24, batch_size=16, width=16, log_every=4, sample_every=12, ckpt_every=12, seed=0, n_blocks=2)
    d.update(kw)
    return from_dict(TrainConfig, d)
