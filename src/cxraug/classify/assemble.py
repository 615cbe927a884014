"""Data assembly for the study: one dataset from its sources, the rare-disease thinning of the
training minority, and the leakage check of a given generator against the test split."""

from __future__ import annotations

import os

import numpy as np

from cxraug.classify.config import Source, StudyConfig, source_names
from cxraug.data.cache import CachedDataset, build_cache
from cxraug.data.preprocess import Preprocess
from cxraug.data.sample import Collection
from cxraug.data.source import open_source
from cxraug.data.splits import NEAR_DUPLICATE_BITS
from cxraug.errors import CXRAugError, LeakageError, show_path
from cxraug.families import GeneratorArtifact


def load_labelled(
    sources: list[Source], size: int, *, class_names: list[str] | None = None, progress: bool = True,
    info: dict | None = None,
) -> tuple[CachedDataset, list[str]]:
    """One dataset from ``sources`` (folders/phantoms: one class each via ``label``, or folder-per-class;
    or one multi-label CSV manifest, its label vectors kept as they are) and, per image, the name of
    the source it came from. ``class_names``: label the images over these classes (external and probe
    sets use the study's classes; a class the study does not have is refused). ``info``, if given, gets
    ``unknown_patients``: how many listed images have no patient id from the data (only a file name)."""
    samples, names = [], []
    colls: list[tuple[Collection, str | None]] = []
    for s in sources:
        c = open_source(s.path, size=max(size, 64), manifest=s.manifest)
        colls.append((c, s.label))
        names += [s.label] if s.label else c.class_names
    if info is not None:
        info["unknown_patients"] = int(sum(c.unknown_patients for c, _ in colls))
        info["listed"] = int(sum(len(c) for c, _ in colls))
    src_names = source_names(sources)
    if any(c.multilabel for c, _ in colls):
        if len(colls) != 1 or class_names is not None:
            raise CXRAugError("a multi-label study takes exactly one source (a CSV manifest with label columns); "
                              "external and probe sources take one class each (`label:`)")  # fmt: skip
        ds = build_cache(colls[0][0], Preprocess(size), progress=progress)
        _announce_skipped(ds, colls)
        return ds, [src_names[0]] * len(ds)
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise CXRAugError(f"classes {unknown} of {', '.join(s.path for s in sources)} are not among the "
                              f"study's classes {class_names}; give each source a `label:`")  # fmt: skip
        names = list(class_names)
    else:
        names = sorted(set(names))
    origin_of: dict[str, str] = {}
    for (c, label), sname in zip(colls, src_names):
        for smp in c.samples:
            lab = np.zeros(len(names), np.float32)
            lab[names.index(label or c.class_names[smp.label_index])] = 1
            smp.labels = lab
            samples.append(smp)
            origin_of.setdefault(smp.path, sname)
    merged = Collection(samples, names, root="+".join(s.path for s in sources))
    ds = build_cache(merged, Preprocess(size), progress=progress)
    _announce_skipped(ds, colls)
    return ds, [origin_of.get(p, "?") for p in ds.paths]


def _announce_skipped(ds: CachedDataset, colls: list[tuple[Collection, str | None]]) -> None:
    """Name every file the study's sources left out (listing, then decoding) on stderr, as every command does."""
    from cxraug.data import skipped

    ds.listing_skipped = [x for c, _ in colls for x in c.skipped]
    skipped.announce([*ds.listing_skipped, *ds.errors])


def load_sources(cfg: StudyConfig, progress: bool = True) -> CachedDataset:
    """The study's own dataset (see :func:`load_labelled`)."""
    return load_labelled(cfg.sources, cfg.size, progress=progress)[0]


def screen_against_training(
    fp: np.ndarray, patient_ids: list[str], train_fp: np.ndarray, train_patients: set[str], *, sig=None, train_sig=None
) -> tuple[np.ndarray, int, int]:
    """Which images of an external/probe set may be used: not a training patient (by id) and not a copy of a
    training image. With the duplicate detector's signatures (``sig``, ``train_sig``: :mod:`cxraug.data.dedupe`) a
    copy is the same radiograph cropped, padded, rescaled, re-windowed, recompressed, rotated or flipped, verified
    pair by pair (pairs within :data:`NEAR_DUPLICATE_BITS` pHash bits are verified too); without them, any image
    within that many pHash bits. Returns (keep mask, n same patient, n copies of a training image)."""
    from cxraug.data.stats import hamming_pairs, min_hamming

    same_patient = np.array([p in train_patients for p in patient_ids], bool)
    if not len(fp) or not len(train_fp):
        dup = np.zeros(len(fp), bool)
    elif sig is not None and train_sig is not None:
        from cxraug.data.dedupe import copies_of

        dup = copies_of(sig, train_sig, extra_pairs=hamming_pairs(fp, train_fp, threshold=NEAR_DUPLICATE_BITS))
    else:
        dup = min_hamming(fp, train_fp) <= NEAR_DUPLICATE_BITS
    return ~(same_patient | dup), int(same_patient.sum()), int((dup & ~same_patient).sum())


