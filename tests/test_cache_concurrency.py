"""Concurrent cold builds of one cache (DDP ranks, parallel jobs on one machine) must all succeed and leave
exactly one copy. Four real processes start the same cold build at the same moment, for several rounds.

The processes come from a forkserver that imports torch and cxraug once (a fresh interpreter per worker
would spend seconds importing torch); each worker is still a separate OS process with its own file handles.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

N_PROCS, N_ROUNDS = 4, 6


def _worker(data: str, base: str, rounds: int, lock: bool, barrier, results) -> None:
    import contextlib

    from cxraug.data import cache
    from cxraug.data.cache import build_cache
    from cxraug.data.preprocess import Preprocess
    from cxraug.data.readers import read_folder

    if not lock:  # as where flock is unavailable: every process decodes, the atomic publish alone must hold
        cache._build_lock = lambda root, key: contextlib.nullcontext()

    for r in range(rounds):
        barrier.wait()  # the four start together
        try:  # a folder of PNGs: decoding them is the window in which the others also find no cache
            ds = build_cache(read_folder(data), Preprocess(32), cache_root=Path(base) / f"root-{r}", progress=False)
            results.put((r, "ok", np.asarray(ds.images).copy()))
        except BaseException as e:
            results.put((r, f"{type(e).__name__}: {e}", None))


@pytest.mark.parametrize("lock", [True, False], ids=["flock", "no-flock"])
def test_four_processes_build_one_cache_at_once(tmp_path, phantom_root, lock):
    from cxraug.data.cache import build_cache
    from cxraug.data.preprocess import Preprocess
    from cxraug.data.readers import read_folder

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["cxraug.data.cache", "cxraug.data.readers"])
    barrier, results = ctx.Barrier(N_PROCS, timeout=60), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(str(phantom_root), str(tmp_path), N_ROUNDS, lock, barrier, results))
        for _ in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(N_PROCS * N_ROUNDS)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    # reference: the same build done alone
    expect = build_cache(read_folder(phantom_root), Preprocess(32), cache_root=tmp_path / "alone", progress=False)
    failures = [(r, msg) for r, msg, _ in got if msg != "ok"]
    assert not failures, failures
    for _, _, images in got:
        np.testing.assert_array_equal(images, expect.images)
    key = Path(str(expect.images.filename)).parent.name
    for r in range(N_ROUNDS):
        root = tmp_path / f"root-{r}"
        copies = sorted(p.name for p in root.iterdir() if p.is_dir())
        assert copies == [key], copies  # one copy, no temporary folder left behind
        assert sorted(os.listdir(root / key)) == ["images.npy", "meta.json"]


def test_unwritable_cache_root_is_one_clear_error(tmp_path):
    """A cache root that cannot be created (here: a file is in the way) is a CXRAugError naming it, not an OSError."""
    from cxraug.data.cache import build_cache
    from cxraug.data.preprocess import Preprocess
    from cxraug.data.sample import Collection, Sample
    from cxraug.errors import CXRAugError

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    coll = Collection([Sample(np.zeros((40, 40), np.float32), np.ones(1, np.float32), "p", "real", "x")], ["a"])
    with pytest.raises(CXRAugError, match="cannot write cache .*cache"):
        build_cache(coll, Preprocess(32), cache_root=blocker, progress=False)
