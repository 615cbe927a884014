"""How well does the duplicate detector (cxraug.data.dedupe) find copies, and how often does it call different
radiographs the same? Beside it, the perceptual-hash screen it replaces (64-bit pHash, <= 4 bits). BENCHMARKS.md §3e.

    python benchmarks/dedupe_accuracy.py [--shared ../shared/data] [--sources 150] [--json out.json]

Copies: ``--sources`` real radiographs from covid-cxnet and pneumonia-kermany each (seeded), each made into a copy by
every transform of cxraug.data.copies (crop, border, rescale, text, window, jpeg, rotate, flip), by a random
combination, and by all eight at once; each copy is searched for in an index of every covid-cxnet image and 2,000
Kermany images (the sources among them) through ``find_duplicates``, as ``cxraug data dedupe`` does. A copy is found
when its source is among its verified matches. The same copies are searched for in the features a generator
checkpoint keeps (``Signatures.to_state``, no pixels).

Different radiographs (pairs verified directly with ``verify``, both orientations):

- kermany-same-patient: every pair of images of one Kermany patient (several visits or views of one child), less
  the pairs whose decoded pixels are identical and the pairs listed in SAME_RADIOGRAPH (one radiograph filed twice
  with another crop, checked by eye);
- kermany-same-patient-112px: the same pairs at half size (the detector's low-resolution regime);
- nih-follow-ups: every pair of images of one NIH patient (PATIENT_FOLLOWUP.png, 64 px);
- kermany-phash-collisions: pairs of *different* Kermany patients within 4 pHash bits (the old screen's alarms);
- kermany-different-patients: random pairs of different Kermany patients.
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from cxraug.data import dedupe as D
from cxraug.data.copies import KINDS, make_copy
from cxraug.data.imageio import read_image
from cxraug.data.preprocess import to_uint8
from cxraug.data.stats import fingerprints

# Pairs of one patient that are one radiograph filed twice, checked by eye (same side marker against the same
# anatomy, one crop inside the other): not "different radiographs", so left out of the negatives.
SAME_RADIOGRAPH = {("viral/person447_virus_921.png", "viral/person447_virus_921_1.png")}


def u8(path: str | os.PathLike) -> np.ndarray:
    return to_uint8(read_image(path))


def kermany_rows(root: Path) -> list[dict]:
    with open(root / "pneumonia-kermany" / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def copy_sources(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` covid-cxnet and ``n`` Kermany image paths."""
    rng = np.random.default_rng(seed)
    cx = sorted(str(p) for p in (root / "covid-cxnet").glob("*.png"))
    km = [str(root / "pneumonia-kermany" / r["path"]) for r in kermany_rows(root)]
    return [cx[i] for i in rng.choice(len(cx), n, replace=False)] + [km[i] for i in rng.choice(len(km), n, replace=False)]


