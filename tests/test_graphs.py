"""CUDA graphs on a machine without CUDA: the engine says why it trains eagerly, and a checkpoint written by
a graphed run (capturable optimisers) resumes on the CPU. The graphed-vs-eager equality is in test_cuda.py."""

from __future__ import annotations

import torch

from conftest import gan_cfg
from cxraug.io import load_checkpoint, save_checkpoint
from cxraug.train.engine import Trainer
from cxraug.train.graphs import graph_blocker


def test_graphs_are_refused_off_cuda_with_the_reason(phantom_ds, tmp_path):
    tr = Trainer(gan_cfg("dcgan-64", steps=2, cuda_graphs=True, device="cpu"), phantom_ds, tmp_path, progress=False)
    assert tr._graph is None and "CUDA device" in graph_blocker(tr)
    assert not any(g.get("capturable") for g in tr.opt_g.param_groups)


def test_a_graphed_runs_checkpoint_resumes_on_the_cpu(phantom_ds, tmp_path):
    cfg = gan_cfg("wgan-gp-64", steps=2, ckpt_every=2, device="cpu")
    ckpt = Trainer(cfg, phantom_ds, tmp_path / "run", progress=False).fit()
    st = load_checkpoint(ckpt)
    for opt in ("opt_g", "opt_d"):  # as a CUDA-graph run saves them
        for group in st[opt]["param_groups"]:
            group["capturable"] = True
    save_checkpoint(st, ckpt)
    cfg.steps = 4
    tr = Trainer(cfg, phantom_ds, tmp_path / "run", progress=False)
    tr.resume(ckpt)
    assert not any(g["capturable"] for opt in (tr.opt_g, tr.opt_d) for g in opt.param_groups)
    before = {k: v.clone() for k, v in tr.family.G.state_dict().items()}
    tr.fit()  # a capturable Adam refuses CPU parameters
    assert tr.step == 4 and any(not torch.equal(before[k], v) for k, v in tr.family.G.state_dict().items())
