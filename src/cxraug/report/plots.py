"""Benchmark plots: learning curves, confusion matrices, ROC, confidence, Grad-CAM, UMAP; drawn from
what the study saved (the heat maps and the embedding are computed by :mod:`cxraug.classify.explain`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from cxraug.plotting import new_figure, save_fig


def learning_curves(runs: list[dict], dest: Path) -> Path:
    fig = new_figure((3.2 * len(runs), 2.8))
    axes = fig.subplots(1, len(runs), squeeze=False)
    for ax, r in zip(axes[0], runs):
        ax.plot(r["curves"]["train_loss"], label="train")
        ax.plot(r["curves"]["val_loss"], label="val")
        ax.set_title(r["protocol"], fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=8)
    return save_fig(fig, dest)


def confusion_matrices(runs: list[dict], names: list[str], dest: Path) -> Path:
    fig = new_figure((2.8 * len(runs), 2.8))
    axes = fig.subplots(1, len(runs), squeeze=False)
    for ax, r in zip(axes[0], runs):
        cm = np.asarray(r["metrics"]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
        ticks = names if len(names) == len(cm) else ["neg", "pos"]
        ax.set_xticks(range(len(cm)), ticks, fontsize=7)
        ax.set_yticks(range(len(cm)), ticks, fontsize=7)
        ax.set_title(r["protocol"], fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
    return save_fig(fig, dest)


def roc_curves(runs: list[dict], dest: Path) -> Path:
    fig = new_figure((4, 4))
    ax = fig.subplots()
    for r in runs:
        if len(set(r["test_true"])) == 2:
            fpr, tpr, _ = roc_curve(r["test_true"], r["test_prob"])
            ax.plot(fpr, tpr, label=f"{r['protocol']} (AUC {r['metrics'].get('auc', float('nan')):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=7)
    return save_fig(fig, dest)


def confidence_plot(runs: list[dict], dest: Path) -> Path:
    """Per-image predicted probability for the minority-class test images (Zunair & Hamza)."""
    fig = new_figure((6, 3))
    ax = fig.subplots()
    for r in runs:
        p = np.asarray(r["test_prob"])[np.asarray(r["test_true"]) == 1]
        ax.plot(np.sort(p)[::-1], marker=".", lw=0.8, label=r["protocol"])
    ax.axhline(0.5, color="k", lw=0.6, ls="--")
    ax.set_xlabel("minority-class test images (sorted)")
    ax.set_ylabel("predicted probability")
    ax.legend(fontsize=7)
    return save_fig(fig, dest)


def gradcam_grid(rows: list[tuple[str, np.ndarray, np.ndarray]], dest: Path) -> Path:
    """Grad-CAM heat maps over their images: one row per (name, images [N,S,S] uint8, heat [N,S,S])."""
    fig = new_figure((12, 2.1 * len(rows)))
    axes = fig.subplots(len(rows), 6, squeeze=False)
    for r, (name, imgs, heat) in enumerate(rows):
        for c in range(6):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(imgs[c], cmap="gray")
                ax.imshow(heat[c], cmap="jet", alpha=0.35)
        axes[r][0].set_title(name, fontsize=9, loc="left")
    return save_fig(fig, dest)


def umap_plot(emb: np.ndarray, labels: np.ndarray, synthetic: np.ndarray, names: list[str], dest: Path) -> Path:
    """A UMAP embedding [N,2] of classifier features: real vs synthetic, per class."""
    fig = new_figure((5, 4))
    ax = fig.subplots()
    for k, c in enumerate(names):
        for syn, marker in ((False, "o"), (True, "x")):
            m = (labels == k) & (synthetic == syn)
            if m.any():
                ax.scatter(emb[m, 0], emb[m, 1], s=8, marker=marker, label=f"{c} ({'synthetic' if syn else 'real'})")
    ax.legend(fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_fig(fig, dest)


def plot_reliability(curves: dict[str, dict], path: str | os.PathLike) -> Path:
    """Reliability diagram (Guo et al., "On calibration of modern neural networks", ICML 2017): per protocol, the
    fraction of positives against the mean predicted probability of each bin, from
    :func:`cxraug.classify.calibration.reliability_curve`; marker area grows with the bin's image count, empty
    bins (count 0, NaN) are left out, and the diagonal is perfect calibration."""
    fig = new_figure((4, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    largest = max((max(c.get("count") or [0]) for c in curves.values()), default=0) or 1
    for name, c in curves.items():
        conf, acc = np.asarray(c["confidence"], float), np.asarray(c["accuracy"], float)
        count = np.asarray(c["count"], float)
        used = (count > 0) & np.isfinite(conf) & np.isfinite(acc)
        if not used.any():
            continue
        (line,) = ax.plot(conf[used], acc[used], lw=1.0, label=name)
        ax.scatter(conf[used], acc[used], s=8 + 72 * count[used] / largest, color=line.get_color(), zorder=3)
    ax.set_xlim(-0.02, 1.02)  # room for the markers of bins at 0 and 1
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction positive")
    ax.legend(fontsize=7)
    return save_fig(fig, path)


def dose_response_plot(doses: dict[str, dict], path: str | os.PathLike) -> Path:
    """How much synthetic data: per regime (a column of panels), test AUC (top) and minority sensitivity (bottom,
    binary studies) against synthetic images per real minority image, mean and 95 % t-CI across seeds, one line per
    protocol run at several doses (GAN-aug, and oversample: the same number of repeated real images); the strongest
    control's mean and CI as a grey band; the dose chosen on validation circled. From
    :func:`cxraug.classify.aggregate.dose_response` (results.json's ``dose_response``)."""
    regimes = sorted(doses, key=float)
    rows = [("auc", "metric")] + ([("sensitivity", "sensitivity_metric")] if any(
        doses[r].get("sensitivity_metric") for r in regimes) else [])  # fmt: skip
    fig = new_figure((3.6 * len(regimes), 2.9 * len(rows)))
    axes = fig.subplots(len(rows), len(regimes), squeeze=False)
    for j, reg in enumerate(regimes):
        dr = doses[reg]
        for i, (field, name) in enumerate(rows):
            ax = axes[i][j]
            ctrl = (dr.get("control") or {}).get(field)
            if ctrl and np.isfinite(ctrl["mean"]):
                half = ctrl["ci"] if np.isfinite(ctrl["ci"]) else 0.0
                ax.axhspan(ctrl["mean"] - half, ctrl["mean"] + half, color="0.85", zorder=0)
                ax.axhline(ctrl["mean"], color="0.5", lw=1, label=f"best control ({dr['control']['arm']})")
            for n, (p, pts) in enumerate(dr.get("curves", {}).items()):
                x = np.array([q["ratio"] for q in pts], float) * 1.05**n  # side by side: CIs do not hide each other
                m = np.array([q[field]["mean"] if q[field] else np.nan for q in pts], float)
                e = np.array([q[field]["ci"] if q[field] else np.nan for q in pts], float)
                bar = ax.errorbar(x, m, yerr=np.nan_to_num(e), marker="o", ms=4, capsize=3, lw=1.2, label=p)
                best = dr.get("best", {}).get(p)
                k = [q["arm"] for q in pts].index(best) if best in [q["arm"] for q in pts] else None
                if k is not None:
                    ax.plot(x[k], m[k], "o", ms=11, mfc="none", color=bar.lines[0].get_color())
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, -0.02), min(hi, 1.02))  # a t-CI may reach past what the metric can be
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({q["ratio"] for pts in dr.get("curves", {}).values() for q in pts}))
            ax.get_xaxis().set_major_formatter(_ratio_formatter())
            ax.set_title(f"{float(reg) * 100:g} % of the training data", fontsize=9)
            ax.set_ylabel(f"test {dr.get(name) or field}", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("synthetic (or repeated) per real minority image", fontsize=8)
    axes[0][0].legend(fontsize=7)
    return save_fig(fig, path)


def _ratio_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:g}")
