"""Checkpoints written by an earlier version load and sample the same (issue 29: the family/Trainer redesign must
keep every checkpoint working). ``tests/fixtures/checkpoints/`` holds one tiny generator artifact per family and the
images it sampled with seed 1 when it was written (``tests/fixtures/make_checkpoints.py``, run once, committed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxraug.families import GeneratorArtifact, load_generator

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
FAMILIES = sorted(json.loads((FIXTURES / "index.json").read_text())["families"])


def test_every_trainable_family_but_the_fixed_size_wgan_has_a_fixture():
    from cxraug.families import FAMILIES as REGISTERED

    trainable = {n for n, f in REGISTERED.items() if f.training is not None}
    assert set(FAMILIES) == trainable - {"wgan"}  # wgan: 16 MB network fixed by its paper (make_checkpoints.py)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_old_checkpoint_loads_and_samples_what_it_sampled_then(family):
    path = FIXTURES / f"{family}.pt"
    art = GeneratorArtifact.load(path)
    assert art.family == family
    fam = load_generator(path)
    src = None
    if fam.takes_source:  # the fixture translated two of its training phantoms: rebuild them exactly
        from cxraug.data.cache import build_cache
        from cxraug.data.phantom import phantom_collection
        from cxraug.data.preprocess import Preprocess

        ds = build_cache(phantom_collection({"normal": 6, "covid": 6}, size=32, seed=5), Preprocess(32),
                         cache_root=None, progress=False)  # fmt: skip
        src = torch.from_numpy(np.array(ds.images[:2])).float().div(127.5).sub(1).unsqueeze(1)
    imgs, _ = fam.sample(2, source=src, generator=torch.Generator().manual_seed(1))
    then = np.load(FIXTURES / f"{family}.npy")
    np.testing.assert_allclose(imgs.numpy(), then, rtol=0, atol=1e-4)
