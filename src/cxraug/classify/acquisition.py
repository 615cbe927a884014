"""Acquisition-cue (shortcut) check: can image properties that are not anatomy alone tell the classes apart?

DeGrave et al. (Nat. Mach. Intell. 2021, "AI for radiographic COVID-19 detection selects shortcuts over
signal") showed that COVID-19 classifiers learn how an image was acquired instead of the disease. The source
check (:func:`cxraug.classify.assemble.confounding`) needs one source folder per class and so never fires for a
single folder-per-class collection; this check works on one folder. A small model sees only the features of
:func:`cxraug.data.acquisition.acquisition_features` (native size, bit depth, file format, letterboxing,
sharpness, noise) and predicts the class; its out-of-fold AUC, with patient-grouped stratified K-fold
cross-validation, says how well the acquisition alone separates the classes.

The model is a gradient-boosted tree ensemble (scikit-learn's ``HistGradientBoostingClassifier``, after Ke et
al., "LightGBM", NeurIPS 2017), not a logistic regression: acquisition cues are mostly *values*, not trends (one
class comes from a 1024x1024 detector, the other from many sources larger and smaller), which a linear model on
standardised features cannot separate and two tree splits can. Trees need no scaling, take the one-hot format
and bit depth as they are, and route unknown (NaN) header values on their own. The price of the flexibility is
variance, not optimism: the AUC is measured on held-out patients only.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

from cxraug.data.acquisition import feature_label
from cxraug.errors import CXRAugError

#: Each class needs this many images (and two patients) before the check runs.
MIN_IMAGES_PER_CLASS = 5
MAX_FOLDS = 5
#: Features named in the warning: at most this many, each with a cue strength of at least ``NAMED_AUC`` (the top one
#: always).
N_NAMED = 3
NAMED_AUC = 0.6
_KINDS = "native size, bit depth, file format, letterboxing, sharpness, noise"


def _model(n_train: int, seed: int) -> HistGradientBoostingClassifier:
    """Shallow boosted trees; leaves of at least ~10 % of the training images (3..20), so small sets still split."""
    return HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_leaf_nodes=8,
        min_samples_leaf=int(np.clip(n_train // 10, 3, 20)),
        l2_regularization=1.0,
        class_weight="balanced",
        early_stopping=False,
        random_state=seed,
    )


def _rank_auc(y: np.ndarray, x: np.ndarray) -> float:
    """max(AUC, 1 - AUC) of one feature, unknown (NaN) values ranked below all known ones."""
    x = np.asarray(x, float)
    known = np.isfinite(x)
    if known.any():
        x = np.where(known, x, np.nanmin(x) - 1.0)
    else:
        return 0.5
    auc = float(roc_auc_score(y, x))
    return max(auc, 1.0 - auc)


def _binned_oof(x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Out-of-fold AUC of one feature through its binned class rate: bins are the training fold's distinct values
    (up to 32) or its 16 quantiles, unknown (NaN) values a bin of their own, each bin's rate smoothed towards the
    fold's prevalence. Unlike the rank AUC it also sees a cue without a trend (one class in the middle)."""
    pred = np.empty(len(y))
    for train, test in folds:
        xt, yt = x[train], y[train]
        known = np.isfinite(xt)
        vals = np.unique(xt[known])
        if len(vals) <= 32:
            edges = (vals[1:] + vals[:-1]) / 2
        else:
            edges = np.unique(np.quantile(xt[known], np.arange(1, 16) / 16))

        def bins(v: np.ndarray, edges: np.ndarray = edges) -> np.ndarray:
            return np.where(np.isfinite(v), np.searchsorted(edges, v, side="right"), len(edges) + 1)

        b = bins(xt)
        n = np.bincount(b, minlength=len(edges) + 2)
        k = np.bincount(b, weights=yt.astype(float), minlength=len(edges) + 2)
        rate = (k + 2 * yt.mean()) / (n + 2)
        pred[test] = rate[bins(x[test])]
    return float(roc_auc_score(y, pred))


def _varies(col: np.ndarray) -> bool:
    """True when a column takes at least two values (NaN counting as one)."""
    nan = np.isnan(col)
    vals = np.unique(col[~nan])
    return len(vals) + int(nan.any()) >= 2


