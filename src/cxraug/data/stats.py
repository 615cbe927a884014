"""Collection statistics: class counts, skew, sizes and modes, exact and near duplicates."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import imagehash
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cxraug.data.imageio import is_dicom, read_image
from cxraug.data.preprocess import to_uint8
from cxraug.data.sample import Collection
from cxraug.errors import ImageReadError, show_path


def skew_ratios(counts: dict[str, int], n_images: int | None = None) -> dict[str, float]:
    """Per class: negatives / positives (Zunair & Hamza's skew ratio; inf for an empty class).

    ``n_images``: the number of images, for multi-label data where label counts do not add up to it."""
    total = sum(counts.values()) if n_images is None else n_images
    return {c: (total - n) / n if n else float("inf") for c, n in counts.items()}


def describe_file(path: str | os.PathLike) -> tuple[str, str, int, int]:
    """(format, mode, width, height) from the header only."""
    if is_dicom(path):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        mode = f"{ds.get('PhotometricInterpretation', '?')}/{ds.get('BitsStored', '?')}bit"
        return "DICOM", mode, int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
    with Image.open(path) as im:
        return str(im.format), im.mode, im.size[0], im.size[1]


@dataclass
class DuplicateGroup:
    kind: str  # "exact" (same bytes) or "near" (perceptual hash within threshold)
    paths: list[str]
    distance: int = 0


@dataclass
class Inspection:
    root: str
    class_names: list[str]
    counts: dict[str, int]
    skew: dict[str, float]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # min/median/max WxH summary
    modes: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    n_images: int = 0  # readable images (not the sum of label counts: multi-label rows count once)
    n_patients: int = 0
    unknown_patients: int = 0  # readable images whose patient id is only their file name
    views: dict[str, int] = field(default_factory=dict)  # before the view filter
    view_filter: str = ""
    skipped: list[str] = field(default_factory=list)  # files/rows left out while listing (not decoded)
    multilabel: bool = False

    def to_dict(self) -> dict:
        """JSON-safe (no Infinity/NaN: an empty class's skew is ``null``)."""
        return {
            "root": self.root,
            "class_names": self.class_names,
            "multilabel": self.multilabel,
            "counts": self.counts,
            "n_images": self.n_images,
            "n_patients": self.n_patients,
            "unknown_patients": self.unknown_patients,
            "views": self.views,
            "view_filter": self.view_filter,
            "skipped": self.skipped,
            "skew_ratio": {c: (v if np.isfinite(v) else None) for c, v in self.skew.items()},
            "sizes": self.sizes,
            "modes": self.modes,
            "unreadable": self.unreadable,
            "duplicate_groups": [{"kind": g.kind, "distance": g.distance, "paths": g.paths} for g in self.duplicates],
            "problems": self.problems,
        }


def find_duplicates(
    paths: list[str], hashes: list[np.ndarray], digests: list[bytes], *, threshold: int = 4,
    verify: Callable[[int, int], bool] | None = None,
) -> list[DuplicateGroup]:
    """Exact groups by content digest, then near groups by pHash Hamming distance <= threshold; with ``verify``
    (indices into ``paths`` -> same radiograph?) only the near pairs it confirms (on look-alike collections many
    pairs within a few pHash bits are different patients)."""
    out: list[DuplicateGroup] = []
    by_digest: dict[bytes, list[int]] = {}
    for i, d in enumerate(digests):
        by_digest.setdefault(d, []).append(i)
    exact = [g for g in by_digest.values() if len(g) > 1]
    out += [DuplicateGroup("exact", [paths[i] for i in g]) for g in exact]
    # Near: one representative per exact group, pairwise Hamming distance on 64-bit pHashes.
    reps = sorted(g[0] for g in by_digest.values())
    if len(reps) > 1:
        H = np.stack([hashes[i] for i in reps]).astype(bool)  # [R, 64]
        pairs = []
        for a in range(0, len(reps), 512):
            d = (H[a : a + 512, None, :] != H[None, :, :]).sum(-1)  # [b, R]
            for i, j in zip(*np.nonzero(d <= threshold)):
                if a + i < j and (verify is None or verify(reps[a + i], reps[j])):
                    pairs.append((a + i, j, int(d[i, j])))
        from cxraug.data.dedupe import groups

        for g in groups(len(reps), [(i, j) for i, j, _ in pairs]):
            dist = max((dd for i, j, dd in pairs if i in g and j in g), default=0)
            out.append(DuplicateGroup("near", [paths[reps[i]] for i in g], dist))
    return out


def phash(img: np.ndarray) -> np.ndarray:
    return imagehash.phash(Image.fromarray(to_uint8(img))).hash.flatten()


def fingerprints(images_u8: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes of uint8 images [N,H,W], packed to [N,8] uint8. Robust to resizing, so
    a checkpoint can record what its GAN saw and a study can check it against its test split."""
    if len(images_u8) == 0:
        return np.zeros((0, 8), np.uint8)
    return np.stack([np.packbits(imagehash.phash(Image.fromarray(np.asarray(im))).hash.flatten()) for im in images_u8])


def min_hamming(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """For each packed hash in ``a`` [N,8], the smallest bit distance to any hash in ``b`` [M,8]."""
    if len(b) == 0:
        return np.full(len(a), 64, np.int64)
    bb = np.unpackbits(b, axis=1).astype(bool)
    out = [
        (np.unpackbits(a[i : i + chunk], axis=1).astype(bool)[:, None, :] != bb[None]).sum(-1).min(1)
        for i in range(0, len(a), chunk)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def hamming_pairs(
    a: np.ndarray, b: np.ndarray | None = None, *, threshold: int = 4, chunk: int = 512
) -> list[tuple[int, int]]:
    """Index pairs (i, j) of packed hashes within ``threshold`` bits: ``a`` [N,8] against ``b`` [M,8], or within
    ``a`` (``b`` None: pairs i < j)."""
    other = a if b is None else b
    if not len(a) or not len(other):
        return []
    bb = np.unpackbits(other, axis=1).astype(bool)
    out = []
    for s in range(0, len(a), chunk):
        d = (np.unpackbits(a[s : s + chunk], axis=1).astype(bool)[:, None, :] != bb[None]).sum(-1)
        out += [(s + int(i), int(j)) for i, j in zip(*np.nonzero(d <= threshold)) if b is not None or s + i < j]
    return out


def inspect_collection(coll: Collection, near_threshold: int = 4, progress: bool = True) -> Inspection:
    """Decode every image once: counts, sizes, modes, unreadable files, duplicate groups."""
    paths, hashes, digests, dims, arrays = [], [], [], [], {}
    modes: Counter[str] = Counter()
    unreadable: list[str] = []
    good_labels, good_pids = [], []
    for s in tqdm(coll.samples, desc="inspect", unit="img", disable=not progress, leave=False):
        try:
            img = read_image(s.path) if s.image is None else s.image
            fmt, mode, w, h = describe_file(s.path) if s.image is None else ("array", "F", *s.image.shape[::-1])
        except ImageReadError as e:
            unreadable.append(str(e))
            continue
        except Exception as e:  # header parse errors not caught by the decoder
            unreadable.append(f"{show_path(s.path)}: {e}")
            continue
        modes[f"{fmt} {mode}"] += 1
        dims.append((w, h))
        paths.append(s.path)
        if s.image is not None:
            arrays[len(paths) - 1] = s.image
        hashes.append(phash(img))
        with open(s.path, "rb") if s.image is None else _NullCtx(img.tobytes()) as f:
            digests.append(hashlib.blake2b(f.read(), digest_size=16).digest())
        good_labels.append(s.labels)
        good_pids.append(s.patient_id)
    lab = np.nan_to_num(np.stack(good_labels)) if good_labels else np.zeros((0, len(coll.class_names)))
    counts = {c: int((lab[:, i] > 0.5).sum()) for i, c in enumerate(coll.class_names)}
    sizes = {}
    if dims:
        a = np.asarray(dims)
        for name, fn in (("min", np.min), ("median", np.median), ("max", np.max)):
            sizes[name] = (int(fn(a[:, 0])), int(fn(a[:, 1])))
    return Inspection(
        root=coll.root,
        class_names=coll.class_names,
        counts=counts,
        skew=skew_ratios(counts, len(good_labels) if coll.multilabel else None),
        sizes=sizes,
        modes=dict(modes),
        unreadable=unreadable,
        duplicates=find_duplicates(paths, hashes, digests, threshold=near_threshold, verify=_Verifier(paths, arrays)),
        problems=list(coll.problems) + _cross_class_duplicates(coll, paths, digests),
        n_images=len(good_labels),
        n_patients=len(set(good_pids)),
        unknown_patients=min(coll.unknown_patients, len(good_labels)),
        views=dict(coll.views),
        view_filter=coll.view_filter,
        skipped=list(coll.skipped),
        multilabel=coll.multilabel,
    )


def _cross_class_duplicates(coll: Collection, paths: list[str], digests: list[bytes]) -> list[str]:
    """Byte-identical files filed under different (single-label) classes: label noise worth a warning."""
    if coll.multilabel:
        return []
    label_of = {s.path: s.label_index for s in coll.samples}
    groups: dict[bytes, list[str]] = {}
    for p, d in zip(paths, digests):
        groups.setdefault(d, []).append(p)
    out = []
    for g in groups.values():
        classes = sorted({coll.class_names[label_of[p]] for p in g if label_of.get(p, -1) >= 0})
        if len(classes) > 1:
            out.append(f"identical images under different classes ({', '.join(classes)}): "
                       + "  ".join(show_path(p) for p in g))  # fmt: skip
    return out


class _Verifier:
    """Is the pHash pair (i, j) the same radiograph? The duplicate detector (:mod:`cxraug.data.dedupe`) on the two
    files, each read once and only when a pair needs it."""

    def __init__(self, paths: list[str], arrays: dict[int, np.ndarray]):
        self.paths, self.arrays, self.sigs = paths, arrays, {}

    def sig(self, k: int):
        from cxraug.data.dedupe import original_image, signatures

        if k not in self.sigs:
            self.sigs[k] = signatures([original_image(self.paths[k], self.arrays.get(k))], threads=1)
        return self.sigs[k]

    def __call__(self, i: int, j: int) -> bool:
        from cxraug.data.dedupe import verify

        try:
            return verify(self.sig(i), 0, self.sig(j), 0).same
        except ImageReadError:
            return False


class _NullCtx:
    def __init__(self, data: bytes):
        self.data = data

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def read(self) -> bytes:
        return self.data
