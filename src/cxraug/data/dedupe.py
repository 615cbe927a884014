"""Find the same radiograph when it was cropped, padded, rescaled, re-windowed, recompressed, rotated or flipped.

Public COVID collections republish each other's images with other crops, borders, burnt-in labels and
rescaling, so a 64-bit perceptual hash (:func:`cxraug.data.stats.phash`) misses most copies and, on a collection
of look-alike radiographs (one hospital, one age group), also calls different children the same. This detector
works in two stages, as near-duplicate image retrieval usually does (Ke, Sukthankar & Huston, "Efficient
near-duplicate detection and sub-image retrieval", ACM Multimedia 2004; Chum, Philbin & Zisserman, "Near duplicate
image detection: min-Hash and tf-idf weighting", BMVC 2008):

1. **Candidates.** Each image is brought to a working form (uniform borders trimmed, longer side
   :data:`WORK_SIDE` px) and described by :data:`N_FEATURES` ORB local features spread over a grid (Rublee et
   al., "ORB: an efficient alternative to SIFT or SURF", ICCV 2011). Local features survive crops, borders,
   rescaling, aspect changes, small rotations and any monotone change of grey levels (ORB compares pixel pairs).
   Every feature is hashed into :data:`N_TABLES` buckets by fixed random subsets of its bits (locality-sensitive
   hashing in Hamming space, Indyk & Motwani 1998; Gionis et al. 1999); two images sharing many buckets, a rare
   bucket counting more than a common one, become a candidate pair. A left-right flipped copy is found through
   the features of the flipped query image.
2. **Verification.** The pair's features are matched (Lowe's ratio test) and an affine map is fitted with RANSAC
   (Fischler & Bolles 1981); it must be plausible (scales, shear, rotation within bounds) and carried by
   :data:`MIN_INLIERS` inliers spread over the image. With both images' pixels at hand (everywhere but a generator
   checkpoint, which keeps features only), the second image is warped onto the first, both are rank-normalised
   (so any window, gamma or contrast change drops out) and band-passed at the finest scale both resolve, and the
   alignment is refined from tile-wise shifts. Then every 32 px tile is compared at zero shift and at shifts up to
   4 px: a copy agrees best with no local shift almost everywhere (the median gain of shifting is
   <= :data:`MAX_SHIFT_GAIN`), whereas two radiographs of one patient taken on different days, which share the
   anatomy and so can share a global alignment, move locally (breathing, posture, positioning) and agree better
   at some shift in most tiles.

The thresholds were calibrated on pairs known to be different (different patients; one patient's radiographs of
other days: NIH follow-ups, Kermany patients with several images) and on copies of real radiographs made by the
transformations above; BENCHMARKS.md §3e gives recall, false-positive rates and speed beside the pHash screen's,
``benchmarks/dedupe_speed.py`` measures them. Images under 128 px (the 64 px NIH set) carry too little detail to
tell a copy from a follow-up in the same position, so a pair involving one is only called a copy when it is
nearly unaltered (:data:`LOW_RES_MIN_CORRELATION`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

WORK_SIDE = 256  # longer side of the working image, px
N_FEATURES = 1000  # ORB features kept per image (spread over a grid)
N_STORED = 500  # features per training image a generator checkpoint keeps (the first, best spread ones)
N_TABLES = 12  # hash tables of the candidate stage
KEY_BITS = 20  # bits per hash key
BUCKET_CAP = 100  # a key shared by more index features than this carries no information and is ignored
TOP_K = 5  # candidates per query image (and per orientation)
MIN_VOTES = 3.0  # weighted shared buckets for a pair to be a candidate
RATIO = 0.8  # Lowe's ratio test
RANSAC_PX = 3.0  # inlier distance at WORK_SIDE
MIN_INLIERS = 12  # RANSAC inliers for a pair whose pixels are then compared
MIN_SPREAD = 0.05  # inliers' convex hull, as a fraction of the first image's working area
MIN_INLIERS_FEATURES_ONLY = 60  # without pixels (a checkpoint's features): the geometric evidence alone
MIN_SPREAD_FEATURES_ONLY = 0.15
MAX_ANISOTROPY = 1.6  # ratio of the two singular values of the affine map
MAX_SHEAR = 0.2
MAX_ROTATION_DEG = 20.0
SCALE_RANGE = (0.25, 4.0)
TILE = 32  # px of the working image, for the local comparison
SHIFT = 4  # px searched around zero shift
MIN_TILES = 12  # half-overlapping tiles (about three without overlap)
MAX_SHIFT_GAIN = 0.004  # median over tiles of (best correlation at any shift - correlation at zero shift)
MIN_CORRELATION = 0.6  # median tile correlation at zero shift
LOW_RES_ENLARGEMENT = 3.0  # a pair whose coarser image was enlarged more than this (under ~85 px) is low-resolution
LOW_RES_MIN_CORRELATION = 0.995  # ... and then its lower-quartile tile correlation must reach this


# ------------------------------------------------------------------------------------------- working image
def _u8(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., 0] if a.shape[-1] in (1, 3, 4) else a[0]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = np.nan_to_num(a.astype(np.float32))
    if a.size and float(a.max()) <= 1.0 + 1e-6:  # float images in [0, 1]
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def trim_borders(u8: np.ndarray, tol: float = 4.0, max_frac: float = 0.45) -> np.ndarray:
    """The image without uniform rows and columns at its edges (black or white bars, letterboxing)."""
    h, w = u8.shape
    f = u8.astype(np.float32)
    rs, cs = f.std(1), f.std(0)
    t, b, left, r = 0, h, 0, w
    while t < h * max_frac and rs[t] < tol:
        t += 1
    while b > h * (1 - max_frac) and rs[b - 1] < tol:
        b -= 1
    while left < w * max_frac and cs[left] < tol:
        left += 1
    while r > w * (1 - max_frac) and cs[r - 1] < tol:
        r -= 1
    return u8[t:b, left:r]


def work_image(img: np.ndarray, side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """The detector's view of an image (uint8, or float in [0, 1]): borders trimmed, longer side ``side``; and the
    factor it was enlarged by (> 1: the image had fewer pixels, so its finest detail is coarser than a pixel)."""
    u8 = trim_borders(_u8(img))
    h, w = u8.shape
    s = side / max(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    return cv2.resize(u8, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC), float(s)


_ORB: dict[int, cv2.ORB] = {}


def _orb(n: int) -> cv2.ORB:
    if n not in _ORB:
        _ORB[n] = cv2.ORB_create(nfeatures=n, scaleFactor=1.2, nlevels=8, edgeThreshold=15, patchSize=31,
                                 fastThreshold=5)  # fmt: skip
    return _ORB[n]


def orb_features(work: np.ndarray, n: int = N_FEATURES, grid: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """ORB keypoints [K,2] float32 and descriptors [K,32] uint8, at most ``n``, taken round-robin from a ``grid`` x
    ``grid`` partition, strongest first within a cell (so that burnt-in text or wires cannot take every feature);
    any prefix of the list is spread over the image too."""
    kps, desc = _orb(3 * n).detectAndCompute(work, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    pts = np.array([k.pt for k in kps], np.float32)
    resp = np.array([k.response for k in kps], np.float32)
    h, w = work.shape
    cy = np.minimum((pts[:, 1] * grid // h).astype(int), grid - 1)
    cx = np.minimum((pts[:, 0] * grid // w).astype(int), grid - 1)
    cell = cy * grid + cx
    order = np.lexsort((-resp, cell))
    rank_in_cell = np.empty(len(order), int)
    starts = np.r_[0, np.flatnonzero(np.diff(cell[order])) + 1]
    for s, e in zip(starts, np.r_[starts[1:], len(order)]):
        rank_in_cell[order[s:e]] = np.arange(e - s)
    keep = np.lexsort((-resp, rank_in_cell))[:n]
    return pts[keep], desc[keep]


# ------------------------------------------------------------------------------------------- signatures
def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts = np.concatenate([p for p, _ in parts]) if parts else np.zeros((0, 2), np.float32)
    desc = np.concatenate([d for _, d in parts]) if parts else np.zeros((0, 32), np.uint8)
    offsets = np.r_[0, np.cumsum([len(d) for _, d in parts])].astype(np.int64)
    return pts.reshape(-1, 2).astype(np.float32), desc.reshape(-1, 32), offsets


@dataclass
class Signatures:
    """What the detector keeps of a set of images.

    ``pts``/``desc``: concatenated features, image ``i`` owning rows ``offsets[i]:offsets[i+1]``; ``shapes`` [N,2]:
    (h, w) of the working images; ``enlarged`` [N]: the factor each was enlarged by (:func:`work_image`);
    ``fpts``/``fdesc``/``foffsets``: the same for the images flipped left-right (only a query side needs them);
    ``images``: the working images for the pixel comparison (``None``: features only, as a checkpoint keeps them)."""

    pts: np.ndarray
    desc: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    enlarged: np.ndarray
    fpts: np.ndarray | None = None
    fdesc: np.ndarray | None = None
    foffsets: np.ndarray | None = None
    images: list[np.ndarray] | None = None
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def flipped(self) -> bool:
        return self.fdesc is not None

    def features(self, i: int, flipped: bool = False) -> tuple[np.ndarray, np.ndarray]:
        pts, desc, offs = (self.fpts, self.fdesc, self.foffsets) if flipped else (self.pts, self.desc, self.offsets)
        if pts is None or desc is None or offs is None:
            raise ValueError("these signatures hold no flipped features")
        return pts[offs[i] : offs[i + 1]], desc[offs[i] : offs[i + 1]]

    def subset(self, idx: Sequence[int] | np.ndarray) -> Signatures:
        idx = [int(i) for i in idx]
        out = Signatures(*_concat([self.features(i) for i in idx]), shapes=self.shapes[idx].reshape(-1, 2),
                         enlarged=self.enlarged[idx], images=[self.images[i] for i in idx] if self.images else None,
                         names=[self.names[i] for i in idx] if self.names else [])  # fmt: skip
        if self.flipped:
            out.fpts, out.fdesc, out.foffsets = _concat([self.features(i, True) for i in idx])
        if self.images is not None and not idx:
            out.images = []
        return out

    @staticmethod
    def join(parts: Sequence[Signatures]) -> Signatures:
        """One set of signatures from several (in order)."""
        out = Signatures(*_concat([p.features(i) for p in parts for i in range(len(p))]),
                         shapes=np.concatenate([p.shapes for p in parts]).reshape(-1, 2).astype(np.int64),
                         enlarged=np.concatenate([p.enlarged for p in parts]).astype(np.float32),
                         images=[im for p in parts for im in p.images] if all(p.images is not None for p in parts)
                         else None, names=[n for p in parts for n in (p.names or [""] * len(p))])  # fmt: skip
        if parts and all(p.flipped for p in parts):
            out.fpts, out.fdesc, out.foffsets = _concat([p.features(i, True) for p in parts for i in range(len(p))])
        return out

    def to_state(self, n: int = N_STORED) -> dict[str, np.ndarray]:
        """Features only, at most ``n`` per image (no pixels, no flipped features): what a generator checkpoint
        keeps of its training images. Keypoints as float16 (1/8 px at :data:`WORK_SIDE`)."""
        parts = [(p[:n], d[:n]) for p, d in (self.features(i) for i in range(len(self)))]
        pts, desc, offsets = _concat(parts)
        return {"pts": pts.astype(np.float16), "desc": desc, "offsets": offsets,
                "shapes": self.shapes.astype(np.int32), "enlarged": self.enlarged.astype(np.float32)}  # fmt: skip

    @classmethod
    def from_state(cls, st: dict) -> Signatures:
        """Read :meth:`to_state`'s arrays back (any array-likes: numpy arrays or tensors); ``ValueError`` when they
        do not fit together."""
        try:
            g = {k: np.asarray(st[k]) for k in ("pts", "desc", "offsets", "shapes", "enlarged")}
        except KeyError as e:
            raise ValueError(f"duplicate-detector signatures without {e}") from None
        n = len(g["shapes"])
        ok = (g["desc"].ndim == 2 and g["desc"].shape[1] == 32 and g["pts"].shape == (len(g["desc"]), 2)
              and g["offsets"].shape == (n + 1,) and g["shapes"].shape == (n, 2) and g["enlarged"].shape == (n,)
              and (n == 0 or (g["offsets"][0] == 0 and g["offsets"][-1] == len(g["desc"])
                              and not np.any(np.diff(g["offsets"]) < 0))))  # fmt: skip
        if not ok:
            raise ValueError("inconsistent duplicate-detector signatures")
        return cls(g["pts"].astype(np.float32), g["desc"].astype(np.uint8), g["offsets"].astype(np.int64),
                   g["shapes"].astype(np.int64), g["enlarged"].astype(np.float32))  # fmt: skip


def empty_signatures() -> Signatures:
    return Signatures(*_concat([]), shapes=np.zeros((0, 2), np.int64), enlarged=np.zeros(0, np.float32))


def _one(img: np.ndarray, flipped: bool) -> tuple:
    w, s = work_image(img)
    return w, orb_features(w), orb_features(cv2.flip(w, 1)) if flipped else None, s


def signatures(
    images: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    *,
    n: int | None = None,
    flipped: bool = True,
    keep_images: bool = True,
    names: Sequence[str] | None = None,
    threads: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> Signatures:
    """Signatures of ``images`` (arrays: uint8, or float in [0, 1]; or a function ``i -> image`` with ``n`` images,
    for reading files one at a time). ``flipped``: also the features of each image flipped left-right (the query
    side of a search); ``keep_images``: keep the working images for the pixel comparison. ``progress(k)`` is called
    as images are done."""
    if callable(images):
        get, count = images, int(n or 0)
    else:
        get, count = images.__getitem__, len(images)
    out: list = [None] * count

    def job(i: int) -> None:
        out[i] = _one(get(i), flipped)
        if progress is not None:
            progress(1)

    threads = threads or min(2, os.cpu_count() or 1)
    if threads > 1 and count > 8:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(job, range(count)))
    else:
        for i in range(count):
            job(i)
    if not count:
        sig = empty_signatures()
        sig.images = [] if keep_images else None
        if flipped:
            sig.fpts, sig.fdesc, sig.foffsets = _concat([])
        return sig
    sig = Signatures(*_concat([o[1] for o in out]), shapes=np.array([o[0].shape for o in out], np.int64),
                     enlarged=np.array([o[3] for o in out], np.float32),
                     images=[o[0] for o in out] if keep_images else None, names=list(names or []))  # fmt: skip
    if flipped:
        sig.fpts, sig.fdesc, sig.foffsets = _concat([o[2] for o in out])
    return sig


def original_image(path: str | os.PathLike, cached: np.ndarray | None = None) -> np.ndarray:
    """The image as its file holds it (not the cache's letterboxed square), as uint8; ``cached`` when ``path`` is
    not a readable image file (phantoms, in-memory images, a file gone since it was cached)."""
    from cxraug.data.imageio import is_regular, read_image
    from cxraug.errors import ImageReadError

    try:
        if is_regular(path):
            return _u8(read_image(path))
        raise ImageReadError(path, "not a readable image file")
    except ImageReadError:
        if cached is None:
            raise
    return _u8(cached)


def dataset_signatures(
    paths: Sequence[str], cached: Sequence[np.ndarray] | np.ndarray | None = None, *, flipped: bool = True,
    keep_images: bool = True, progress: Callable[[int], object] | None = None,
) -> Signatures:
    """Signatures of a dataset's images read from their files (``cached[i]`` where ``paths[i]`` is not one)."""
    return signatures(lambda i: original_image(paths[i], None if cached is None else cached[i]), n=len(paths),
                      flipped=flipped, keep_images=keep_images, names=list(paths), progress=progress)  # fmt: skip


# ------------------------------------------------------------------------------------------- candidates
def _hash_bytes(seed: int = 0) -> np.ndarray:
    """Per table, the three descriptor bytes its key is made of: two whole, and the high half of a third (20 bits)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(32), rng.permutation(32)])
    return order[: 3 * N_TABLES].reshape(N_TABLES, 3)


_BYTES = _hash_bytes()


def _keys(desc: np.ndarray) -> np.ndarray:
    """[M, T] int64 hash keys of descriptors [M, 32] (:data:`KEY_BITS` = 20 bits each)."""
    d = desc.astype(np.int64)
    return np.stack([(d[:, p] << 12) | (d[:, q] << 4) | (d[:, r] >> 4) for p, q, r in _BYTES], 1).reshape(-1, N_TABLES)


class _Index:
    """The hash tables of an index's features, addressed directly by key: per table, the features sorted by key,
    where each key's run starts and how long it is, and the image owning each feature."""

    def __init__(self, sig: Signatures):
        self.n = len(sig)
        owner = np.repeat(np.arange(self.n), np.diff(sig.offsets)).astype(np.int64)
        keys = _keys(sig.desc)
        self.tables = []
        for t in range(N_TABLES):
            cnt = np.bincount(keys[:, t], minlength=1 << KEY_BITS)
            order = np.argsort(keys[:, t], kind="stable")
            self.tables.append((np.cumsum(cnt) - cnt, cnt, owner[order]))

    def votes(self, desc: np.ndarray, owner: np.ndarray, n_query: int) -> np.ndarray:
        """[n_query, n]: buckets each query image shares with each index image, each weighted 1/sqrt(its size)
        (a shared rare key says more than a shared common one; keys above :data:`BUCKET_CAP` are ignored)."""
        out = np.zeros(n_query * self.n, np.float64)
        if not len(desc) or not self.n:
            return out.reshape(n_query, self.n)
        keys = _keys(desc)
        for t, (start, cnt, own) in enumerate(self.tables):
            c = cnt[keys[:, t]]
            hit = (c > 0) & (c <= BUCKET_CAP)
            q, s, c = owner[hit], start[keys[hit, t]], c[hit]
            if not len(q):
                continue
            first = np.repeat(s - np.r_[0, np.cumsum(c)[:-1]], c) + np.arange(c.sum())
            out += np.bincount(np.repeat(q, c) * self.n + own[first], weights=np.repeat(1.0 / np.sqrt(c), c),
                               minlength=out.size)  # fmt: skip
        return out.reshape(n_query, self.n)


@dataclass
class Candidate:
    i: int
    j: int
    votes: float
    orientations: tuple[bool, ...]  # query orientations worth verifying (False: as is, True: flipped)


def candidate_pairs(
    query: Signatures, index: Signatures, *, same: bool = False, top_k: int = TOP_K, min_votes: float = MIN_VOTES,
    chunk: int = 256,
) -> list[Candidate]:
    """For each query image (as is, and flipped when the query holds flipped features), the ``top_k`` index images
    sharing the most hash buckets (at least ``min_votes``). ``same``: the query is the index (pairs i < j)."""
    if not len(query) or not len(index):
        return []
    ix = _Index(index)
    votes: dict[tuple[int, int], list[float]] = {}
    for flipped in (False, True) if query.flipped else (False,):
        offs = query.foffsets if flipped else query.offsets
        desc = query.fdesc if flipped else query.desc
        for a in range(0, len(query), chunk):
            b = min(a + chunk, len(query))
            owner = np.repeat(np.arange(b - a), np.diff(offs[a : b + 1]))
            v = ix.votes(desc[offs[a] : offs[b]], owner, b - a)
            if same:
                v[np.arange(b - a), np.arange(a, b)] = 0
            k = min(top_k, v.shape[1])
            top = np.argpartition(-v, k - 1, axis=1)[:, :k]
            for qi, c in zip(*np.nonzero(np.take_along_axis(v, top, 1) >= min_votes)):
                i, j = a + int(qi), int(top[qi, c])
                key = (i, j) if not same or i < j else (j, i)
                slot = votes.setdefault(key, [0.0, 0.0])
                slot[int(flipped)] = max(slot[int(flipped)], float(v[qi, j]))
    out = []
    for (i, j), (v0, v1) in sorted(votes.items()):
        best = max(v0, v1)
        orient = tuple(f for f, v in ((False, v0), (True, v1)) if v >= max(min_votes, 0.5 * best))
        out.append(Candidate(i, j, best, orient))
    return out


# ------------------------------------------------------------------------------------------- verification
@dataclass
class Evidence:
    """Why a pair is, or is not, the same radiograph."""

    same: bool
    inliers: int = 0  # RANSAC inliers of the feature matches
    matches: int = 0  # feature matches passing the ratio test
    spread: float = 0.0  # the inliers' convex hull / the first image's working area
    flipped: bool = False  # the first image was flipped left-right to match
    scale: tuple[float, float] = (0.0, 0.0)  # the affine map's scales along x and y (second / first)
    rotation: float = 0.0  # degrees
    correlation: float | None = None  # median tile correlation at zero shift (None: no pixels compared)
    shift_gain: float | None = None  # median gain of shifting a tile (0 for a copy)
    tiles: int = 0
    reason: str = ""  # why not (empty when same)
    affine: list[float] | None = None  # the map from the first (flipped if so) working image to the second, 2x3 row-major

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
        return {"same": self.same, "inliers": self.inliers, "matches": self.matches, "spread": r(self.spread),
                "flipped": self.flipped, "scale_x": r(self.scale[0]), "scale_y": r(self.scale[1]),
                "rotation_deg": r(self.rotation), "correlation": r(self.correlation),
                "shift_gain": r(self.shift_gain), "tiles": self.tiles, "reason": self.reason}  # fmt: skip


_BF = cv2.BFMatcher(cv2.NORM_HAMMING)


def _affine_ok(m: np.ndarray) -> tuple[bool, tuple[float, float], float, str]:
    a = m[:, :2].astype(np.float64)
    sx, sy = float(np.hypot(a[0, 0], a[1, 0])), float(np.hypot(a[0, 1], a[1, 1]))
    if np.linalg.det(a) <= 0:
        return False, (sx, sy), 0.0, "mirror-image map"
    u, s, vt = np.linalg.svd(a)
    r = u @ vt  # the rotation of the polar decomposition
    rot = float(np.degrees(np.arctan2(r[1, 0], r[0, 0])))
    shear = abs(float(a[:, 0] @ a[:, 1])) / max(sx * sy, 1e-9)
    why = ("scale out of range" if not SCALE_RANGE[0] <= s.min() <= s.max() <= SCALE_RANGE[1]
           else "too anisotropic" if s.max() / s.min() > MAX_ANISOTROPY else "sheared" if shear > MAX_SHEAR
           else "rotated" if abs(rot) > MAX_ROTATION_DEG else "")  # fmt: skip
    return not why, (sx, sy), rot, why


def _match(pa: np.ndarray, da: np.ndarray, pb: np.ndarray, db: np.ndarray):
    """(affine map a -> b or None, ratio-test matches, inlier points of a)."""
    if len(da) < 8 or len(db) < 8:
        return None, 0, None
    good = [m[0] for m in _BF.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 6:
        return None, len(good), None
    src = pa[[g.queryIdx for g in good]]
    dst = pb[[g.trainIdx for g in good]]
    m, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=1000,
                                  confidence=0.995, refineIters=10)  # fmt: skip
    if m is None:
        return None, len(good), None
    return m, len(good), src[inl.ravel().astype(bool)]


def _rank01(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grey levels replaced by their rank among the masked pixels, in [0, 1] (invariant to any monotone change)."""
    hist = np.bincount(x[mask].ravel(), minlength=256).astype(np.float64)
    return (np.cumsum(hist) / max(hist.sum(), 1.0))[x].astype(np.float32)


def _band(x: np.ndarray, u: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), 1.0 * u) - cv2.GaussianBlur(x, (0, 0), 4.0 * u)


def _aligned(a: np.ndarray, b: np.ndarray, m: np.ndarray, u: float):
    """Band-passed rank images of ``a`` and of ``b`` warped onto it, and the mask of their common content."""
    h, w = a.shape
    bw = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0)
    valid = cv2.warpAffine(np.full(b.shape, 255, np.uint8), m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    flat = []
    for x in (a, bw):  # flat borders, bars, burnt-out regions: no content to compare
        f = x.astype(np.float32)
        flat.append(cv2.blur((f - cv2.blur(f, (7, 7))) ** 2, (7, 7)) < 0.25)
    mask = (valid > 0) & ~flat[0] & ~flat[1]
    mask = cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    if mask.mean() < 0.1:
        return None
    return _band(_rank01(a, mask), u), _band(_rank01(bw, mask), u), mask


def _tiles(fa: np.ndarray, fb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per tile of content: [correlation at zero shift, best correlation within SHIFT px, x, y, dx, dy]."""
    h, w = fa.shape
    t, r = TILE, SHIFT
    rows = []
    for y in range(r, h - t - r + 1, t // 2):  # half-overlapping tiles: a steadier median where the overlap is small
        for x in range(r, w - t - r + 1, t // 2):
            if mask[y : y + t, x : x + t].mean() < 0.9:
                continue
            tile = fa[y : y + t, x : x + t]
            if tile.std() < 1e-4:
                continue
            res = cv2.matchTemplate(fb[y - r : y + t + r, x - r : x + t + r], tile, cv2.TM_CCOEFF_NORMED)
            k = np.unravel_index(int(res.argmax()), res.shape)
            rows.append((res[r, r], res.max(), x + t / 2, y + t / 2, k[1] - r, k[0] - r))
    return np.array(rows, np.float64).reshape(-1, 6)


def _refine(a: np.ndarray, b: np.ndarray, m: np.ndarray, u: float) -> np.ndarray:
    """The affine map corrected by the tiles' best shifts (least median of squares over tile centres)."""
    al = _aligned(a, b, m, u)
    if al is None:
        return m
    t = _tiles(*al)
    t = t[t[:, 1] > 0.5]
    if len(t) < 6:
        return m
    c, _ = cv2.estimateAffine2D(t[:, 2:4].astype(np.float32), (t[:, 2:4] + t[:, 4:6]).astype(np.float32),
                                method=cv2.LMEDS)  # fmt: skip
    if c is None:
        return m
    return (np.vstack([m, [0, 0, 1]]) @ np.vstack([c, [0, 0, 1]]))[:2]


def compare_pixels(a: np.ndarray, b: np.ndarray, m: np.ndarray, *, u: float = 1.0) -> tuple[float, float, float, int] | None:
    """Working images ``a`` and ``b`` with the affine map ``m`` (a's coordinates -> b's) and the resolution factor
    ``u`` (how many working pixels the coarser image's pixel spans): (median and lower-quartile tile correlation
    at zero shift, median gain of the best shift within SHIFT px, number of tiles), after refining ``m`` twice from
    the tiles' shifts; None when they hardly overlap."""
    for _ in range(2):
        m = _refine(a, b, m, u)
    al = _aligned(a, b, m, u)
    if al is None:
        return None
    t = _tiles(*al)
    if len(t) < MIN_TILES:
        return None
    return float(np.median(t[:, 0])), float(np.percentile(t[:, 0], 25)), float(np.median(t[:, 1] - t[:, 0])), len(t)


def verify(query: Signatures, i: int, index: Signatures, j: int, *, orientations: Sequence[bool] | None = None
) -> Evidence:
    """Is query image ``i`` the same radiograph as index image ``j``? ``orientations``: which orientations of the
    query to try (default: as is, and flipped when the query holds flipped features)."""
    tries = list(orientations) if orientations is not None else [False, True] if query.flipped else [False]
    best: Evidence | None = None
    for f in tries:
        ev = _verify_one(query, i, index, j, bool(f))
        if ev.same:
            return ev
        if best is None or ev.inliers > best.inliers:
            best = ev
    return best if best is not None else Evidence(False, reason="no features")


def _verify_one(query: Signatures, i: int, index: Signatures, j: int, flipped: bool) -> Evidence:
    pa, da = query.features(i, flipped)
    pb, db = index.features(j)
    m, n_match, inl = _match(pa, da, pb, db)
    if m is None:
        return Evidence(False, matches=n_match, flipped=flipped, reason="no consistent geometry")
    ok, scale, rot, why = _affine_ok(m)
    h, w = query.shapes[i]
    spread = float(cv2.contourArea(cv2.convexHull(inl))) / float(h * w) if len(inl) >= 3 else 0.0
    ev = Evidence(False, len(inl), n_match, spread, flipped, scale, rot, reason=why,
                  affine=[float(x) for x in m.ravel()])  # fmt: skip
    if not ok:
        return ev
    pixels = query.images is not None and index.images is not None
    need, spread_need = (MIN_INLIERS, MIN_SPREAD) if pixels else (MIN_INLIERS_FEATURES_ONLY, MIN_SPREAD_FEATURES_ONLY)
    if ev.inliers < need or spread < spread_need:
        ev.reason = f"{ev.inliers} inliers over {spread:.0%} of the image"
        return ev
    if not pixels:
        ev.same = True
        return ev
    a, b = cv2.flip(query.images[i], 1) if flipped else query.images[i], index.images[j]
    s = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    ea, eb = float(query.enlarged[i]), float(index.enlarged[j])
    # both ways, each image the frame once: the decision must not depend on which image is the query
    tests = ((a, b, m, max(ea, eb / max(s, 1e-6), 1.0)), (b, a, cv2.invertAffineTransform(m), max(eb, ea * s, 1.0)))
    for x, y, mm, u in tests:
        px = compare_pixels(x, y, mm, u=u)
        if px is None:
            ev.reason = "too little common content to compare"
            return ev
        z50, z25, gain, n_tiles = px
        ev.correlation = z50 if ev.correlation is None else min(ev.correlation, z50)
        ev.shift_gain = gain if ev.shift_gain is None else max(ev.shift_gain, gain)
        ev.tiles = n_tiles if not ev.tiles else min(ev.tiles, n_tiles)
        if gain > MAX_SHIFT_GAIN:
            ev.reason = "the images move locally against each other (another acquisition)"
        elif z50 < MIN_CORRELATION:
            ev.reason = "pixels differ after alignment"
        elif u > LOW_RES_ENLARGEMENT and z25 < LOW_RES_MIN_CORRELATION:
            ev.reason = "too few pixels to tell a copy from another acquisition"
        if ev.reason:
            return ev
    ev.same = True
    return ev


def verify_pairs(
    query: Signatures, index: Signatures, pairs: Sequence[tuple[int, int]], *, threads: int | None = None
) -> list[Evidence]:
    """:func:`verify` for each (query image, index image) pair, on ``threads`` threads (default: up to 2)."""
    threads = threads or min(2, os.cpu_count() or 1)
    if threads > 1 and len(pairs) > 16:
        with ThreadPoolExecutor(threads) as ex:
            return list(ex.map(lambda ij: verify(query, ij[0], index, ij[1]), pairs))
    return [verify(query, i, index, j) for i, j in pairs]


# ------------------------------------------------------------------------------------------- search
@dataclass
class Match:
    i: int  # image of the first set
    j: int  # image of the second set (the first set again for a search within one, with i < j)
    evidence: Evidence
    votes: float = 0.0


def find_duplicates(
    a: Signatures, b: Signatures | None = None, *, top_k: int = TOP_K, extra_pairs: Sequence[tuple[int, int]] = (),
    threads: int | None = None, progress: Callable[[int], object] | None = None,
) -> list[Match]:
    """Verified duplicate pairs within ``a`` (``b`` None: pairs i < j) or between ``a`` and ``b`` (``a`` holds the
    flipped features, so ``b`` may be features only). ``extra_pairs``: candidate pairs found some other way (for
    instance perceptual-hash neighbours), verified as well."""
    same = b is None
    index = a if same else b
    cands = candidate_pairs(a, index, same=same, top_k=top_k)
    seen = {(c.i, c.j) for c in cands}
    for i, j in extra_pairs:
        key = (min(i, j), max(i, j)) if same else (int(i), int(j))
        if key not in seen and key[0] != key[1]:
            cands.append(Candidate(*key, 0.0, (False, True) if a.flipped else (False,)))
            seen.add(key)

    def job(c: Candidate) -> Match | None:
        ev = verify(a, c.i, index, c.j, orientations=c.orientations)
        if progress is not None:
            progress(1)
        return Match(c.i, c.j, ev, c.votes) if ev.same else None

    threads = threads or min(2, os.cpu_count() or 1)
    if threads > 1 and len(cands) > 16:
        with ThreadPoolExecutor(threads) as ex:
            found = list(ex.map(job, cands))
    else:
        found = [job(c) for c in cands]
    return [m for m in found if m is not None]


def copies_of(
    query: Signatures, index: Signatures, *, top_k: int = TOP_K, extra_pairs: Sequence[tuple[int, int]] = ()
) -> np.ndarray:
    """Boolean mask over ``query``: the images that are the same radiograph as some ``index`` image (``extra_pairs``:
    more candidate pairs to verify, see :func:`find_duplicates`)."""
    hit = np.zeros(len(query), bool)
    if len(query) and len(index):
        for m in find_duplicates(query, index, top_k=top_k, extra_pairs=extra_pairs):
            hit[m.i] = True
    return hit


def groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected groups (two or more images) of ``n`` images joined by ``pairs``."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(i)] = find(j)
    out: dict[int, list[int]] = {}
    for k in range(n):
        out.setdefault(find(k), []).append(k)
    return [g for g in out.values() if len(g) > 1]


# ------------------------------------------------------------------------------------------- contact sheet
def pair_panel(a: np.ndarray, b: np.ndarray, ev: Evidence, *, height: int = 160) -> np.ndarray:
    """One row of a contact sheet (BGR uint8): the first working image, the second, and the second warped onto the
    first over it (first in magenta, second in green: grey where they agree, colour where they differ)."""
    a = cv2.flip(a, 1) if ev.flipped else a
    panels = [a, b]
    if ev.affine is not None:
        m = np.asarray(ev.affine, np.float64).reshape(2, 3)
        bw = cv2.warpAffine(b, m, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        panels.append(np.dstack([a, bw, a]))
    out = []
    for p in panels:
        p = p if p.ndim == 3 else cv2.cvtColor(p, cv2.COLOR_GRAY2BGR)
        out.append(cv2.resize(p, (max(1, round(p.shape[1] * height / p.shape[0])), height), interpolation=cv2.INTER_AREA))
    return np.hstack([np.pad(x, ((0, 0), (0, 4), (0, 0)), constant_values=255) for x in out])


def contact_sheet(rows: Sequence[tuple[str, np.ndarray]], columns: int = 2) -> np.ndarray:
    """Label each panel (:func:`pair_panel`) with its text and tile them, ``columns`` per line (BGR uint8)."""
    if not rows:
        return np.full((40, 400, 3), 255, np.uint8)
    h = max(p.shape[0] for _, p in rows) + 22
    w = max(p.shape[1] for _, p in rows) + 8
    cells = []
    for label, p in rows:
        cell = np.full((h, w, 3), 255, np.uint8)
        cell[20 : 20 + p.shape[0], 4 : 4 + p.shape[1]] = p
        cv2.putText(cell, label[:90], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(cell)
    while len(cells) % columns:
        cells.append(np.full((h, w, 3), 255, np.uint8))
    return np.vstack([np.hstack(cells[r : r + columns]) for r in range(0, len(cells), columns)])
