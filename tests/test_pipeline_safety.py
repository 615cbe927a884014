"""Issue 7 across the later stages: leak-proof generators, a killed study resumes, read-only inputs,
cross-split duplicates removed with --dedupe."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import snapshot
from cxraug.cli import main
from cxraug.errors import LeakageError


@pytest.mark.slow
def test_study_refuses_a_generator_that_saw_test_images(tmp_path):
    from cxraug.classify.study import Source, Study, StudyConfig
    from cxraug.train import train

    data = "phantom:normal=40,covid=20"
    gan = train("dcgan-64", data, tmp_path / "gan", progress=False, cls="covid", steps=2, width=8, batch_size=8)
    cfg = StudyConfig(sources=[Source(data)], generator=str(gan / "checkpoints" / "last.pt"), regimes=[1.0],
                      seeds=[0], epochs=1)  # fmt: skip
    with pytest.raises(LeakageError, match=r"trained on \d+ image\(s\) of the test split"):
        Study(cfg, tmp_path / "study", progress=False).prepare()
    assert not (tmp_path / "study" / "runs").exists()


@pytest.mark.slow
def test_study_refuses_a_generator_that_saw_external_or_probe_images(tmp_path):
    """External and probe sets are evaluation sets too: a `generator:` trained on their images is refused
    (it was checked against the internal test split only), and one trained elsewhere is accepted."""
    from cxraug.classify.study import Source, Study, StudyConfig
    from cxraug.data import write_phantom_folder
    from cxraug.train import train

    other = write_phantom_folder(tmp_path / "hospital-b", {"normal": 6, "covid": 8}, size=64, seed=7)
    gan = train("dcgan-64", str(other), tmp_path / "gan", progress=False, cls="covid", steps=2, width=8,
                batch_size=4)  # fmt: skip
    ckpt = str(gan / "checkpoints" / "last.pt")
    base = {"sources": [Source("phantom:normal=24,covid=12")], "generator": ckpt, "size": 32, "regimes": [1.0],
            "seeds": [0], "epochs": 1}  # fmt: skip
    for kind in ("external_test", "probe"):
        cfg = StudyConfig(**base, **{kind: [Source(str(other / "covid"), name="b-covid", label="covid")]})
        with pytest.raises(LeakageError, match=r"trained on \d+ image\(s\) of the (external|probe) set b-covid"):
            Study(cfg, tmp_path / f"study-{kind}", progress=False).prepare()
    cfg = StudyConfig(**base, external_test=[Source(str(other / "normal"), name="b-normal", label="normal")])
    st = Study(cfg, tmp_path / "study-ok", progress=False)
    st.prepare()  # the generator saw none of b's normal images
    assert st.external["b-normal"]["n"] == 6


@pytest.mark.slow
def test_killed_study_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    import cxraug.classify.study as study_mod

    cfg = {"sources": [{"path": "phantom:normal=40,covid=16"}], "protocols": ["real", "standard-aug"],
           "regimes": [1.0], "seeds": [0, 1], "epochs": 1, "batch_size": 16}  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "cxraug", "benchmark", "--config", str(tmp_path / "study.yaml"),
           "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    env = {**os.environ, "CXRAUG_FAULT": "after-run:2"}
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (study,) = list((tmp_path / "out").iterdir())
    finished = sorted(p.parent.name for p in study.glob("runs/*/result.json"))
    assert len(finished) == 2
    calls = []
    real_fit = study_mod.fit_classifier
    # the report's UMAP (numba compiles it first: ~11 s per process) is not what this test is about
    monkeypatch.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: np.zeros((len(x), 2)))
    monkeypatch.setattr(study_mod, "fit_classifier", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    assert main(["benchmark", "--resume", str(study), "-q"]) == 0
    assert len(calls) == 2  # only the two unfinished runs
    res = json.loads((study / "results.json").read_text())
    assert len(res["runs"]) == 4


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_only(root: Path) -> None:
    for dp, _dns, fns in os.walk(root):
        for f in fns:
            os.chmod(os.path.join(dp, f), 0o444)
        os.chmod(dp, 0o555)


def _writable(root: Path) -> None:
    for dp, _dns, _fns in os.walk(root):
        os.chmod(dp, 0o755)


@pytest.mark.slow
def test_whole_pipeline_on_a_read_only_input_folder(phantom_root, tmp_path, capsys, monkeypatch):
    """split -> train (on the training split) -> evaluate -> synthesize -> balance -> benchmark -> report."""
    # the report's UMAP (numba compiles it first, ~11 s a process; the demo test runs the real one) is not tested here
    monkeypatch.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: np.zeros((len(x), 2)))
    ro = tmp_path / "input"
    shutil.copytree(phantom_root, ro)
    _read_only(ro)
    before = snapshot(ro)
    out = tmp_path / "runs"
    from cxraug.metrics.encoder import ConvEncoder, save_encoder

    enc = f"encoder:{save_encoder(ConvEncoder(64), tmp_path / 'enc.safetensors')}"  # untrained: plumbing only
    try:
        assert main(["data", "split", str(ro), "--dedupe", "--out", str(out), "-q"]) == 0
        (split,) = list(out.glob("split-*"))
        assert main(["train", "--preset", "dcgan-64", "--data", str(split / "train.csv"), "--class", "covid",
                     "--steps", "4", "--batch-size", "8", "--set", "width=8", "--out", str(out), "-q"]) == 0  # fmt: skip
        (gan,) = list(out.glob("train-*"))
        ckpt = gan / "checkpoints" / "last.pt"
        assert main(["evaluate", "--real", str(split / "test.csv"), "--fake", str(ckpt), "--class", "covid",
                     "--n", "32", "--features", enc, "--out", str(out), "-q"]) == 0  # fmt: skip
        assert main(["synthesize", "--checkpoint", str(ckpt), "--n", "5", "--out", str(out / "syn"), "-q"]) == 0
        assert main(["balance", "--data", str(ro), "--generator", str(ckpt), "--strategy", "equalize",
                     "--out", str(out), "-q"]) == 0  # fmt: skip
        study_yaml = tmp_path / "study.yaml"
        study_yaml.write_text(yaml.safe_dump({
            "sources": [{"path": str(ro)}], "generator": str(ckpt), "regimes": [1.0], "seeds": [0], "epochs": 1, "features": enc,
            "batch_size": 16}))  # fmt: skip
        assert main(["benchmark", "--config", str(study_yaml), "--out", str(out), "-q"]) == 0
        (study,) = list(out.glob("study-*"))
        assert main(["report", str(study), "-q"]) == 0
    finally:
        _writable(ro)
    assert snapshot(ro) == before  # nothing in the input changed, nothing was added
    assert (study / "report.html").is_file()
    (bal,) = list(out.glob("balance-*"))
    bj = json.loads((bal / "balance.json").read_text())
    assert bj["after"]["covid"] == max(bj["before"].values())  # the generator's class reached the largest
    added = sum(bj["added"].values())
    assert sum(r["synthetic"] == "true" for r in _csv(bal / "manifest.csv")) == added


def test_data_split_reports_and_removes_cross_split_duplicates(phantom_root, tmp_path, capsys):
    """Copies filed under other names: reported where they cross from train into test; with --dedupe each copy's
    patient joins its original's before splitting (issue 30), so no test image copies a training image."""
    from cxraug.data.imageio import read_image
    from cxraug.data.stats import fingerprints, min_hamming

    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    for f in sorted((data / "normal").iterdir())[:12]:  # the same radiograph filed again under another name
        shutil.copy(f, f.with_name("copy-" + f.name))
    counts, rows = {}, {}
    for dedupe in (False, True):
        out = tmp_path / f"out{dedupe}"
        assert main(["data", "split", str(data), "--out", str(out), "-q"] + (["--dedupe"] if dedupe else [])) == 0
        (run,) = list(out.iterdir())
        summary = json.loads((run / "summary.json").read_text())
        rows = {k: _csv(run / f"{k}.csv") for k in ("train", "val", "test")}
        counts[dedupe] = (sum(len(v) for v in rows.values()), len(summary["test_near_duplicates_of_train"]))
        assert len(summary["duplicate_pairs"]) == 12
        assert all(Path(r["path"]).is_absolute() for r in rows["test"])
    (n_all, n_dup), (n_all_dd, n_dup_dd) = counts[False], counts[True]
    assert n_dup > 0 and n_dup_dd == 0 and n_all == n_all_dd  # nothing dropped: the copies moved with their originals
    fp = {k: fingerprints(np.stack([(read_image(r["path"]) * 255).astype(np.uint8) for r in v]))
          for k, v in rows.items()}  # fmt: skip
    assert (min_hamming(fp["test"], fp["train"]) > 4).all()
    out = capsys.readouterr().out
    assert "test image(s) are copies of a training image, kept" in out and "joined before splitting" in out


@pytest.mark.slow
def test_demo_runs_end_to_end_offline(tmp_path, capsys):
    """`make demo` runs `cxraug demo`; here with fewer steps/epochs (the full one: BENCHMARKS.md)."""
    args = ["--steps", "20", "--width", "16", "--epochs", "1"]
    assert main(["demo", *args, "--out", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    (run,) = list(tmp_path.iterdir())
    assert (run / "study" / "report.html").is_file() and (run / "study" / "synthetic_samples.png").is_file()
    assert len(list((run / "study" / "gans").iterdir())) == 2  # one generator per training split
    assert "report:" in out and "AUC" in out and "threshold chosen on validation: youden" in out
    assert "FID (cxraug-cxr-v1)" in out  # the shipped feature space: nothing trained for the metrics
    # one seed and a handful of test images: the demo concludes nothing (it printed "better (CI ...)" before)
    verdicts = [x for x in out.splitlines() if " vs " in x]
    assert verdicts and not [x for x in verdicts if ": better" in x or ": worse" in x], out
    assert "cannot conclude" in out and "power:" in out and "Primary (pre-specified)" in out
