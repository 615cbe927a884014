"""How fast is the duplicate detector (cxraug.data.dedupe), stage by stage, beside the pHash screen it replaces,
and how does it grow with the collection? BENCHMARKS.md §3e.

    python benchmarks/dedupe_speed.py [--shared ../shared/data] [--sizes 500,1000,2000,5000] [--json out.json]

For each size N: B is N real radiographs (covid-cxnet, pneumonia-kermany, nih-64, shuffled), A is N copies made by
cxraug.data.copies (every transform in turn, and combinations) of N images drawn from the same pool, so about as
many of A's images have their original in B as the pool allows. A is screened against B as ``cxraug data dedupe A
B`` does (the pHash pairs verified too) and each stage is timed: features (ORB on the working images; A also
flipped), candidates (hash index of B's features, votes for A's), verification (feature matching, RANSAC, pixel
comparison of every candidate pair), and the pHash screen (hash both sets, every pair's Hamming distance).
Decoding the files is timed apart. Threads: up to 2 (the CPU count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from cxraug.data import dedupe as D
from cxraug.data.copies import KINDS, make_copy
from cxraug.data.imageio import read_image
from cxraug.data.preprocess import to_uint8
from cxraug.data.splits import NEAR_DUPLICATE_BITS
from cxraug.data.stats import fingerprints, hamming_pairs, min_hamming


def pool(root: Path) -> list[Path]:
    files = sorted((root / "covid-cxnet").glob("*.png")) + sorted((root / "pneumonia-kermany").rglob("*.png"))
    files += sorted((root / "nih-64").rglob("*.png"))
    return [files[i] for i in np.random.default_rng(0).permutation(len(files))]


def run(files: list[Path], n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    t = time.perf_counter()
    b = [to_uint8(read_image(p)) for p in files[:n]]
    a_src = [to_uint8(read_image(files[i])) for i in rng.choice(len(files), n, replace=False)]
    read = time.perf_counter() - t
    a = [make_copy(im, kinds[k % len(kinds)], k) for k, im in enumerate(a_src)]
    out: dict = {"n": n, "read_s": read}
    t = time.perf_counter()
    sa = D.signatures(a, flipped=True)
    sb = D.signatures(b, flipped=False)
    out["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    cands = D.candidate_pairs(sa, sb)
    out["candidates_s"] = time.perf_counter() - t
    out["candidate_pairs"] = len(cands)
    t = time.perf_counter()
    fa, fb = fingerprints(a), fingerprints(b)
    extra = hamming_pairs(fa, fb, threshold=NEAR_DUPLICATE_BITS)
    out["phash_pairs"] = len(extra)
    t_hash = time.perf_counter() - t
    t = time.perf_counter()
    flagged = int((min_hamming(fa, fb) <= NEAR_DUPLICATE_BITS).sum())
    out["phash_s"] = t_hash + time.perf_counter() - t
    out["phash_flagged"] = flagged
    seen = {(c.i, c.j) for c in cands}
    pairs = [(c.i, c.j) for c in cands] + [ij for ij in extra if ij not in seen]
    t = time.perf_counter()
    ev = D.verify_pairs(sa, sb, pairs)
    out["verify_s"] = time.perf_counter() - t
    out["verified_pairs"] = len(pairs)
    out["a_with_copy"] = len({i for (i, _), e in zip(pairs, ev) if e.same})
    out["total_s"] = out["features_s"] + out["candidates_s"] + out["verify_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--sizes", default="500,1000,2000,5000", help="collection sizes N (A and B each); default %(default)s")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    files = pool(a.shared.resolve())
    sizes = [int(x) for x in a.sizes.split(",")]
    if max(sizes) > len(files):
        raise SystemExit(f"only {len(files)} images under {a.shared}")
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    print(f"{cpu}, {os.cpu_count()} CPUs; threads: {min(2, os.cpu_count() or 1)}")
    print(f"{'N':>6} {'features img/s':>15} {'candidates img/s':>17} {'verify pairs/s':>15} {'pairs':>7} "
          f"{'pHash img/s':>12} {'detector total':>15} {'pHash total':>12} {'A with copy':>12} {'pHash flagged':>14}")  # fmt: skip
    rows = []
    for n in sizes:
        r = run(files, n)
        rows.append(r)
        print(f"{n:>6} {2 * n / r['features_s']:>15.0f} {n / r['candidates_s']:>17.0f} "
              f"{r['verified_pairs'] / r['verify_s']:>15.0f} {r['verified_pairs']:>7} {2 * n / r['phash_s']:>12.0f} "
              f"{r['total_s']:>14.1f}s {r['phash_s']:>11.1f}s {r['a_with_copy']:>12} {r['phash_flagged']:>14}",
              flush=True)  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
