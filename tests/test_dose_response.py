"""How much synthetic data helps (issue 31): ``synthetic_ratios`` as a study axis. Each dose is an arm of its own
(gan-aug@2x, and its control oversample@2x: the same number of repeated real images), every arm of a (regime, seed)
takes the same optimiser steps, the dose compared with the controls is chosen on validation, never on test, and the
report plots AUC and minority sensitivity against the dose."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxraug.classify.aggregate import aggregate, best_control, resolve_arm
from cxraug.classify.config import GanSpec, Source, StudyConfig, arm_name, split_arm, study_arms
from cxraug.classify.metrics import binary_metrics
from cxraug.errors import CXRAugError


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    from cxraug.metrics.encoder import ConvEncoder, save_encoder

    p = tmp_path_factory.mktemp("enc") / "enc.safetensors"
    return f"encoder:{save_encoder(ConvEncoder(32, width=8), p)}"  # untrained: the report's plumbing only


def test_arms_of_the_ratio_axis():
    assert study_arms(["real", "oversample", "gan-aug", "synthetic-only"], [2, 0.5]) == [
        "real", "oversample@0.5x", "oversample@2x", "gan-aug@0.5x", "gan-aug@2x", "synthetic-only"]  # fmt: skip
    assert study_arms(["real", "gan-aug"], []) == ["real", "gan-aug"]
    assert split_arm(arm_name("standard-aug+gan-aug", 0.25)) == ("standard-aug+gan-aug", 0.25)
    assert split_arm("class-weighted") == ("class-weighted", None)


@pytest.mark.parametrize("kw", [{"synthetic_ratios": [0.0, 1.0]}, {"synthetic_ratios": [1.0, 1.0]},
                                {"synthetic_ratios": [50.0]}, {"synthetic_ratios": [float("nan")]},
                                {"synthetic_ratios": [1.0], "augment_rule": "min-fraction:0.15"},
                                {"synthetic_ratios": [1.0], "protocols": ["real", "class-weighted"]}])  # fmt: skip
def test_bad_ratio_axes_are_refused_before_any_work(kw, tmp_path):
    from cxraug.classify.study import Study

    cfg = StudyConfig(**({"gan": GanSpec(steps=1), "protocols": ["real", "gan-aug"]} | kw))
    with pytest.raises(CXRAugError, match="synthetic_ratios"):
        Study(cfg, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def _run(arm: str, seed: int, quality: float, val_auc: float, y: np.ndarray, noise: np.ndarray) -> dict:
    sc = quality * y + noise
    prob = 1 / (1 + np.exp(-sc))
    return {"key": f"{arm}-r0.1-s{seed}", "protocol": arm, "ratio": split_arm(arm)[1], "regime": 0.1, "seed": seed,
            "threshold": 0.5, "metrics": binary_metrics(y, prob, 0.5), "external": {}, "test_prob": prob.tolist(),
            "test_true": y.tolist(), "validation": {"auc": val_auc}}  # fmt: skip


def test_the_dose_is_chosen_on_validation_and_compared_with_the_strongest_control():
    """gan-aug@4x is best on test but gan-aug@1x best on validation: the comparison with the strongest control uses
    the validation choice (choosing on test would bias it upwards); each dose is also compared with oversample at
    the same dose; the dose-response table holds every dose's test AUC, as an independent computation gives it."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60, int), np.zeros(140, int)]
    quality = {"real": 0.8, "oversample@1x": 1.0, "oversample@4x": 0.9, "gan-aug@1x": 1.1, "gan-aug@4x": 2.0}
    val = {"real": 0.70, "oversample@1x": 0.74, "oversample@4x": 0.72, "gan-aug@1x": 0.80, "gan-aug@4x": 0.75}
    difficulty = rng.normal(0, 1, len(y))
    runs = [_run(a, s, q, val[a] + 0.001 * s, y, difficulty + rng.normal(0, 0.3, len(y)))
            for s in range(4) for a, q in quality.items()]  # fmt: skip
    cfg = StudyConfig(regimes=[0.1], seeds=[0, 1, 2, 3], bootstrap=100, synthetic_ratios=[1.0, 4.0],
                      protocols=["real", "oversample", "gan-aug"])  # fmt: skip
    s = aggregate(runs, cfg, groups={"internal": [str(i) for i in range(len(y))]})
    by_p = {a: [r for r in runs if r["protocol"] == a] for a in quality}
    assert resolve_arm(by_p, "gan-aug") == "gan-aug@1x" and best_control(by_p) == "oversample@1x"
    head = s["comparisons"]["0.1"]["gan-aug vs best-control"]["internal"]
    assert (head["arm"], head["against"]) == ("gan-aug@1x", "oversample@1x")
    assert {"gan-aug@1x vs oversample@1x", "gan-aug@4x vs oversample@4x"} <= set(s["comparisons"]["0.1"])
    dr = s["dose_response"]["0.1"]
    assert dr["best"]["gan-aug"] == "gan-aug@1x" and dr["control"]["arm"] == "oversample@1x"
    from sklearn.metrics import roc_auc_score

    for pt in dr["curves"]["gan-aug"]:
        ref = np.mean([roc_auc_score(y, r["test_prob"]) for r in by_p[pt["arm"]]])
        assert pt["auc"]["mean"] == pytest.approx(ref, abs=1e-9) and pt["ratio"] == split_arm(pt["arm"])[1]
    assert "dose chosen on validation is 1 synthetic" in dr["text"] and "oversample@1x" in dr["text"]
    assert "gan-aug at 1x (the dose best on validation)" in s["headline"]["text"]