def class_source_table(labels: np.ndarray, class_names: list[str], origin: list[str]) -> dict[str, dict[str, int]]:
    """table[class][source] = number of images (multi-label: positives of each label)."""
    lab = np.nan_to_num(labels) > 0.5
    srcs = sorted(set(origin))
    o = np.asarray(origin)
    return {c: {s: int((lab[:, k] & (o == s)).sum()) for s in srcs} for k, c in enumerate(class_names)}


def confounding(table: dict[str, dict[str, int]], purity: float = 0.9, share: float = 0.5) -> dict:
    """Is class confounded with source? A source is *own* to class c when at least ``purity`` of its
    images are c; c is confounded when at least ``share`` of its images come from its own sources while
    less than ``share`` of the other classes' images do (so the source alone tells c from the rest, as
    with COVID images from one collection against normals from another; DeGrave et al., Nat. Mach.
    Intell. 2021). One source holding every class cannot be confounded this way."""
    classes = list(table)
    srcs = sorted({s for row in table.values() for s in row})
    n = np.array([[table[c].get(s, 0) for s in srcs] for c in classes], float)  # [C, S]
    per_src = n.sum(0)
    flagged = {}
    for k, c in enumerate(classes):
        if n[k].sum() == 0 or len(classes) < 2:
            continue
        own = (per_src > 0) & (n[k] >= purity * per_src)
        other = np.delete(n, k, axis=0).sum(0)
        own_share = n[k, own].sum() / n[k].sum()
        other_share = other[own].sum() / max(other.sum(), 1)
        if own.any() and own_share >= share and other_share < share:
            flagged[c] = {"sources": [srcs[j] for j in np.nonzero(own)[0]], "share": float(own_share),
                          "others_share": float(other_share)}  # fmt: skip
    text = ""
    if flagged:
        text = "CONFOUNDED: " + "; ".join(
            f"{100 * v['share']:.0f} % of class {c!r} comes from {', '.join(v['sources'])}, which hold "
            f"{100 * v['others_share']:.0f} % of the other classes' images" for c, v in flagged.items()
        ) + (". A classifier can tell the classes apart by acquisition source alone: this result cannot "
             "separate disease from acquisition source.")  # fmt: skip
    return {"confounded": bool(flagged), "classes": flagged, "text": text}


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


def check_generator_unseen(
    checkpoint: str | os.PathLike, held_out: dict[str, np.ndarray] | np.ndarray, held_out_signatures: dict | None = None
) -> int:
    """Raise :class:`LeakageError` if the generator was trained on images a study evaluates on, or on copies of them:
    ``held_out`` maps each evaluation set's name (the test split, every external and probe set) to its fingerprints
    [N,8] (an array alone is the test split), ``held_out_signatures`` the same names to the duplicate detector's
    signatures of their images. A checkpoint records both of its training images; with both, a copy is the same
    radiograph cropped, padded, rescaled, re-windowed, recompressed, rotated or flipped, verified on the features the
    checkpoint keeps (it keeps no pixels, so the check is conservative: a radiograph of the same patient taken in the
    same position counts too, itself a patient-level leak); otherwise a pHash within :data:`NEAR_DUPLICATE_BITS`.

    Returns how many training images the checkpoint records (0 if it records none: older checkpoints).
    """
    from cxraug.data.dedupe import copies_of
    from cxraug.data.stats import hamming_pairs, min_hamming

    art = GeneratorArtifact.load(checkpoint)
    seen, seen_sig = art.fingerprints, art.signatures(checkpoint)  # [N,8] packed pHashes; features or None
    if len(seen) == 0 and (seen_sig is None or len(seen_sig) == 0):
        return 0
    sets = held_out if isinstance(held_out, dict) else {"the test split": held_out}
    sigs = held_out_signatures or {}
    hits = {}
    for name, fp in sets.items():
        if not len(fp):
            continue
        if seen_sig is not None and sigs.get(name) is not None and len(seen_sig) == len(seen):
            extra = hamming_pairs(fp, seen, threshold=NEAR_DUPLICATE_BITS)
            hits[name] = int(copies_of(sigs[name], seen_sig, extra_pairs=extra).sum())
        else:
            hits[name] = int((min_hamming(fp, seen) <= NEAR_DUPLICATE_BITS).sum())
    hits = {name: n for name, n in hits.items() if n}
    if hits:
        where = ", ".join(f"{n} image(s) of {name}" for name, n in hits.items())
        raise LeakageError(
            f"the generator {show_path(checkpoint)} was trained on {where} (or copies of them); its synthetic images "
            "would leak images the study evaluates on into training. Train it on the study's training split only, "
            "or replace `generator:` by a `gan:` block so the study trains its own"
        )
    return len(seen)


