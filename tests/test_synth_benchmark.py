"""Synthesis, balancing, leakage guards, classifier metrics, tiny end-to-end study (issue 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cxraug.classify.metrics import binary_metrics, mean_ci, multiclass_metrics, paired_comparison
from cxraug.data.markers import is_marked_synthetic
from cxraug.data.splits import check_no_synthetic, patient_split
from cxraug.errors import LeakageError
from cxraug.synth.balance import plan_balance


def test_balance_equalize_and_skew():
    counts = {"normal": 100, "covid": 20, "pneumonia": 50}
    assert plan_balance(counts, "equalize") == {"covid": 80, "pneumonia": 50}
    assert plan_balance(counts, "equalize", only=["covid"]) == {"covid": 80}
    # skew = negatives / positives; covid: 150 negatives -> 150 positives for skew 1.0
    assert plan_balance(counts, "skew:1.0", only=["covid"]) == {"covid": 130}
    assert plan_balance(counts, "skew:3.0", only=["covid"]) == {"covid": 30}


def test_balance_fifteen_percent_rule_multilabel():
    # 200 images, multi-label positives per pathology (sum > total).
    counts = {"Edema": 80, "Effusion": 90, "Pneumothorax": 10, "Fracture": 4}
    plan = plan_balance(counts, "min-fraction:0.15", total=200)
    total = 200 + sum(plan.values())
    assert set(plan) == {"Pneumothorax", "Fracture"}
    for c in counts:
        assert (counts[c] + plan.get(c, 0)) / total >= 0.15 - 1e-9
    # minimal: one image fewer for any label and it would fall below 15 %
    for c, n in plan.items():
        assert (counts[c] + n - 1) / (total - 1) < 0.15


def test_synthetic_markers_and_manifest(tmp_path):
    import torch

    from cxraug.synth.write import write_manifest, write_synthetic

    ck = tmp_path / "g.pt"
    torch.save({"x": torch.zeros(1)}, ck)
    imgs = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    rows = write_synthetic(tmp_path / "out", imgs, np.array([[0, 1]] * 3, np.float32), class_names=["normal", "covid"],
                           checkpoint=ck, seed=7)  # fmt: skip
    write_manifest(tmp_path / "out", rows)
    p = rows[0]["path"]
    assert is_marked_synthetic(p)
    with Image.open(p) as im:
        assert im.text["cxraug:seed"] == "7" and len(im.text["cxraug:checkpoint"]) == 16
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(r["synthetic"] == "true" and r["label"] == "covid" for r in manifest)
    from cxraug.data.readers import read_csv_manifest

    coll = read_csv_manifest(tmp_path / "out" / "manifest.csv", label_col="label", patient_col="patient_id")
    assert all(s.synthetic for s in coll.samples)


def test_split_code_refuses_synthetic_images(tmp_path):
    real = tmp_path / "r.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(real)
    from cxraug.data.markers import png_info

    marked = tmp_path / "s.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(marked, pnginfo=png_info())
    check_no_synthetic(["real"], [str(real)])
    with pytest.raises(LeakageError):
        check_no_synthetic(["real"], [str(marked)])  # by PNG marker, even if the source says real
    with pytest.raises(LeakageError):
        check_no_synthetic(["synthetic"], [str(real)])  # by recorded source
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    with pytest.raises(LeakageError):
        patient_split(labels, ["a", "b", "c", "d"], sources=["real", "real", "synthetic", "real"])


def test_binary_metrics_match_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, s)
    pred = (s >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    m7 = binary_metrics(y, s, threshold=0.7)
    assert m7["recall"] == pytest.approx(skm.recall_score(y, s >= 0.7)) and m7["threshold"] == 0.7
    assert m7["auc"] == m["auc"]  # threshold-free
    assert m["false_negatives"] == int(((pred == 0) & (y == 1)).sum())
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_multiclass_metrics_match_sklearn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    p = rng.dirichlet(np.ones(3), 150)
    p[np.arange(150), y] += 0.5
    p /= p.sum(1, keepdims=True)
    m = multiclass_metrics(y, p, ["a", "b", "c"])
    pred = p.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["macro_precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    # specificity uses the same argmax rule as precision/recall (it used a 0.5 threshold per class)
    spec = [skm.recall_score(y != k, pred != k) for k in range(3)]
    assert m["macro_specificity"] == pytest.approx(np.mean(spec))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_metrics_of_a_one_class_set_leave_the_absent_class_unmeasured():
    """An external source holds one class: its specificity (positives only) or sensitivity (negatives only)
    is no measurement (NaN, not 0), and balanced accuracy is the mean recall over the classes present, as
    scikit-learn's balanced_accuracy_score computes it (it warns about the absent class)."""
    import warnings

    from sklearn import metrics as skm

    s = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    pred = (s >= 0.5).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_pos = skm.balanced_accuracy_score(np.ones(6, int), pred)  # 4/6
        ref_neg = skm.balanced_accuracy_score(np.zeros(6, int), pred)  # 2/6
        p3 = np.array([[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7]])
        ref_mc = skm.balanced_accuracy_score(np.full(4, 2), p3.argmax(1))  # 3/4
    pos = binary_metrics(np.ones(6, int), s)
    assert pos["sensitivity"] == pytest.approx(4 / 6) and np.isnan(pos["specificity"]) and np.isnan(pos["auc"])
    assert pos["balanced_accuracy"] == pytest.approx(ref_pos) == 4 / 6
    neg = binary_metrics(np.zeros(6, int), s)
    assert neg["specificity"] == pytest.approx(2 / 6) and np.isnan(neg["sensitivity"]) and np.isnan(neg["f1"])
    assert neg["balanced_accuracy"] == pytest.approx(ref_neg) == 2 / 6
    assert multiclass_metrics(np.full(4, 2), p3, ["a", "b", "c"])["balanced_accuracy"] == pytest.approx(ref_mc)


