"""Where a study's runs execute: here, one after another (``executor: local``), or as Ray tasks on this machine or
a cluster (``executor: ray``; docs/ray.md).

On Ray, every GAN training and every classifier run is a task with the resources of the config's ``ray:`` block.
A classifier run that needs a generator takes the generator task's output as an argument, so Ray starts it when
that generator is trained and the grid runs as its dependencies allow. A task works in a scratch folder of its own
on whichever node it lands on: the study's prepared state (images, splits, held-out sets) comes through Ray's object
store, the generator's files as bytes, and the files the task writes come back as bytes; **only the driver writes
the study folder**, at the same paths and with the same fingerprints as the local executor, so ``--resume`` works
the same with either. Results are the same as the local executor's, to the bit, when every run has the same number
of CPU threads (``cpus_per_run`` on Ray; torch splits its reductions by thread, so 1 and 2 threads differ in the
last bits). A task whose worker process dies (SIGKILL, a lost node) is retried by Ray up to ``max_retries`` times;
a :class:`~cxraug.errors.CXRAugError` raised in a task stops the study with its one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxraug.classify.config import SYNTHETIC_PROTOCOLS, split_arm
from cxraug.errors import CXRAugError
from cxraug.io import atomic_path, crash_hook, write_json

# a prepared cxraug.classify.study.Study (the study module calls this one: no import back, not even for the type)
Study = Any

Job = tuple[str, float, int]  # (arm, regime, seed)
Files = dict[str, bytes]  # path relative to the study folder -> content


def run_local(study: Study, jobs: list[Job], progress: bool) -> list[dict]:
    """Today's executor: each run in turn, in this process."""
    from tqdm.auto import tqdm

    results, n_new = [], 0
    for job in tqdm(jobs, desc="benchmark", unit="run", disable=not progress):
        reused = study.finished(*job) is not None
        results.append(study.run_one(*job))
        if not reused:
            n_new += 1
            crash_hook("after-run", n_new)
    return results


# ---------------------------------------------------------------------------------------------------------- Ray
def _ray():
    try:
        import ray
    except ImportError:
        raise CXRAugError("executor: ray needs Ray: pip install 'cxraug[ray]' (or pip install ray)") from None
    return ray


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _in_scratch(study: Study, files: list[Files], fn: Callable[[Study], Any], threads: int) -> tuple[Any, Files]:
    """Run ``fn`` on a copy of the study whose folder is a fresh scratch folder seeded with ``files``; returns
    (what fn returned, every file it wrote there, as bytes)."""
    import torch

    torch.set_num_threads(max(1, threads))
    scratch = Path(tempfile.mkdtemp(prefix="cxraug-task-"))
    try:
        for part in files:
            for rel, data in part.items():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                (scratch / rel).write_bytes(data)
        before = _snapshot(scratch)
        study.dir, study.progress = scratch, False
        study._syn_cache, study._syn_labels, study._ckpt_hash, study._ready = {}, {}, {}, set()
        out = fn(study)
        after = _snapshot(scratch)
        return out, {rel: (scratch / rel).read_bytes() for rel, st in after.items() if before.get(rel) != st}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _fault_once() -> None:
    """Test hook for the fault-tolerance test: with ``CXRAUG_RAY_KILL_ONCE=PATH``, the first task to get here
    creates PATH and SIGKILLs its own worker process (Ray retries the task in another)."""
    import signal

    marker = os.environ.get("CXRAUG_RAY_KILL_ONCE")
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def _gan_task(study: Study, regime: float, seed: int, threads: int) -> tuple[str, Files]:
    """Train the (regime, seed) run's generator and draw the study's synthetic pool from it; returns (the node it
    ran on, the generator's folder as files)."""

    def work(st: Study) -> None:
        st.generator_for(regime, seed)
        st.synthetic_for(regime, seed)
        for k in st.aug_k[1:]:  # a conditional generator's other augment labels
            st.synthetic_for(regime, seed, label=k)

    _fault_once()
    _, files = _in_scratch(study, [], work, threads)
    return _node(), files


def _run_task(study: Study, job: Job, threads: int, *files: Files) -> tuple[str, dict, Files]:
    """One classifier run, given its generator's files (if it needs one)."""
    _fault_once()
    res, out = _in_scratch(study, list(files), lambda st: st.run_one(*job), threads)
    return _node(), res, out


def _write(root: Path, files: Files) -> None:
    """The driver's half: files a task made, written atomically into the study folder (result.json last: its
    presence marks a run complete)."""
    for rel in sorted(files, key=lambda r: r.endswith("result.json")):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(files[rel])