# ------------------------------------------------------------------------------ augmentation target
def parse_augment_rule(rule: str) -> float | None:
    """``equalize`` -> None (the minority up to the largest class); ``min-fraction:F`` -> F in (0, 1)
    (Sundaram & Hulkund's rule, F = 0.15: every chosen label at least F of the augmented training set)."""
    kind, _, val = str(rule).partition(":")
    if kind == "equalize" and not val:
        return None
    if kind == "min-fraction":
        try:
            f = float(val)
        except ValueError:
            f = float("nan")
        if 0 < f < 1:
            return f
    raise CXRAugError(
        f"augment_rule {rule!r}: expected equalize or min-fraction:F with F in (0, 1), e.g. min-fraction:0.15"
    )


def min_fraction_pool_size(n_train: int, n_labels: int, fraction: float) -> int:
    """How many synthetic candidates per chosen label :func:`plan_min_fraction` can ever draw, for any
    training subset of at most ``n_train`` images, ``n_labels`` chosen labels at ``fraction`` each.

    The last draw for label k happens while k is short: c_k + D_k - 1 < F (N + T), so D_k < F (N + T) + 1 -
    c_k; summed over the L labels, T < L F (N + T) + L, i.e. T < L (F N + 1) / (1 - L F). With c_k >= 0 and
    N <= n_train this bounds D_k for every subset. Needs L F < 1 (else the rule may have no solution)."""
    if n_labels * fraction >= 1:
        raise CXRAugError(f"augment_rule min-fraction:{fraction:g} for {n_labels} labels asks for {n_labels} x "
                          f"{fraction:g} >= 1 of the training set; lower F or choose fewer augment_labels")  # fmt: skip
    t_max = n_labels * (fraction * n_train + 1) / (1 - n_labels * fraction)
    return int(np.floor(fraction * (n_train + t_max) + 1)) + 1


def plan_min_fraction(
    labels: np.ndarray, chosen: list[int], fraction: float, pools: dict[int, np.ndarray]
) -> list[tuple[int, int]]:
    """Sundaram & Hulkund's rule for several labels at once: add synthetic images until every label in
    ``chosen`` is positive in at least ``fraction`` of the augmented set (real + synthetic).

    ``labels`` [N,K]: the real training label vectors (NaN = unknown, counted as not positive; single-label
    studies give one-hot rows); ``pools[k]`` [M_k,K]: the label vectors of the synthetic candidates for
    label k, in the order they are to be used (a conditional generator's vectors sampled from the real rows
    where k is positive, so each carries k's co-occurring findings). Greedy: while a chosen label is short,
    the next candidate of the label with the lowest share is added, and *every* positive entry of its
    vector counts, so a synthetic image drawn for one label also helps any other label it carries; every
    image added is positive for a label that was short, and with one label (or no co-occurrence) the count
    is the closed-form minimum ceil((F N - c) / (1 - F)). Returns (label, index into its pool) per added
    image, in order."""
    counts = (np.nan_to_num(np.asarray(labels, np.float64)) > 0.5).sum(0).astype(np.int64)  # [K]
    total = len(labels)
    used = dict.fromkeys(chosen, 0)
    picks: list[tuple[int, int]] = []
    while True:
        short = [k for k in chosen if counts[k] < fraction * total - 1e-9]
        if not short:
            return picks
        k = min(short, key=lambda c: (counts[c] / max(total, 1), chosen.index(c)))
        if used[k] >= len(pools[k]):
            raise CXRAugError(f"min-fraction rule: {len(pools[k])} synthetic candidates for label index {k} are "
                              "not enough")  # fmt: skip
        vec = np.nan_to_num(np.asarray(pools[k][used[k]], np.float64)) > 0.5  # [K]
        vec[k] = True  # drawn for k: positive for k whatever else it carries
        picks.append((k, used[k]))
        used[k] += 1
        counts += vec
        total += 1