def test_float32_scores_meet_the_threshold_as_stored():
    """A float32 score of float32(0.7) = 0.699999988 is below the operating point 0.7, as the float64 copy in
    result.json that the pooled statistics compare is: numpy 2 compared float32 with the Python float in
    float32, where 0.7 rounds to that same value, and called it positive."""
    s32 = np.array([0.7, 0.9, 0.1, 0.2], np.float32)
    y = np.array([1, 1, 0, 0])
    stored = np.asarray(s32.tolist(), float)
    assert (stored[y == 1] >= 0.7).mean() == 0.5
    assert binary_metrics(y, s32, 0.7)["sensitivity"] == 0.5


def test_confidence_intervals_and_paired_test():
    from scipy import stats

    ci = mean_ci([0.8, 0.85, 0.9])
    assert ci["mean"] == pytest.approx(0.85)
    assert ci["ci"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.05 / np.sqrt(3))
    pc = paired_comparison([0.9, 0.8, 0.85], [0.8, 0.78, 0.8])
    assert pc["mean"] == pytest.approx(np.mean([0.1, 0.02, 0.05]))
    assert pc["p_value"] == pytest.approx(stats.ttest_rel([0.9, 0.8, 0.85], [0.8, 0.78, 0.8]).pvalue)


def test_tiny_end_to_end_study_report_and_resume(tmp_path, monkeypatch):
    from cxraug.classify.study import GanSpec, Source, Study, StudyConfig, check_generator_unseen
    from cxraug.io import load_checkpoint
    from cxraug.metrics.encoder import ConvEncoder, save_encoder
    from cxraug.report.html import build_report

    data = "phantom:normal=24,covid=12"
    enc = save_encoder(ConvEncoder(32, width=8), tmp_path / "enc.safetensors")  # untrained: plumbing only
    cfg = StudyConfig(sources=[Source(data)], size=32, gan=GanSpec(steps=3, width=8, batch_size=8), regimes=[1.0],
                      seeds=[0], epochs=1, batch_size=16, bootstrap=20, features=f"encoder:{enc}")  # fmt: skip
    study = tmp_path / "study"
    monkeypatch.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: np.zeros((len(x), 2)))
    summary = Study(cfg, study, progress=False).run()
    (gan,) = list((study / "gans").iterdir())  # the study trained its generator on the training split only
    assert load_checkpoint(gan / "checkpoints" / "last.pt")["step"] == 3
    assert set(summary["table"]["1.0"]) == {"real", "standard-aug", "oversample", "class-weighted", "gan-aug",
                                            "synthetic-only"}  # the default protocols, the controls among them
    for m in summary["table"]["1.0"].values():
        assert {"accuracy", "precision", "recall", "specificity", "f1", "auc", "false_negatives"} <= set(m)
    assert "1.0" in summary["paired_gan_vs_standard"]
    assert set(summary["verdict"]["1.0"]) == {"gan-aug vs best-control", "gan-aug vs standard-aug", "gan-aug vs real"}
    # the test split is real only
    st = Study(cfg, study, progress=False)
    st.prepare()
    assert all(st.ds.sources[i] != "synthetic" for i in st.split["test"])
    _x, y, syn = st.train_set("gan-aug", 1.0, 0)
    assert syn.sum() > 0 and (y[syn] == st.k_min).all()
    n_seen = check_generator_unseen(gan / "checkpoints" / "last.pt", st.fp[st.split["test"]])  # does not raise
    assert n_seen == (st.y[st.split["train"]] == st.k_min).sum()
    # resumable: a second run redoes nothing
    import cxraug.classify.study as study_mod

    monkeypatch.setattr(study_mod, "fit_classifier", lambda *a, **k: (_ for _ in ()).throw(AssertionError("redone")))
    Study(cfg, study, progress=False).run()
    monkeypatch.undo()
    report = build_report(study, progress=False)
    html = report.read_text()
    for section in ("Data", "Generator", "Image quality", "Memorization audit", "Benchmark", "Method", "Plots"):
        assert f"<h2>{section}" in html
    assert "data:image/png;base64" in html
    res = json.loads((study / "results.json").read_text())
    assert {"summary", "runs", "quality", "config"} <= set(res)
    floor = res["quality"]["floor"]  # FID's real-vs-real floor at the same n, in the report beside FID
    assert f"FID at the same n ({floor['n_a']} vs {floor['n']})" in html


