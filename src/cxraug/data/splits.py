"""Patient-level, stratified train/val/test splits; nested data regimes; leakage guards.

A patient's images all go to one split. Synthetic images are refused everywhere except the
training split (see :func:`check_no_synthetic`), and the checks read both the ``source`` recorded
with each image and the PNG marker written by :mod:`cxraug.synth`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cxraug.data.markers import is_marked_synthetic
from cxraug.errors import LeakageError, show_path

SPLITS = ("train", "val", "test")


def _patient_strata(labels: np.ndarray, patient_ids: list[str]) -> dict[str, tuple[int, list[int]]]:
    """patient -> (stratum, image indices). The stratum is the patient's most frequent label."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(patient_ids):
        groups[p].append(i)
    lab = np.nan_to_num(labels)
    out = {}
    for p, idx in groups.items():
        s = lab[idx].sum(0)
        out[p] = (int(s.argmax()) if s.max() > 0 else -1, idx)
    return out


def patient_split(
    labels: np.ndarray,
    patient_ids: list[str],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    sources: list[str] | None = None,
    paths: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Indices for train/val/test. Stratified by label, grouped by patient, deterministic by seed."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    check_no_synthetic(sources, paths, where="a split (synthetic images are added to training later)")
    rng = np.random.default_rng(seed)
    strata: dict[int, list[tuple[str, list[int]]]] = defaultdict(list)
    for p, (s, idx) in sorted(_patient_strata(labels, patient_ids).items()):
        strata[s].append((p, idx))
    out: dict[str, list[int]] = {k: [] for k in SPLITS}
    frac = np.asarray(fractions, float)
    for s in sorted(strata):
        pats = strata[s]
        order = rng.permutation(len(pats))
        total = sum(len(idx) for _, idx in pats)
        got = np.zeros(3)
        for j in order:
            _, idx = pats[j]
            k = int(np.argmax(frac * total - got))  # the split furthest below its target
            out[SPLITS[k]].extend(idx)
            got[k] += len(idx)
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in out.items()}


def regime_subset(
    indices: np.ndarray, labels: np.ndarray, patient_ids: list[str], fraction: float, *, seed: int = 0
) -> np.ndarray:
    """A stratified, patient-level ``fraction`` of ``indices`` (>= 1 patient per class).

    Regimes are nested for a fixed seed: the 1 % subset is inside the 10 % one, and so on.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    indices = np.asarray(indices)
    if fraction >= 1:
        return np.sort(indices)
    sub_pids = [patient_ids[i] for i in indices]
    strata = _patient_strata(labels[indices], sub_pids)
    by_stratum: dict[int, list[str]] = defaultdict(list)
    for p, (s, _) in sorted(strata.items()):
        by_stratum[s].append(p)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for s in sorted(by_stratum):
        pats = by_stratum[s]
        order = rng.permutation(len(pats))
        n = max(1, round(fraction * len(pats)))
        for j in order[:n]:
            keep.extend(strata[pats[j]][1])
    return np.sort(indices[np.asarray(keep, dtype=np.int64)])


NEAR_DUPLICATE_BITS = 4  # pHash distance at or below which two images count as the same radiograph


def near_duplicates_in_test(fingerprints: np.ndarray, split: dict[str, np.ndarray],
                         threshold: int = NEAR_DUPLICATE_BITS) -> np.ndarray:  # fmt: skip
    """Boolean mask over ``split["test"]``: images within ``threshold`` pHash bits of a training image
    (``fingerprints`` from :func:`cxraug.data.stats.fingerprints`, one row per dataset image)."""
    from cxraug.data.stats import min_hamming

    return min_hamming(fingerprints[split["test"]], fingerprints[split["train"]]) <= threshold


def copies_in_test(fingerprints: np.ndarray, signatures, split: dict[str, np.ndarray], *,
                   against: tuple[str, ...] = ("train", "val"), threshold: int = NEAR_DUPLICATE_BITS) -> np.ndarray:  # fmt: skip
    """Boolean mask over ``split["test"]``: images that are a copy of an image of the ``against`` splits, cropped,
    padded, rescaled, re-windowed or not (:mod:`cxraug.data.dedupe`; ``signatures`` one per dataset image, from
    :func:`~cxraug.data.dedupe.dataset_signatures`). Pairs within ``threshold`` pHash bits are verified too."""
    from cxraug.data.dedupe import copies_of
    from cxraug.data.stats import hamming_pairs

    test = split["test"]
    fit = np.concatenate([split[k] for k in against]) if against else np.zeros(0, np.int64)
    if not len(test) or not len(fit):
        return np.zeros(len(test), bool)
    extra = hamming_pairs(fingerprints[test], fingerprints[fit], threshold=threshold)
    return copies_of(signatures.subset(test), signatures.subset(fit), extra_pairs=extra)


def check_no_synthetic(sources: list[str] | None, paths: list[str] | None, where: str = "the test split") -> None:
    """Raise :class:`LeakageError` if any image is synthetic (by recorded source or PNG marker)."""
    bad = []
    for k in range(len(sources or paths or [])):
        src = sources[k] if sources else ""
        path = paths[k] if paths else ""
        if src == "synthetic" or (path and is_marked_synthetic(path)):
            bad.append(path or f"#{k}")
    if bad:
        raise LeakageError(
            f"{len(bad)} synthetic image(s) would enter {where}, e.g. {show_path(bad[0])}; "
            "synthetic images may only be added to training data"
        )


def check_patient_disjoint(patient_ids: list[str], splits: dict[str, np.ndarray]) -> None:
    seen: dict[str, str] = {}
    for name, idx in splits.items():
        for i in idx:
            p = patient_ids[int(i)]
            if seen.setdefault(p, name) != name:
                raise LeakageError(f"patient {p} is in both {seen[p]} and {name}")
