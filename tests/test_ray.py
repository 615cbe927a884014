"""The study grid on Ray (issue 28): a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster, one CPU
per node), a worker SIGKILLed in the middle of a task, and the finished study equal to the local executor's, number
for number. Ray is an optional extra (pip install 'cxraug[ray]') that `make test` installs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'cxraug[ray]' (make test installs it)")

from cxraug.classify.config import GanSpec, RaySpec, Source, StudyConfig  # noqa: E402
from cxraug.errors import CXRAugError  # noqa: E402


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    from cxraug.metrics.encoder import ConvEncoder, save_encoder

    p = tmp_path_factory.mktemp("enc") / "enc.safetensors"
    return f"encoder:{save_encoder(ConvEncoder(32, width=8), p)}"  # untrained: the report's plumbing only


def _cfg(encoder: str, **kw) -> StudyConfig:
    return StudyConfig(**({"sources": [Source("phantom:normal=60,covid=24")], "size": 32, "features": encoder,
                           "protocols": ["real", "oversample", "gan-aug"], "regimes": [1.0], "seeds": [0, 1],
                           "gan": GanSpec(steps=2, width=8, batch_size=16), "epochs": 1, "batch_size": 16,
                           "bootstrap": 20} | kw))  # fmt: skip


def _numbers(study: Path) -> dict:
    """Everything a study concluded, less wall times and where it ran: results.json and every run's result.json."""

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("seconds",)}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    res = json.loads((study / "results.json").read_text())
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted((study / "runs").glob("*/result.json"))}
    return strip({"summary": res["summary"], "runs": runs})


def test_study_on_a_two_node_ray_cluster_survives_a_killed_worker_and_equals_the_local_executor(
    tmp_path, encoder, monkeypatch
):
    from ray.cluster_utils import Cluster

    from cxraug.classify.study import Study

    monkeypatch.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: torch.zeros(len(x), 2).numpy())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task with cpus_per_run 1 runs on one thread: the same arithmetic
    try:
        Study(_cfg(encoder), tmp_path / "local", progress=False).run()
    finally:
        torch.set_num_threads(threads)

    marker = tmp_path / "killed-once"
    monkeypatch.setenv("CXRAUG_RAY_KILL_ONCE", str(marker))  # the first task to start SIGKILLs its worker
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cfg = _cfg(encoder, executor="ray", ray=RaySpec(cpus_per_run=1, max_retries=2))
        Study(cfg, tmp_path / "ray", progress=False).run()
        assert marker.is_file()  # a worker died mid-task and Ray ran the task again
        ex = json.loads((tmp_path / "ray" / "executor.json").read_text())
        assert len(ex["nodes"]) == 2  # tasks landed on both nodes
        assert any(k.startswith("gan:") for k in ex["tasks"])  # the generators trained as tasks too
        assert _numbers(tmp_path / "ray") == _numbers(tmp_path / "local")
        # the driver wrote the study folder: the same files as the local executor's, the generators' included
        local = {str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local").rglob("*") if p.is_file()}
        remote = {str(p.relative_to(tmp_path / "ray")) for p in (tmp_path / "ray").rglob("*") if p.is_file()}
        assert {p for p in local if "/checkpoints/" in p or p.startswith("runs/")} <= remote

        # --resume with the Ray executor: nothing to redo
        before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "runs").rglob("result.json")}
        Study(cfg, tmp_path / "ray", progress=False).run()
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "runs").rglob("result.json")} == before

        # a task's own CXRAugError stops the study with its one line, not a Ray traceback
        from cxraug.classify.executor import _unwrap

        @ray.remote(max_retries=0)
        def fails():
            raise CXRAugError("data/x.png: not an image")

        with pytest.raises(Exception) as info:
            ray.get(fails.remote())
        err = _unwrap(info.value)
        assert isinstance(err, CXRAugError) and str(err) == "data/x.png: not an image"
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_settings_are_checked_before_any_work(tmp_path):
    from cxraug.classify.study import Study

    for bad in ({"executor": "dask"}, {"executor": "ray", "ray": RaySpec(cpus_per_run=0)}):
        with pytest.raises(CXRAugError, match="executor|cpus_per_run"):
            Study(StudyConfig(**bad, protocols=["real", "oversample"]), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