def test_minority_share_thins_only_the_training_minority(tmp_path):
    from cxraug.classify.study import Source, Study, StudyConfig

    base = dict(sources=[Source("phantom:normal=60,covid=60")], protocols=["real"], regimes=[1.0], seeds=[0])
    full = Study(StudyConfig(**base), tmp_path / "a", progress=False)
    full.prepare()
    thin = Study(StudyConfig(**base, minority_share=0.2), tmp_path / "b", progress=False)
    thin.prepare()
    k = thin.k_min
    n_min, n_all = (thin.y[thin.split["train"]] == k).sum(), len(thin.split["train"])
    assert abs(n_min / n_all - 0.2) < 0.03
    assert set(thin.split["train"]) < set(full.split["train"])
    for s in ("val", "test"):  # evaluation splits keep their natural balance
        assert np.array_equal(thin.split[s], full.split[s])
    assert json.loads((tmp_path / "b" / "data.json").read_text())["minority_train_unused"] > 0


def test_multilabel_head_learns_with_unknown_labels_masked():
    """Multi-label head (CheXpert style): per-label sigmoids, NaN labels ignored, per-label AUC."""
    import torch

    from cxraug.classify.metrics import multilabel_auc
    from cxraug.classify.models import build_classifier
    from cxraug.classify.train import fit_classifier, masked_bce, predict_proba

    rng = np.random.default_rng(0)
    n = 160
    y = rng.integers(0, 2, (n, 2)).astype(np.float32)
    x = rng.integers(0, 40, (n, 32, 32)).astype(np.uint8)
    x[:, :16, :] += (y[:, 0, None, None] * 150).astype(np.uint8)  # label 0: bright top half
    x[:, :, :16] += (y[:, 1, None, None] * 60).astype(np.uint8)  # label 1: brighter left half
    y_noisy = y.copy()
    y_noisy[rng.random((n, 2)) < 0.2] = np.nan  # unknown labels
    t = torch.tensor([[0.0, np.nan]])
    assert masked_bce(torch.tensor([[0.0, 100.0]]), t).item() == pytest.approx(np.log(2))  # NaN label ignored
    model, _ = build_classifier("lightweight", 2)
    model, curves = fit_classifier(model, x[:120], y_noisy[:120], x[120:], y_noisy[120:], epochs=15, lr=3e-3)
    assert np.isfinite(curves["train_loss"]).all()
    prob = predict_proba(model, x[120:], multilabel=True)
    assert prob.shape == (40, 2) and not np.allclose(prob.sum(1), 1)
    auc = multilabel_auc(y[120:], prob, ["a", "b"])
    assert auc["per_label_auc"]["a"] > 0.9 and auc["per_label_auc"]["b"] > 0.8


