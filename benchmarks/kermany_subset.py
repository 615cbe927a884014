"""Write the two-class Kermany manifest the headline pneumonia study reads (viral vs bacterial).

    python benchmarks/kermany_subset.py [--manifest ../shared/data/pneumonia-kermany/manifest.csv]

A study source reads every row of a manifest, and a manifest source cannot keep only some of its labels
(``ManifestSpec`` has no label filter yet), so ``benchmarks/study-pneumonia.yaml`` reads this file instead: the
shared manifest's ``viral`` and ``bacterial`` rows, unchanged (``path``, ``label``, ``patient_id``), paths still
relative to the shared folder (the study config sets ``root:``). No image is copied. The file is committed so
that a fresh clone runs the study; this script regenerates it and checks that it still matches the shared manifest.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

KEEP = ("viral", "bacterial")
OUT = Path(__file__).parent / "data" / "kermany-viral-bacterial.csv"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default="../shared/data/pneumonia-kermany/manifest.csv")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    with open(a.manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in KEEP]
    with open(a.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "patient_id"])
        w.writerows([r["path"], r["label"], r["patient_id"]] for r in rows)
    counts = {k: sum(r["label"] == k for r in rows) for k in KEEP}
    print(f"{a.out}: {len(rows)} rows {counts}, {len({r['patient_id'] for r in rows})} patients")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