def copy_index(root: Path, sources: list[str], n_kermany: int = 2000, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed + 1)
    km = [str(root / "pneumonia-kermany" / r["path"]) for r in kermany_rows(root)]
    cx = sorted(str(p) for p in (root / "covid-cxnet").glob("*.png"))
    return sorted(set(cx) | {km[i] for i in rng.choice(len(km), min(n_kermany, len(km)), replace=False)} | set(sources))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between rows of packed 64-bit hashes a[k] and b[k]."""
    return np.unpackbits(a ^ b, axis=1).sum(1)


def known_different_pairs(root: Path, max_pairs: int | None = None, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """The negative sets named in the module docstring, as (path, path) pairs (each set at most ``max_pairs``,
    seeded), before the identical-pixel filter (:func:`drop_identical`)."""
    rng = np.random.default_rng(seed)
    rows = kermany_rows(root)
    km = root / "pneumonia-kermany"
    by_patient = collections.defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r["path"])
    same = [(a, b) for v in by_patient.values() for a, b in itertools.combinations(sorted(v), 2)
            if (a, b) not in SAME_RADIOGRAPH and (b, a) not in SAME_RADIOGRAPH]  # fmt: skip
    nih = collections.defaultdict(list)
    for p in sorted((root / "nih-64").rglob("*.png")):
        nih[p.stem.split("_")[0]].append(str(p))
    follow = [(a, b) for v in nih.values() for a, b in itertools.combinations(v, 2)]
    paths = [r["path"] for r in rows]
    pid = {r["path"]: r["patient_id"] for r in rows}
    fp = fingerprints([u8(km / p) for p in paths])
    bits = np.unpackbits(fp, axis=1).astype(bool)
    collide = []
    for a in range(0, len(paths), 512):
        d = (bits[a : a + 512, None, :] != bits[None]).sum(-1)
        for i, j in zip(*np.nonzero(d <= 4)):
            if a + i < j and pid[paths[a + i]] != pid[paths[j]]:
                collide.append((paths[a + i], paths[j]))
    rand = []
    while len(rand) < 2000:
        i, j = rng.choice(len(paths), 2, replace=False)
        if pid[paths[i]] != pid[paths[j]]:
            rand.append((paths[min(i, j)], paths[max(i, j)]))

    def cap(x: list) -> list:
        if max_pairs is None or len(x) <= max_pairs:
            return x
        return [x[i] for i in sorted(rng.choice(len(x), max_pairs, replace=False))]

    def full(x: list) -> list[tuple[str, str]]:
        return [(str(km / a), str(km / b)) for a, b in x]

    return {"kermany-same-patient": full(cap(same)), "nih-follow-ups": cap(follow),
            "kermany-phash-collisions": full(cap(collide)), "kermany-different-patients": full(cap(rand))}  # fmt: skip


def drop_identical(pairs: list[tuple[str, str]], images: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """Pairs whose decoded pixels differ (identical pixels are one radiograph filed twice)."""
    return [(a, b) for a, b in pairs if images[a].shape != images[b].shape or not np.array_equal(images[a], images[b])]


def half(im: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA)


def false_positives(pairs: list[tuple[str, str]], images: dict[str, np.ndarray]) -> dict:
    """Verify every pair with pixels and with features only; the pHash screen on the same pairs."""
    paths = sorted({p for ab in pairs for p in ab})
    at = {p: k for k, p in enumerate(paths)}
    sig = D.signatures([images[p] for p in paths])
    feat = D.Signatures.from_state(sig.to_state())
    fp = fingerprints([images[p] for p in paths])
    t = time.perf_counter()
    ev = D.verify_pairs(sig, sig, [(at[a], at[b]) for a, b in pairs])
    secs = time.perf_counter() - t
    hits = [(a, b) for (a, b), e in zip(pairs, ev) if e.same]
    # the margin: the pairs that got furthest (geometry and pixel correlation passed), by their shift gain
    close = sorted((e.shift_gain, a, b) for (a, b), e in zip(pairs, ev)
                   if e.shift_gain is not None and e.correlation is not None and e.correlation >= D.MIN_CORRELATION)[:5]
    hits_feat = [(a, b) for a, b in pairs if D.verify(sig, at[a], feat, at[b]).same]
    ia, ib = np.array([at[a] for a, _ in pairs], int), np.array([at[b] for _, b in pairs], int)
    ph = int((hamming(fp[ia], fp[ib]) <= 4).sum()) if pairs else 0
    return {"pairs": len(pairs), "detector": len(hits), "features_only": len(hits_feat), "phash": ph,
            "detector_pairs": hits, "closest": close, "verify_pairs_per_s": len(pairs) / max(secs, 1e-9)}  # fmt: skip


def recall(sources: list[str], index: list[str], images: dict[str, np.ndarray], kinds: list[str],
           seed: int = 0) -> dict[str, dict]:  # fmt: skip
    """Per transform kind: copies found by the detector (pixels), by the features a checkpoint keeps, by pHash."""
    sig_index = D.signatures([images[p] for p in index], flipped=False)
    feat_index = D.Signatures.from_state(sig_index.to_state())
    fp_index = fingerprints([images[p] for p in index])
    at = {p: k for k, p in enumerate(index)}
    copies, truth, kind_of = [], [], []
    for kind in kinds:
        for k, p in enumerate(sources):
            copies.append(make_copy(images[p], kind, seed * 100003 + k))
            truth.append(at[p])
            kind_of.append(kind)
    sig = D.signatures(copies)
    matches = D.find_duplicates(sig, sig_index)
    found = {(m.i, m.j) for m in matches}
    gains = [m.evidence.shift_gain for m in matches if (m.i, m.j) in set(zip(range(len(truth)), truth))]
    found_feat = {(m.i, m.j) for m in D.find_duplicates(sig, feat_index)}
    ph = hamming(fingerprints(copies), fp_index[truth]) <= 4
    out: dict[str, dict] = {"_found_shift_gain": {"p99": float(np.percentile(gains, 99)), "max": float(max(gains))}}
    for q, (j, kind) in enumerate(zip(truth, kind_of)):
        r = out.setdefault(kind, {"copies": 0, "detector": 0, "features_only": 0, "phash": 0, "missed": []})
        r["copies"] += 1
        r["detector"] += (q, j) in found
        r["features_only"] += (q, j) in found_feat
        r["phash"] += bool(ph[q])
        if (q, j) not in found:
            r["missed"].append(index[j])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--sources", type=int, default=150, help="source images per collection; default %(default)s")
    ap.add_argument("--max-pairs", type=int, default=None, help="cap on each negative set (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    root = a.shared.resolve()
    t0 = time.perf_counter()
    neg = known_different_pairs(root, a.max_pairs)
    sources = copy_sources(root, a.sources)
    index = copy_index(root, sources)
    need = sorted({p for v in neg.values() for ab in v for p in ab} | set(index))
    images = {p: u8(p) for p in need}
    neg = {k: drop_identical(v, images) for k, v in neg.items()}
    small = {p: half(images[p]) for ab in neg["kermany-same-patient"] for p in ab}
    res: dict = {"negatives": {}, "copies": {}}
    for name, pairs in neg.items():
        res["negatives"][name] = false_positives(pairs, images)
    res["negatives"]["kermany-same-patient-112px"] = false_positives(neg["kermany-same-patient"], small)
    res["copies"] = recall(sources, index, images, list(KINDS))
    res["seconds"] = time.perf_counter() - t0
    print(f"{'copies':<28} {'n':>6} {'detector':>9} {'features':>9} {'pHash<=4':>9}")
    for kind, r in res["copies"].items():
        if kind.startswith("_"):
            continue
        n = r["copies"]
        print(f"{kind:<28} {n:>6} {100 * r['detector'] / n:>8.1f}% {100 * r['features_only'] / n:>8.1f}% "
              f"{100 * r['phash'] / n:>8.1f}%")  # fmt: skip
    print(f"\n{'different radiographs':<28} {'pairs':>6} {'detector':>9} {'features':>9} {'pHash<=4':>9}  (false positives)")
    for name, r in res["negatives"].items():
        print(f"{name:<28} {r['pairs']:>6} {r['detector']:>9} {r['features_only']:>9} {r['phash']:>9}")
        for p, q in r["detector_pairs"]:
            print(f"    detector: {os.path.relpath(p, root)}  {os.path.relpath(q, root)}")
        if r["closest"]:
            print(f"    closest shift gains: {', '.join(f'{g:.4f}' for g, _, _ in r['closest'])} "
                  f"(a copy needs <= {D.MAX_SHIFT_GAIN})")  # fmt: skip
    g = res["copies"]["_found_shift_gain"]
    print(f"copies found: shift gain p99 {g['p99']:.4f}, max {g['max']:.4f}")
    print(f"\n{res['seconds']:.0f} s in all")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