@pytest.mark.slow
def test_multilabel_study_from_a_chexpert_style_manifest(tmp_path):
    """Multi-label head in the study: minority = one pathology label; synthetic images are positive for
    it with the other labels unknown; per-label AUC reported; the report builds."""
    import csv

    from cxraug.classify.study import GanSpec, Source, Study, StudyConfig
    from cxraug.data import write_phantom_folder
    from cxraug.report.html import build_report

    root = write_phantom_folder(tmp_path / "img", {"normal": 40, "covid": 20, "pneumonia": 24}, size=64, seed=3)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "patient", "covid", "pneumonia", "opacity"])
        for p in sorted(root.rglob("*.png")):
            c = p.parent.name
            w.writerow([p, p.stem, int(c == "covid"), int(c == "pneumonia"), int(c != "normal")])
    from cxraug.metrics.encoder import ConvEncoder, save_encoder

    enc = save_encoder(ConvEncoder(32, width=8), tmp_path / "enc.safetensors")  # untrained: the report's plumbing only
    cfg = StudyConfig(sources=[Source(str(tmp_path / "labels.csv"))], minority="covid", regimes=[1.0], seeds=[0],
                      size=32, epochs=1, batch_size=16, gan=GanSpec(steps=3, width=8, batch_size=8), bootstrap=20,
                      features=f"encoder:{enc}")  # fmt: skip
    st = Study(cfg, tmp_path / "study", progress=False)
    with pytest.MonkeyPatch.context() as mp:  # numba's first UMAP compile: slow, not what is tested here
        mp.setattr("cxraug.classify.explain.umap_embedding", lambda m, x, seed=0: np.zeros((len(x), 2)))
        summary = st.run()
    assert st.multilabel and st.names == ["covid", "pneumonia", "opacity"]
    _x, y, syn = st.train_set("gan-aug", 1.0, 0)
    assert y.ndim == 2 and syn.sum() > 0
    assert (y[syn, 0] == 1).all() and np.isnan(y[syn, 1:]).all()  # other labels of synthetic images: unknown
    res = json.loads((tmp_path / "study" / "runs" / "gan-aug-r1-s0" / "result.json").read_text())
    assert set(res["metrics"]["per_label_auc"]) == {"covid", "pneumonia", "opacity"}
    assert {"auc", "recall", "specificity", "macro_auc"} <= set(summary["table"]["1.0"]["real"])
    assert (build_report(tmp_path / "study", progress=False)).is_file()
