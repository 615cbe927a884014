"""Data assembly for the study: one dataset from its sources, the rare-disease thinning of the
training minority, and the leakage check of a given generator against the test split."""

from __future__ import annotations

import os

import numpy as np

from cxraug.classify.config import StudyConfig
from cxraug.data.cache import CachedDataset, build_cache
from cxraug.data.preprocess import Preprocess
from cxraug.data.sample import Collection
from cxraug.data.source import open_source
from cxraug.data.splits import NEAR_DUPLICATE_BITS
from cxraug.errors import CXRAugError, LeakageError, show_path
from cxraug.models.artifact import GeneratorArtifact


def load_sources(cfg: StudyConfig, progress: bool = True) -> CachedDataset:
    """One dataset from the study's sources: folders/phantoms (one class each, or folder-per-class) or
    one multi-label CSV manifest (CheXpert style; its label vectors are kept as they are)."""
    samples, names = [], []
    colls: list[tuple[Collection, str | None]] = []
    for s in cfg.sources:
        c = open_source(s.path, size=max(cfg.size, 64))
        colls.append((c, s.label))
        names += [s.label] if s.label else c.class_names
    if any(c.multilabel for c, _ in colls):
        if len(colls) != 1:
            raise CXRAugError("a multi-label study takes exactly one source (a CSV manifest with label columns)")
        return build_cache(colls[0][0], Preprocess(cfg.size), progress=progress)
    names = sorted(set(names))
    for c, label in colls:
        for smp in c.samples:
            lab = np.zeros(len(names), np.float32)
            lab[names.index(label or c.class_names[smp.label_index])] = 1
            smp.labels = lab
            samples.append(smp)
    merged = Collection(samples, names, root="+".join(s.path for s in cfg.sources))
    return build_cache(merged, Preprocess(cfg.size), progress=progress)


def reduce_minority(
    train: np.ndarray, pos: np.ndarray, patient_ids: list[str], share: float, seed: int
) -> tuple[np.ndarray, int]:
    """Drop minority training patients (seeded) until the minority is ``share`` of the training split.

    ``pos``: minority-positive mask over the whole dataset. Returns (kept training indices, dropped count)."""
    if not 0 < share < 1:
        raise CXRAugError(f"minority_share must be in (0, 1), got {share}")
    is_min = pos[train]
    n_other = int((~is_min).sum())
    target = max(1, round(share * n_other / (1 - share)))
    if is_min.sum() <= target:
        return train, 0
    pids = sorted({patient_ids[i] for i in train[is_min]})
    order = np.random.default_rng(seed).permutation(len(pids))
    keep_p, n = set(), 0
    count = {p: 0 for p in pids}
    for i in train[is_min]:
        count[patient_ids[i]] += 1
    for j in order:
        if n >= target:
            break
        keep_p.add(pids[j])
        n += count[pids[j]]
    keep = ~is_min | np.array([patient_ids[i] in keep_p for i in train])
    return train[keep], int((~keep).sum())


def check_generator_unseen(checkpoint: str | os.PathLike, test_fp: np.ndarray) -> int:
    """Raise :class:`LeakageError` if the generator was trained on (near-duplicates of) test images.

    Returns how many training images the checkpoint records (0 if it records none: older checkpoints).
    """
    from cxraug.data.stats import min_hamming

    seen = GeneratorArtifact.load(checkpoint).fingerprints  # [N,8] packed pHashes
    if len(seen) == 0:
        return 0
    d = min_hamming(test_fp, seen)
    n = int((d <= NEAR_DUPLICATE_BITS).sum())
    if n:
        raise LeakageError(
            f"the generator {show_path(checkpoint)} was trained on {n} image(s) of this study's test split; "
            "its synthetic images would leak the test set into training. Train it on the study's training "
            "split only, or replace `generator:` by a `gan:` block so the study trains its own"
        )
    return len(seen)
