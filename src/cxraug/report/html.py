"""``cxraug report STUDY_DIR`` -> one self-contained report.html (images embedded) + results.json.

A pure function of the study's output folder: it reads config.yaml, data.json, results.json,
runs/*/result.json, the first seed's models and report_inputs.npz, and never the source data (the
study may have been copied elsewhere, its data moved away). Rendered with jinja2, autoescaped.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import jinja2
import numpy as np

from cxraug.config import load_yaml
from cxraug.errors import CXRAugError, show_path
from cxraug.io import write_text_atomic

log = logging.getLogger("cxraug.report")

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}.note{color:#666;font-size:13px}
.warn{background:#fff1f0;border:2px solid #c0392b;padding:.6em 1em;font-weight:600}.verdict{font-weight:600}"""

TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cxraug report</title><style>{{ css }}</style></head><body>
<h1>cxraug benchmark report</h1>
<p class="note">model: {{ cfg.model }} ({{ weights }}); {{ cfg.size }} px; seeds {{ cfg.seeds }}; epochs {{ cfg.epochs }};
operating point: {{ cfg.operating_point | default("fixed:0.5") }} on the validation split; standard augmentation: {{ cfg.standard_aug | default(["mild"]) | join(", ") }};
the test split is real images only.</p>
{% if conf.confounded %}<p class="warn">{{ conf.text }}</p>{% endif %}
{% if acq.flagged %}<p class="warn">{{ acq.text }}</p>{% endif %}
{% if power %}<p class="verdict">{{ power.text }}</p>{% endif %}
{% if headline %}<p class="verdict">{{ headline.text }}</p>{% endif %}
{% if doses %}<h2>How much synthetic data</h2>
{% for t in doses %}<p class="verdict">{{ t }}</p>{% endfor %}
{{ img("figures/dose_response.png", "test AUC and minority sensitivity against the number of synthetic (GAN-aug) or repeated (oversample) minority images per real one, mean and 95 % CI across seeds; grey: the strongest control; circled: the dose chosen on validation") }}
<p class="note">Each dose is an arm of its own (gan-aug@2x: two synthetic minority images per real minority training
image; oversample@2x: each real one repeated twice more), every arm of a regime and seed takes the same optimiser
steps; the dose compared with the controls is chosen on validation, each dose is also compared with oversample at the
same dose (exploratory, Holm-adjusted).</p>{% endif %}
{% if gen_note %}<p class="note">{{ gen_note }}</p>{% endif %}
<h2>Data</h2>
{{ table(data_rows, ["class", "images", "train", "val", "test"]) }}
<p class="note">{% if patients_known %}{{ data.patients }} patients (ids from the data); patient-level splits{% else %}<b>image-level
split: {{ unknown_patients }} of {{ listed }} images have no patient id in the data, so each counts as its own patient and
images of one patient may sit in train and test</b>{% endif %}; {{ data.test_duplicates_removed }} test images removed as
copies of training or validation images (the same radiograph, cropped, padded, rescaled or re-windowed or not). DeLong variance: {{ delong_variance }}.</p>
{% if acq.auc is defined %}<p class="note">Acquisition-cue check: image properties that are not anatomy predict {{ cfg.minority }}
with out-of-fold AUC {{ "%.3f"|format(acq.auc) }} (warning at {{ acq.threshold }}).</p>{% endif %}
<h3>Class × source</h3>
{{ table(source_rows, ["class"] + source_cols) }}
<p class="note">{% if conf.confounded %}Class and source are confounded (see the warning above).{% else %}No class is drawn
mostly from a source of its own.{% endif %} Classes drawn from different sources can differ in acquisition artefacts a
classifier may learn instead of the disease.</p>
{% if external %}<h3>External test sets</h3>
{{ table(external_rows, ["source", "path", "loaded", "same patient dropped", "copies dropped", "used"] + data.classes) }}
<p class="note">External images are never trained on and never used for early stopping or the threshold. An image of a
patient in the training or validation split, or a copy of one of their images (the same radiograph, cropped, padded,
rescaled, re-windowed, recompressed, rotated or flipped; cxraug.data.dedupe), is dropped. An external
set tests transfer only for what is new in it: positives from a new hospital scored against negatives from a training
source test the positives' shift but cannot rule out a source shortcut, since the negatives still look like training
data; only a set whose positives and negatives both come from a source never trained on can.</p>{% endif %}
{% if probes %}<h3>Probe sets</h3>
{{ table(probe_rows, ["regime", "protocol", "source", "images", "called " ~ cfg.minority ~ " (mean over seeds)", "median P(" ~ cfg.minority ~ ")"]) }}
<p class="note">Images of known label, never trained on. Negatives from the positive class's own source that are called
positive are evidence that the classifier learnt the source.</p>{% endif %}
{% if has_gen %}<h2>Generator</h2>{{ img("synthetic_samples.png", "synthetic minority-class samples") }}{% endif %}
{% if quality %}<h2>Image quality</h2>
{{ table([[quality.features, "%.3f"|format(quality.fid), "%.4f ± %.4f"|format(quality.kid_mean, quality.kid_std),
  "%.3f"|format(quality.precision), "%.3f"|format(quality.recall), "%.3f"|format(quality.density),
  "%.3f"|format(quality.coverage), quality.n_real, quality.n_fake]],
  ["features", "FID", "KID", "precision", "recall", "density", "coverage", "n real", "n fake"]) }}