def test_phantom_study_runs_the_ratio_axis_end_to_end(tmp_path, encoder, monkeypatch):
    """A tiny phantom study with a real (two-step) GAN and ratios 0.5 and 2: each dose adds round(ratio x the real
    minority) images (synthetic for gan-aug, repeated real for oversample) at one step budget; the report leads
    with the dose-response plot; adding a ratio later reruns only the new arms."""
    import cxraug.classify.study as study_mod
    from cxraug.classify.study import Study
    from cxraug.report.html import build_report

    monkeypatch.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: np.zeros((len(x), 2), np.float32))
    kw = dict(sources=[Source("phantom:normal=120,covid=40")], size=32, protocols=["real", "oversample", "gan-aug"],
              gan=GanSpec(steps=2, width=8, batch_size=16), generator_seeds="shared", regimes=[1.0], seeds=[0, 1, 2],
              epochs=1, batch_size=32, bootstrap=50, features=encoder)  # fmt: skip
    st = Study(StudyConfig(**kw, synthetic_ratios=[0.5, 2.0]), tmp_path / "study", progress=False)
    summary = st.run()
    res = {(r["protocol"], r["seed"]): r for r in json.loads((st.dir / "results.json").read_text())["runs"]}
    arms = ["real", "oversample@0.5x", "oversample@2x", "gan-aug@0.5x", "gan-aug@2x"]
    assert {p for p, _ in res} == set(arms)
    for s in range(3):
        _, y_real, _ = st.train_set("real", 1.0, s)
        n_min = int((y_real == st.k_min).sum())
        for r in (0.5, 2.0):
            _, yg, sg = st.train_set(arm_name("gan-aug", r), 1.0, s)
            _, yo, so = st.train_set(arm_name("oversample", r), 1.0, s)
            assert sg.sum() == round(r * n_min) == len(yg) - len(y_real) and (yg[sg] == st.k_min).all()
            assert so.sum() == 0 and np.bincount(yo).tolist() == np.bincount(yg).tolist()
            assert res[(arm_name("gan-aug", r), s)]["n_synthetic"] == round(r * n_min)
            assert res[(arm_name("gan-aug", r), s)]["ratio"] == r
        assert len({res[(a, s)]["optimizer_steps"] for a in arms}) == 1
    val = {a: np.mean([res[(a, s)]["validation"]["auc"] for s in range(3)]) for a in arms}
    dr = summary["dose_response"]["1.0"]
    gan_val = {a: v for a, v in val.items() if a.startswith("gan-aug")}
    assert dr["best"]["gan-aug"] == max(gan_val, key=gan_val.get)
    ctrl_val = {a: v for a, v in val.items() if not a.startswith("gan-aug")}
    assert dr["control"]["arm"] == summary["best_control"]["1.0"] == max(ctrl_val, key=ctrl_val.get)
    assert [p["ratio"] for p in dr["curves"]["gan-aug"]] == [0.5, 2.0]
    html = build_report(st.dir, progress=False).read_text()
    assert (st.dir / "figures" / "dose_response.png").is_file()
    assert html.index("How much synthetic data") < html.index("<h2>Data</h2>")  # the report leads with it
    assert "dose chosen on validation" in html

    calls = []
    real_fit = study_mod.fit_classifier
    monkeypatch.setattr(study_mod, "fit_classifier", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    Study(StudyConfig(**kw, synthetic_ratios=[0.5, 2.0, 4.0]), tmp_path / "study", progress=False).run()
    assert len(calls) == 2 * 3  # gan-aug@4x and oversample@4x, three seeds: the other arms are reused
