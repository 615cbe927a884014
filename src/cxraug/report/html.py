"""``cxraug report STUDY_DIR`` -> one self-contained report.html (images embedded) + results.json."""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import numpy as np

from cxraug.io import write_text_atomic

log = logging.getLogger("cxraug.report")

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}.note{color:#666;font-size:13px}"""


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p class=note>({html.escape(alt)}: not available)</p>"
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"><figcaption class=note>{html.escape(alt)}</figcaption></figure>'


def _fmt(m: dict) -> str:
    if not np.isfinite(m.get("mean", np.nan)):
        return "–"
    ci = m.get("ci", np.nan)
    return f"{m['mean']:.3f}" + (f" ± {ci:.3f}" if np.isfinite(ci) else "")


def _table(rows: list[list[str]], header: list[str]) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def build_report(study_dir: str | Path, progress: bool = True) -> Path:
    from cxraug.classify.study import Study, load_study_config
    from cxraug.report import plots

    d = Path(study_dir)
    res = json.loads((d / "results.json").read_text())
    data = json.loads((d / "data.json").read_text())
    runs = res["runs"]
    full = [json.loads((d / "runs" / r["key"] / "result.json").read_text()) for r in runs]
    cfg = load_study_config(d / "config.yaml")
    fig = d / "figures"
    fig.mkdir(exist_ok=True)
    top = max(cfg.regimes)
    first = [r for r in full if r["regime"] == top and r["seed"] == cfg.seeds[0]]
    plots.learning_curves(first, fig / "learning_curves.png")
    binary = data.get("multilabel") or len(data["classes"]) == 2  # minority vs rest
    plots.confusion_matrices(first, [f"not {cfg.minority}", cfg.minority] if binary else data["classes"],
                             fig / "confusion.png")  # fmt: skip
    plots.roc_curves(first, fig / "roc.png")
    plots.confidence_plot(first, fig / "confidence.png")
    st = Study(cfg, d, progress=False)
    st.prepare()
    k = st.k_min
    te = st.split["test"]
    real_min = st.images[te][st.pos[te]]
    gan_key = next((r["key"] for r in first if r["protocol"] == "gan-aug"), first[0]["key"])
    model = st.model(gan_key)
    try:
        plots.gradcam_grid(model, real_min, st.syn, k, fig / "gradcam.png")
    except Exception as e:  # a plot must not sink the report
        log.warning("Grad-CAM failed: %s", e)
    x, y, syn = st.train_set("gan-aug" if st.syn is not None else "real", top, cfg.seeds[0])
    try:
        if st.multilabel:  # colour by the minority label
            y, names = (np.nan_to_num(y[:, k]) == 1).astype(int), [f"not {cfg.minority}", cfg.minority]
        else:
            names = data["classes"]
        plots.umap_plot(model, x, y, syn, names, fig / "umap.png")
    except Exception as e:
        log.warning("UMAP failed: %s", e)
    quality = None
    if st.syn is not None:
        from cxraug.metrics import evaluate_images
        from cxraug.metrics.memorization import closest_pairs_grid

        real_train_min = st.images[st.split["train"]][st.pos[st.split["train"]]]
        quality = evaluate_images(real_train_min, st.syn, cfg.features, progress=progress)
        closest_pairs_grid(real_train_min, st.syn, quality["memorization"], fig / "closest_pairs.png")
        res["quality"] = quality
    write_text_atomic(d / "results.json", json.dumps(res, indent=2, default=float))

    parts = [f"<html><head><meta charset=utf-8><title>cxraug report</title><style>{CSS}</style></head><body>",
             "<h1>cxraug benchmark report</h1>",
             f"<p class=note>model: {html.escape(cfg.model)} ({html.escape(full[0]['weights'])}); "
             f"{cfg.size}px; seeds {cfg.seeds}; epochs {cfg.epochs}; test split is real images only.</p>",
             "<h2>Data</h2>",
             _table([[c, str(data["counts"][c])] + [str(data["split_counts"][s][c]) for s in ("train", "val", "test")]
                     for c in data["classes"]], ["class", "images", "train", "val", "test"]),
             f"<p class=note>{data['patients']} patients; patient-level splits; {data['test_duplicates_removed']} "
             "test images removed as (near-)duplicates of training images. Classes drawn from different sources can "
             "differ in acquisition artefacts a classifier may learn; read results with that in mind.</p>"]  # fmt: skip
    if st.syn is not None:
        parts += ["<h2>Generator</h2>", _img(d / "synthetic_samples.png", "synthetic minority-class samples")]
    if quality:
        m = quality["memorization"]
        parts += [
            "<h2>Image quality</h2>",
            _table([[quality["features"], f"{quality['fid']:.3f}", f"{quality['kid_mean']:.4f} ± {quality['kid_std']:.4f}",
                     f"{quality['precision']:.3f}", f"{quality['recall']:.3f}", f"{quality['density']:.3f}",
                     f"{quality['coverage']:.3f}", str(quality["n_real"]), str(quality["n_fake"])]],
                   ["features", "FID", "KID", "precision", "recall", "density", "coverage", "n real", "n fake"]),
            "<p class=note>Real = minority-class training images. Numbers are comparable only within one extractor.</p>",
            "<h2>Memorization audit</h2>",
            f"<p>{m['n_flagged']} of {m['n_fake']} synthetic images flagged as near-copies of a training image "
            f"(pixel RMSE &lt; {m['thresholds']['pixel_rmse']} or feature distance &lt; "
            f"{m['thresholds']['feature_ratio']}× the real-to-real median). Median pixel RMSE to the nearest real "
            f"image: {m['pixel_rmse']['p50']:.3f}.</p>",
            _img(fig / "closest_pairs.png", "closest pairs: synthetic (top) and nearest real training image (bottom)"),
        ]  # fmt: skip
    parts.append("<h2>Benchmark</h2>")
    for regime, by_p in res["summary"]["table"].items():
        keys = list(next(iter(by_p.values())).keys())
        rows = [[p] + [_fmt(by_p[p][k]) for k in keys] for p in by_p]
        parts += [f"<h3>{float(regime) * 100:g} % of the training data</h3>", _table(rows, ["protocol", *keys])]
        pc = res["summary"]["paired_gan_vs_standard"].get(regime)
        if pc:
            parts.append("<p class=note>GAN-aug − standard-aug, paired by seed: " + "; ".join(
                f"{k}: {_fmt(v)} (p={v['p_value']:.3f})" for k, v in pc.items()) + "</p>")  # fmt: skip
    parts += ["<p class=note>mean ± 95 % CI (t) across seeds.</p>",
              f"<h2>Plots ({top * 100:g} % regime, seed {cfg.seeds[0]})</h2>",
              _img(fig / "learning_curves.png", "learning curves"), _img(fig / "confusion.png", "confusion matrices"),
              _img(fig / "roc.png", "ROC curves"), _img(fig / "confidence.png", "per-image confidence, minority class"),
              _img(fig / "gradcam.png", "Grad-CAM (GAN-aug model) on real and synthetic minority images"),
              _img(fig / "umap.png", "UMAP of classifier features, real vs synthetic"), "</body></html>"]  # fmt: skip
    return write_text_atomic(d / "report.html", "\n".join(parts))
