"""What the report shows about a study's models and synthetic images, computed by the study (which
may use models and metrics) and saved in its folder, so that the report only draws and writes:
Grad-CAM heat maps (Selvaraju et al., ICCV 2017, via pytorch-grad-cam), a UMAP embedding of the
classifier's penultimate features (McInnes et al., 2018), and image quality + memorization of the
synthetic minority images against the real minority training images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxraug.data.preprocess import u8_to_tensor
from cxraug.io import write_json

log = logging.getLogger("cxraug.classify")


def gradcam(model: torch.nn.Module, images_u8: np.ndarray, target: int) -> np.ndarray:
    """Grad-CAM of class ``target`` at the last convolution: heat maps [N,S,S] in [0,1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with GradCAM(model=model, target_layers=[layer]) as cam:
        x = u8_to_tensor(images_u8)  # [N,1,S,S] in [-1,1]
        return np.asarray(cam(input_tensor=x, targets=[ClassifierOutputTarget(target)] * len(x)), np.float32)


def umap_of(feats: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """UMAP embedding [N,2] of feature vectors [N,D] (see ``umap_reducer``)."""
    return umap_reducer(feats, seed, n_neighbors).embedding_.astype(np.float32)


def umap_reducer(feats: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> Any:
    """UMAP (McInnes et al., 2018) of feature vectors [N,D], fitted, on the exact Euclidean k-nearest-neighbour
    graph. scikit-learn computes that graph and umap-learn gets it as ``precomputed_knn``: the same neighbours
    umap-learn finds itself for fewer than 4,096 points (exactly, from all pairwise distances), without compiling
    its parallel numba k-NN kernel first (about 7 s of every process's first UMAP on a 2-core CPU). The reducer has
    no search index, so it embeds the points it was fitted on (``transform`` of new points is unavailable)."""
    import warnings

    import umap
    from sklearn.neighbors import NearestNeighbors

    feats = np.asarray(feats, np.float32)
    if n_neighbors < 2:
        raise ValueError(f"UMAP needs n_neighbors >= 2, got {n_neighbors}")
    k = min(n_neighbors, len(feats) - 1)
    if k < 2:
        raise ValueError(f"UMAP needs at least 3 points, got {len(feats)}")
    # each point's k-1 nearest others, then the point itself first at distance exactly 0, as umap-learn lists them
    x = feats.astype(np.float64)
    _, idx = NearestNeighbors(n_neighbors=k - 1).fit(x).kneighbors()  # [N,k-1]
    idx = np.concatenate([np.arange(len(x))[:, None], idx], axis=1)  # [N,k]
    # distances from the differences, as umap-learn computes them: the dot-product formula scikit-learn uses gives
    # ~1e-7 for a point's duplicate (or itself), which UMAP would take for the nearest neighbour's distance rho
    dist = np.stack([np.sqrt(((x[idx[:, j]] - x) ** 2).sum(1)) for j in range(k)], axis=1)  # [N,k]
    order = np.argsort(dist, axis=1, kind="stable")  # the point itself (0, first) stays first
    idx, dist = np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)
    with warnings.catch_warnings():  # no search index is given: only transform() of new points would need one
        warnings.filterwarnings("ignore", message="precomputed_knn")
        reducer = umap.UMAP(n_neighbors=k, random_state=seed, n_jobs=1,
                            precomputed_knn=(idx, dist.astype(np.float32), None))  # fmt: skip
        return reducer.fit(feats)


@torch.no_grad()
def umap_embedding(model: torch.nn.Module, images_u8: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP of the classifier's penultimate features (``model.embed``): [N,2]."""
    x = u8_to_tensor(images_u8)
    feats = torch.cat([model.embed(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()
    return umap_of(feats, seed)


def save_explanations(
    dest: Path,
    model: torch.nn.Module,
    target: int,
    *,
    test_minority: np.ndarray,
    synthetic: np.ndarray | None,
    train_minority: np.ndarray,
    umap_x: np.ndarray,
    umap_y: np.ndarray,
    umap_synthetic: np.ndarray,
    features: str,
    progress: bool = True,
    train_patients: list[str] | None = None,
) -> dict:
    """Write ``dest/report_inputs.npz`` (+ ``quality.json`` and ``figures/closest_pairs.png`` when there
    are synthetic images). A failing explanation is logged and left out, never fatal."""
    from cxraug.io import atomic_path

    dest.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"test_minority": test_minority[:6]}
    if synthetic is not None:
        arrays["synthetic"] = synthetic[:6]
    try:
        arrays["gradcam_real"] = gradcam(model, arrays["test_minority"], target)
        if synthetic is not None:
            arrays["gradcam_synthetic"] = gradcam(model, arrays["synthetic"], target)
    except Exception as e:  # an explanation must not sink the study
        log.warning("Grad-CAM failed: %s", e)
    try:
        arrays["umap"] = umap_embedding(model, umap_x)
        arrays["umap_y"], arrays["umap_synthetic"] = umap_y, umap_synthetic
    except Exception as e:
        log.warning("UMAP failed: %s", e)
    with atomic_path(dest / "report_inputs.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    quality: dict = {}
    if synthetic is not None and len(train_minority) > 1:
        from cxraug.metrics import evaluate_images
        from cxraug.metrics.memorization import closest_pairs_grid

        # held-out real minority images (the test split) drive the three-sample data-copying test
        # features "trained": the encoder trains on a patient-level half of train_minority, the other half is the
        # FID reference (the default, the shipped CXR space or Inception, is fixed and uses all of it)
        quality = evaluate_images(train_minority, synthetic, features=features, progress=progress,
                                  heldout_u8=test_minority, patient_ids=train_patients)  # fmt: skip
        (dest / "figures").mkdir(exist_ok=True)
        closest_pairs_grid(train_minority, synthetic, quality["memorization"], dest / "figures" / "closest_pairs.png",
                           heldout_u8=test_minority, real_indices=quality.get("real_indices"))  # fmt: skip
        write_json(dest / "quality.json", quality)
    return quality