def _read_tree(root: Path, folder: Path) -> Files:
    return {str(p.relative_to(root)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _unwrap(e: Exception) -> Exception:
    """A task's CXRAugError as its one line, not a Ray traceback wall."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, CXRAugError) else e


def _files_part(out: tuple[str, Files]) -> Files:
    return out[1]


def run_ray(study: Study, jobs: list[Job], progress: bool) -> list[dict]:
    """The grid as Ray tasks (see the module's docstring). Writes ``STUDY/executor.json``: where each task ran
    and how long the grid took (not part of any result)."""
    from tqdm.auto import tqdm

    ray = _ray()
    spec = study.cfg.ray
    started = False
    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("CXRAUG_")}  # e.g. CXRAUG_AMP, on every node
        ray.init(address=spec.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env} if env else None)  # fmt: skip
        started = True
    t0 = time.perf_counter()
    threads = max(1, int(spec.cpus_per_run))
    opts = {"num_cpus": spec.cpus_per_run, "num_gpus": spec.gpus_per_run, "max_retries": spec.max_retries}
    gan_remote, run_remote = ray.remote(_gan_task).options(**opts), ray.remote(_run_task).options(**opts)
    files_part = ray.remote(_files_part).options(num_cpus=0)
    try:
        study_ref = ray.put(_portable(study))
        gen_files: dict[str, Any] = {}  # generator folder -> ObjectRef of its files
        waiting: dict[Any, tuple[str, Any]] = {}
        for arm, regime, seed in jobs:
            if not study.cfg.gan or split_arm(arm)[0] not in SYNTHETIC_PROTOCOLS:
                continue
            key = str(study.gan_plan(regime, seed)[0].relative_to(study.dir))
            if key in gen_files:
                continue
            if study.generator_ready(regime, seed):
                study.synthetic_for(regime, seed)  # its pool, drawn here once if an earlier run did not
                gen_files[key] = ray.put(_read_tree(study.dir, study.gan_plan(regime, seed)[0]))
            else:
                ref = gan_remote.remote(study_ref, regime, seed, threads)
                waiting[ref] = ("gan", key)
                gen_files[key] = files_part.remote(ref)  # the runs wait on this: Ray starts them when it is done
        results: dict[Job, dict] = {}
        for job in jobs:
            old = study.finished(*job) if _generator_known(study, job) else None
            if old is not None:
                results[job] = old
                continue
            deps = []
            if study.cfg.gan and split_arm(job[0])[0] in SYNTHETIC_PROTOCOLS:
                deps = [gen_files[str(study.gan_plan(job[1], job[2])[0].relative_to(study.dir))]]
            waiting[run_remote.remote(study_ref, job, threads, *deps)] = ("run", job)
        bar = tqdm(total=len(jobs), initial=len(results), desc="benchmark (ray)", unit="run", disable=not progress)
        where: dict[str, str] = {}
        n_new = 0
        while waiting:
            (ref,), _ = ray.wait(list(waiting), num_returns=1)
            kind, what = waiting.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as e:  # a task's own error, unwrapped to its one line
                raise _unwrap(e) from None
            _write(study.dir, out[-1])
            if kind == "gan":
                where[f"gan:{what}"] = out[0]
                continue
            results[what] = out[1]
            where[study.key(*what)] = out[0]
            bar.update()
            n_new += 1
            crash_hook("after-run", n_new)
        bar.close()
        write_json(study.dir / "executor.json", {"executor": "ray", "cpus_per_run": spec.cpus_per_run,
                                                 "gpus_per_run": spec.gpus_per_run, "nodes": sorted(set(where.values())),
                                                 "tasks": where, "seconds": time.perf_counter() - t0})  # fmt: skip
        return [results[j] for j in jobs]
    finally:
        if started:
            ray.shutdown()


def _generator_known(study: Study, job: Job) -> bool:
    """Whether the driver can fingerprint the run without training anything: a run that needs a generator not
    trained yet is unfinished by definition."""
    if not study.cfg.gan or split_arm(job[0])[0] not in SYNTHETIC_PROTOCOLS:
        return True
    return study.generator_ready(job[1], job[2])


def _portable(study: Study) -> Study:
    """A copy of the prepared study to send to the tasks: its state, without the driver's caches."""
    import copy

    st = copy.copy(study)
    st._syn_cache, st._syn_labels, st._ckpt_hash, st._ready = {}, {}, {}, set()
    return st


def run_grid(study: Study, jobs: list[Job], progress: bool) -> list[dict]:
    """The study's runs, by the configured executor, in ``jobs`` order."""
    if study.cfg.executor == "ray":
        return run_ray(study, jobs, progress)
    return run_local(study, jobs, progress)