<p class="note">Real = minority-class training images. Numbers are comparable only within one extractor.</p>
{% if quality.get("floor") %}{% set fl = quality.floor %}
{{ table([["real vs real", "%.3f"|format(fl.real.fid), "[%.3f, %.3f]"|format(fl.real.ci95[0], fl.real.ci95[1])],
          ["generated", "%.3f"|format(fl.generated.fid), "[%.3f, %.3f]"|format(fl.generated.ci95[0], fl.generated.ci95[1])]],
  ["FID at the same n (" ~ fl.n_a ~ " vs " ~ fl.n ~ ")", "FID", "95 % CI"]) }}
<p class="note">The floor: {{ fl.split }} (A and B); FID(A, B) is what real images score at this n, FID(A, the first
|B| generated images) the generator's number beside it.</p>{% endif %}
{% if quality.get("spectral") %}{% set sp = quality.spectral %}
{% set rows = [] %}{% for part in ["all", "high"] %}{% set p = sp[part] %}{% set _ = rows.append([part ~ " radii (" ~ p.radii|join("–") ~ ")",
  "%.2f"|format(p.distance), "[%.2f, %.2f]"|format(p.ci95[0], p.ci95[1]), "%.2f (95th pct %.2f)"|format(p.floor.median, p.floor.p95)]) %}{% endfor %}
{{ table(rows, ["spectral check", "distance (dB)", "95 % CI", "real-vs-real floor"]) }}
<p class="note">Spectral check (training-free): RMS difference of the real and synthetic sets' radially integrated
power spectra (per image mean-free, Hann-windowed, share of power at each integer radius up to Nyquist, in dB),
{{ sp.size }} px, {{ sp.n_real }} real / {{ sp.n_fake }} synthetic images; "high": the top half of the radii, where
up-sampling, blur and JPEG leave their marks. Synthetic images within the floor are spectrally indistinguishable from
real at this n.</p>{% endif %}
<h2>Memorization audit</h2>
<p>{{ mem.n_flagged }} of {{ mem.n_fake }} synthetic images flagged as near-copies of a training image (pixel RMSE &lt;
{{ mem.thresholds.pixel_rmse }} or feature distance &lt; {{ mem.thresholds.feature_ratio }}× the real-to-real median).
Median pixel RMSE to the nearest real image: {{ "%.3f"|format(mem.pixel_rmse.p50) }}.</p>
{% if mem.get("three_sample") %}{% set t3 = mem.three_sample %}<p>Data-copying test (Meehan et al. 2020; synthetic vs held-out
real distances to the training set, {{ t3.n_generated }} / {{ t3.n_heldout }} / {{ t3.n_train }} images):
Z<sub>U</sub> = {{ "%.2f"|format(t3.z_u) }} (p = {{ "%.3g"|format(t3.p_copying) }}){% if t3.c_t is not none %},
C<sub>T</sub> = {{ "%.2f"|format(t3.c_t) }} over {{ t3.cells_used }} of {{ t3.cells }} cells (p = {{ "%.3g"|format(t3.c_t_p_copying) }}){% endif %}.
Strongly negative: copying; strongly positive: under-fitting.</p>{% endif %}
{{ img("figures/closest_pairs.png", "closest pairs: synthetic (top) and nearest real training image (bottom)") }}{% endif %}
<h2>Benchmark</h2>
{% for r in regimes %}<h3>{{ r.title }}</h3>
{% if r.best_control %}<p class="note">strongest non-generative control (best mean validation AUC): {{ r.best_control }}</p>{% endif %}
{% for v in r.verdicts %}<p class="verdict">{{ v }}</p>{% endfor %}
{% if r.augment %}<p class="note">augmented training sets (rule {{ r.augment_rule }}): synthetic images added per label and
each label's positive share of the training set, mean over seeds (min–max)</p>
{{ table(r.augment, ["protocol", "label", "synthetic positives added", "positive share of training set"]) }}{% endif %}
<p class="note">internal test split</p>
{{ table(r.rows, ["protocol"] + r.cols) }}
{% for e in r.external %}<p class="note">external: {{ e.name }}</p>{{ table(e.rows, ["protocol"] + e.cols) }}{% endfor %}
{% if r.pooled %}<p class="note">pooled test predictions, 95 % patient-bootstrap CI</p>{{ table(r.pooled, ["set", "protocol", "AUC", "PR-AUC", "sensitivity", "specificity"]) }}{% endif %}
{% for c in r.comparisons %}<p class="note">{{ c }}</p>{% endfor %}
{% endfor %}
<h2>Method</h2><p class="note">{{ method }}</p>
<h2>Plots ({{ top_pct }} % regime, seed {{ seed0 }})</h2>
{{ img("figures/learning_curves.png", "learning curves") }}{{ img("figures/confusion.png", "confusion matrices") }}
{{ img("figures/roc.png", "ROC curves") }}{{ img("figures/confidence.png", "per-image confidence, minority class") }}
{{ img("figures/reliability.png", "reliability (calibration) of P(minority) on the internal test split, every seed's scores") }}
{{ img("figures/gradcam.png", "Grad-CAM (GAN-aug model) on real and synthetic minority images") }}
{{ img("figures/umap.png", "UMAP of classifier features, real vs synthetic") }}
</body></html>
"""


def _fmt(m: dict) -> str:
    if not np.isfinite(m.get("mean", np.nan)):
        return "–"
    ci = m.get("ci", np.nan)
    return f"{m['mean']:.3f}" + (f" ± {ci:.3f}" if np.isfinite(ci) else "")


def _boot(b: dict | None) -> str:
    if not b or not np.isfinite(b.get("estimate", np.nan)):
        return "–"
    lo, hi = b["ci"]
    return f"{b['estimate']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def _env(d: Path) -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)

    def table(rows: list[list], header: list[str]) -> str:
        t = env.from_string("<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>"
                            "{% for r in rows %}<tr>{% for x in r %}<td>{{ x }}</td>{% endfor %}</tr>{% endfor %}</table>")  # fmt: skip
        return jinja2.utils.markupsafe.Markup(t.render(rows=rows, header=header))

    def img(rel: str, alt: str) -> str:
        p = d / rel
        if not p.is_file():
            return env.from_string('<p class="note">({{ alt }}: not available)</p>').render(alt=alt)
        b64 = base64.b64encode(p.read_bytes()).decode()
        t = env.from_string('<figure><img alt="{{ alt }}" src="data:image/png;base64,{{ b64 }}">'
                            '<figcaption class="note">{{ alt }}</figcaption></figure>')  # fmt: skip
        return jinja2.utils.markupsafe.Markup(t.render(alt=alt, b64=b64))

    env.globals.update(table=table, img=img)
    return env


def _read(d: Path, name: str) -> dict:
    p = d / name
    if not p.is_file():
        raise CXRAugError(f"{show_path(p)} is missing: is {show_path(d)} a finished study (cxraug benchmark)?")
    return json.loads(p.read_text())


def _figures(d: Path, cfg: dict, data: dict, first: list[dict], inputs: dict, reliability: dict | None = None) -> None:
    from cxraug.report import plots

    fig = d / "figures"
    fig.mkdir(exist_ok=True)
    plots.learning_curves(first, fig / "learning_curves.png")
    binary = data.get("multilabel") or len(data["classes"]) == 2  # minority vs rest
    plots.confusion_matrices(first, [f"not {cfg['minority']}", cfg["minority"]] if binary else data["classes"],
                             fig / "confusion.png")  # fmt: skip
    plots.roc_curves(first, fig / "roc.png")
    plots.confidence_plot(first, fig / "confidence.png")
    curves = (reliability or {}).get(str(first[0]["regime"]))
    if binary and curves:  # every seed's internal test scores of the top regime, per protocol (from results.json)
        plots.plot_reliability(curves, fig / "reliability.png")
    rows = [(name, inputs[img], inputs[heat]) for name, img, heat in
            (("real", "test_minority", "gradcam_real"), ("synthetic", "synthetic", "gradcam_synthetic"))
            if heat in inputs]  # fmt: skip
    if rows:
        plots.gradcam_grid(rows, fig / "gradcam.png")
    if "umap" in inputs:
        names = [f"not {cfg['minority']}", cfg["minority"]] if data.get("multilabel") else data["classes"]
        plots.umap_plot(inputs["umap"], inputs["umap_y"], inputs["umap_synthetic"], names, fig / "umap.png")


def _augment_rows(runs: list[dict]) -> tuple[list[list], str]:
    """Per protocol with synthetic images and per augment label: the synthetic positives each seed added and the
    label's share of that seed's training set, as mean (min–max) over seeds; and the rule."""
    by: dict = {}
    rule = ""
    for r in runs:
        aug = r.get("augment")
        if not aug or not r.get("n_synthetic"):
            continue
        rule = aug["rule"]
        for lab in aug["labels"]:
            by.setdefault((r["protocol"], lab), []).append((aug["synthetic_positives"][lab], aug["train_share"][lab]))

    def spread(v: list[float], f: str) -> str:
        return f"{np.mean(v):{f}} ({min(v):{f}}–{max(v):{f}})" if len(v) > 1 else f"{v[0]:{f}}"

    rows = [[p, lab, spread([a for a, _ in v], ".1f"), spread([b for _, b in v], ".3f")] for (p, lab), v in by.items()]
    return rows, rule


def _regime_view(regime: str, summary: dict, runs: list[dict] | None = None) -> dict:
    by_p = summary["table"][regime]
    keys = [k for k in next(iter(by_p.values())) if k != "threshold"] + ["threshold"]
    view: dict = {"title": f"{float(regime) * 100:g} % of the training data", "cols": keys,
                  "rows": [[p] + [_fmt(by_p[p].get(k, {})) for k in keys] for p in by_p], "external": [],
                  "pooled": [], "verdicts": [], "comparisons": []}  # fmt: skip
    view["augment"], view["augment_rule"] = _augment_rows([r for r in runs or [] if str(r["regime"]) == regime])
    view["best_control"] = summary.get("best_control", {}).get(regime)
    for name, tab in summary.get("external", {}).get(regime, {}).items():
        ek = list(next(iter(tab.values())))
        view["external"].append({"name": name, "cols": ek, "rows": [[p] + [_fmt(tab[p][k]) for k in ek] for p in tab]})
    for s, by in summary.get("pooled", {}).get(regime, {}).items():
        for p, b in by.items():
            view["pooled"].append([s, p] + [_boot(b.get(k)) for k in ("auc", "pr_auc", "sensitivity", "specificity")])
    for label, sets in summary.get("verdict", {}).get(regime, {}).items():
        for s, v in sets.items():
            view["verdicts"].append(f"{label} ({s} test): {v['text']}")
    for label, sets in summary.get("comparisons", {}).get(regime, {}).items():
        for s, c in sets.items():
            if "paired_seeds" not in c:
                continue
            ps, dl, bt = c["paired_seeds"], c["delong_pooled"], c["bootstrap_difference"]
            view["comparisons"].append(
                f"{label}, {s}: AUC difference per seed {[round(x, 3) for x in c['auc_difference_per_seed']]}, "
                f"mean {_fmt(ps)} (paired t p={ps.get('p_value', float('nan')):.3f}); DeLong on seed-averaged scores "
                f"{dl['difference']:+.3f} (p={dl['p_value']:.3f}, {dl.get('variance', 'image-level')} variance); per seed p="
                f"{[round(x['p_value'], 3) for x in c['delong_per_seed']]}; patient bootstrap {_boot(bt)}"
            )
    return view


def build_report(study_dir: str | Path, progress: bool = True) -> Path:
    """Render ``report.html`` from the study folder ``study_dir`` (``progress`` is accepted for symmetry
    with the other commands; rendering has nothing long to show)."""
    d = Path(study_dir)
    res, data = _read(d, "results.json"), _read(d, "data.json")
    cfg = load_yaml((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else res["config"]
    full = [_read(d / "runs" / r["key"], "result.json") for r in res["runs"]]
    top = max(cfg["regimes"])
    first = [r for r in full if r["regime"] == top and r["seed"] == cfg["seeds"][0]]
    npz = d / "report_inputs.npz"
    inputs = dict(np.load(npz)) if npz.is_file() else {}
    if first:
        _figures(d, cfg, data, first, inputs, res["summary"].get("reliability"))
    doses = res["summary"].get("dose_response") or {}
    if doses:
        from cxraug.report import plots

        (d / "figures").mkdir(exist_ok=True)
        plots.dose_response_plot(doses, d / "figures" / "dose_response.png")
    quality = json.loads((d / "quality.json").read_text()) if (d / "quality.json").is_file() else None
    if quality:
        res["quality"] = quality
        write_text_atomic(d / "results.json", json.dumps(res, indent=2, default=float))

    summary = res["summary"]
    table_cs = data.get("class_source_table", {})
    source_cols = sorted({s for row in table_cs.values() for s in row})
    probe_rows = []
    for r in full:
        for name, pr in (r.get("probe") or {}).items():
            probe_rows.append(
                (r["regime"], r["protocol"], name, pr["n"], pr["fraction_called_positive"], pr["median_score"])
            )
    agg: dict = {}
    for reg, p, name, n, frac, med in probe_rows:
        agg.setdefault((reg, p, name, n), []).append((frac, med))
    probe_table = [[f"{reg * 100:g} %", p, name, n, f"{np.mean([f for f, _ in v]):.2f}",
                    f"{np.median([m for _, m in v]):.3f}"] for (reg, p, name, n), v in agg.items()]  # fmt: skip
    ctx = {
        "css": CSS, "cfg": cfg, "data": data, "weights": full[0]["weights"] if full else "",
        "conf": summary.get("confounding") or data.get("confounding") or {"confounded": False, "text": ""},
        "data_rows": [[c, data["counts"][c]] + [data["split_counts"][s][c] for s in ("train", "val", "test")]
                      for c in data["classes"]],
        "source_rows": [[c] + [table_cs[c].get(s, 0) for s in source_cols] for c in table_cs],
        "source_cols": source_cols,
        "external": data.get("external", {}),
        "external_rows": [[n, e["path"], e["n_loaded"], e["dropped_same_patient"], e["dropped_near_duplicate"], e["n"]]
                          + [e["counts"].get(c, 0) for c in data["classes"]] for n, e in data.get("external", {}).items()],
        "probes": bool(probe_table), "probe_rows": probe_table,
        "has_gen": (d / "synthetic_samples.png").is_file(), "quality": quality, "mem": (quality or {}).get("memorization"),
        "regimes": [_regime_view(r, summary, full) for r in summary["table"]],
        "method": summary.get("method", ""), "top_pct": f"{top * 100:g}", "seed0": cfg["seeds"][0],
        "acq": data.get("acquisition") or {}, "power": summary.get("power") or data.get("power"),
        "headline": summary.get("headline"),
        "doses": [dr["text"] for _, dr in sorted(doses.items(), key=lambda kv: float(kv[0])) if dr.get("text")],
        "gen_note": summary.get("generator_variance", ""),
        "patients_known": (data.get("patient_ids") or {}).get("from_data", True),
        "unknown_patients": (data.get("patient_ids") or {}).get("unknown", 0),
        "listed": (data.get("patient_ids") or {}).get("listed", 0),
        "delong_variance": summary.get("delong_variance", ""),
    }  # fmt: skip
    html = _env(d).from_string(TEMPLATE).render(**ctx)
    return write_text_atomic(d / "report.html", html)
