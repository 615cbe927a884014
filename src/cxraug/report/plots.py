"""Benchmark plots: learning curves, confusion matrices, ROC, confidence, Grad-CAM, UMAP; drawn from
what the study saved (the heat maps and the embedding are computed by :mod:`cxraug.classify.explain`)."""

from __future__ import annotations

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