def acquisition_cue_check(
    features: np.ndarray,
    names: list[str],
    positive: np.ndarray,
    groups: list[str],
    *,
    threshold: float = 0.75,
    seed: int = 0,
    positive_name: str = "the positive class",
) -> dict:
    """Do the acquisition features alone tell ``positive`` images from the rest? (DeGrave et al. 2021)

    ``features``: ``[N, F]`` from :func:`cxraug.data.acquisition.acquisition_features`, ``names`` its columns;
    ``positive``: bool ``[N]``; ``groups``: the patient of each image (no patient is split across folds).
    Features constant over the set are dropped. Out-of-fold probabilities come from boosted trees (see the
    module docstring) under ``StratifiedGroupKFold`` with ``min(5, patients of the smaller class)`` folds,
    shuffled by ``seed`` (deterministic for a seed).

    Returns ``auc`` (out-of-fold; None when skipped), ``flagged`` (``auc >= threshold``), ``threshold``,
    ``feature_auc`` (name -> max(AUC, 1 - AUC) of the raw feature, strongest first), ``feature_cv_auc`` (name ->
    out-of-fold AUC of the feature alone through its binned class rate, which also sees a cue without a trend),
    ``strongest`` (the names in the warning, by the larger of both AUCs: at most 3, each >= 0.6, the top one always,
    one file format at most),
    ``dropped`` (constant features), ``n_folds``, ``n_positive``, ``n_negative``, ``skipped``
    (why the check did not run, else ``""``) and ``text`` (the report's warning when flagged, else ``""``).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(positive).astype(bool).ravel()
    groups = [str(g) for g in groups]
    if x.ndim != 2 or x.shape[1] != len(names):
        raise CXRAugError(f"acquisition cue check: features {list(x.shape)} do not match {len(names)} names")
    if not len(y) == len(groups) == len(x):
        raise CXRAugError(f"acquisition cue check: {len(x)} images, {len(y)} labels, {len(groups)} patient ids")
    if not 0.5 < threshold <= 1.0:
        raise CXRAugError(f"acquisition cue threshold must be in (0.5, 1], got {threshold}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    out = {"auc": None, "flagged": False, "threshold": float(threshold), "feature_auc": {}, "feature_cv_auc": {},
           "strongest": [], "dropped": [], "n_folds": 0, "n_positive": n_pos, "n_negative": n_neg, "skipped": "",
           "text": ""}  # fmt: skip
    g = np.asarray(groups, dtype=object)
    pat_pos, pat_neg = len(set(g[y])), len(set(g[~y]))
    n_folds = min(MAX_FOLDS, pat_pos, pat_neg)
    if min(n_pos, n_neg) < MIN_IMAGES_PER_CLASS or n_folds < 2:
        out["skipped"] = (
            f"not enough images: {n_pos} {positive_name} images ({pat_pos} patients) and {n_neg} others "
            f"({pat_neg} patients); need {MIN_IMAGES_PER_CLASS} images and 2 patients in each"
        )
        return out

    keep = [j for j in range(x.shape[1]) if _varies(x[:, j])]
    out["dropped"] = [names[j] for j in range(x.shape[1]) if j not in keep]
    out["n_folds"] = n_folds
    if not keep:
        out["auc"] = 0.5
        return out
    x, kept = x[:, keep], [names[j] for j in keep]
    folds = list(StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y, groups=g))
    fa = {n: _rank_auc(y, x[:, k]) for k, n in enumerate(kept)}
    fcv = {n: _binned_oof(x[:, k], y, folds) for k, n in enumerate(kept)}
    out["feature_auc"] = dict(sorted(fa.items(), key=lambda kv: -kv[1]))  # stable: ties keep the column order
    out["feature_cv_auc"] = dict(sorted(fcv.items(), key=lambda kv: -kv[1]))

    oof = np.empty(len(y))
    # One OpenMP thread while fitting (restored after): on thousands of rows it is as fast, and a busy machine
    # (the study's own training) made the default threads spin many times slower.
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, test in folds:
            if len(np.unique(y[train])) < 2:  # a fold without one class cannot be learned: its prevalence
                oof[test] = y[train].mean()
                continue
            model = _model(len(train), seed).fit(x[train], y[train])
            oof[test] = model.predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, oof))
    out["auc"] = auc
    out["flagged"] = auc >= threshold
    cue = {n: max(fa[n], fcv[n]) for n in kept}  # a feature's cue strength: by rank or by value
    ranked = sorted(cue.items(), key=lambda kv: -kv[1])
    named: list[tuple[str, float]] = []
    for n, a in ranked:  # strongest first; one format column says it all (they are one-hot)
        if len(named) == N_NAMED or (named and a < NAMED_AUC):
            break
        if not (n.startswith("format_") and any(m.startswith("format_") for m, _ in named)):
            named.append((n, a))
    out["strongest"] = [n for n, _ in named]
    if out["flagged"]:
        cues = ", ".join(f"{feature_label(n)} {a:.2f}" for n, a in named)
        out["text"] = (f"ACQUISITION CUE: image properties that are not anatomy ({_KINDS}) alone tell {positive_name} "
                       f"from the rest with AUC {auc:.2f} (strongest: {cues}); a classifier can learn the acquisition "
                       "instead of the disease.")  # fmt: skip
    return out
