"""``cxraug data inspect|prepare|split|dedupe``: look at a collection, cache it, split it by patient, find copies."""

from __future__ import annotations

import argparse
import json
import os
import sys

from cxraug.cli.args import add_manifest_args, manifest_from_args
from cxraug.errors import ConfigError, CXRAugError, show_path


# ----------------------------------------------------------------------------- arguments
def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="folder-per-class root, CSV/TSV manifest, cache folder, or 'phantom[:normal=300,covid=60]'")
    p.add_argument(
        "--size", type=int, default=64, help="square output size in px (64, 96, 128, 256, 299); default %(default)s"
    )
    p.add_argument("--clahe", action="store_true", help="apply CLAHE contrast equalisation (OpenCV)")
    p.add_argument("--clahe-clip", type=float, default=2.0, help="CLAHE clip limit; default %(default)s")
    p.add_argument("--clahe-tile", type=int, default=8, help="CLAHE tile grid size (1..64); default %(default)s")
    p.add_argument(
        "--resize", choices=["pad", "crop", "direct"], default="pad", help="aspect handling; default %(default)s"
    )
    p.add_argument("--cache-dir", default=None, help="cache root (default $CXRAUG_CACHE or ~/.cache/cxraug)")
    add_manifest_args(p)


def _data_cfg(a: argparse.Namespace):
    from cxraug.data.source import DataConfig

    cfg = DataConfig(path=a.path, size=a.size, clahe=a.clahe, clahe_clip=a.clahe_clip, clahe_tile=a.clahe_tile,
                     resize=a.resize, seed=getattr(a, "seed", 0), cache_dir=a.cache_dir,
                     manifest=manifest_from_args(a))  # fmt: skip
    cfg.validate()
    return cfg


def check_near_threshold(t: int) -> None:
    if not 0 <= t <= 64:
        raise ConfigError(f"--near-threshold is a pHash bit distance within 0..64, got {t}")


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        fr = tuple(float(x) for x in text.split(","))
    except ValueError:
        fr = ()
    if len(fr) != 3 or any(not 0 <= f <= 1 for f in fr) or abs(sum(fr) - 1) > 1e-6 or fr[0] == 0:
        raise ConfigError(f"--fractions needs three numbers train,val,test in [0, 1] summing to 1 with "
                          f"train > 0; got {text!r}")  # fmt: skip
    return fr  # type: ignore[return-value]


def collection_warnings(coll) -> list[str]:
    """Lines every data command prints about a listed collection (before decoding)."""
    out = []
    if coll.unknown_patients:
        out.append(
            f"patient ids unknown for {coll.unknown_patients} of {len(coll)} images (no patient column, DICOM "
            "PatientID or NIH-style file name): each counts as its own patient, so splits are image-level for them"
        )
    return out


# ----------------------------------------------------------------------------- commands
def cmd_data_inspect(a: argparse.Namespace) -> int:
    from cxraug.data.source import open_source
    from cxraug.data.stats import inspect_collection

    check_near_threshold(a.near_threshold)
    spec = manifest_from_args(a)
    spec.validate()
    coll = open_source(a.path, size=64, manifest=spec)
    rep = inspect_collection(coll, near_threshold=a.near_threshold, progress=not a.quiet)
    if not a.skip_bad and rep.unreadable:
        for u in rep.unreadable:
            print(f"error: {u}", file=sys.stderr)
        return 1
    d = rep.to_dict()
    if a.json:
        print(json.dumps(d, indent=2, allow_nan=False, default=str))
        return 0
    kind = " (multi-label)" if d["multilabel"] else ""
    print(f"{show_path(d['root'])}: {d['n_images']} readable images, {d['n_patients']} patients, "
          f"{len(d['class_names'])} class(es){kind}")  # fmt: skip
    if d["views"]:
        kept = f"   (kept: {d['view_filter']})" if d["view_filter"] else ""
        print("views: " + ", ".join(f"{k} {v}" for k, v in sorted(d["views"].items())) + kept)
    print("label counts:" if d["multilabel"] else "class counts:")
    for c in d["class_names"]:
        sk = d["skew_ratio"][c]
        print(f"  {c:<28} {d['counts'][c]:>7}   skew (neg/pos) " + (f"{sk:.2f}" if sk is not None else "n/a (empty)"))
    if d["sizes"]:
        s = d["sizes"]
        print(
            f"sizes (WxH): min {s['min'][0]}x{s['min'][1]}  median {s['median'][0]}x{s['median'][1]}  max {s['max'][0]}x{s['max'][1]}"
        )
    print("modes: " + ", ".join(f"{k} ({v})" for k, v in sorted(d["modes"].items())))
    if d["unknown_patients"]:
        print(f"warning: patient ids unknown for {d['unknown_patients']} of {d['n_images']} images (no patient "
              "column, DICOM PatientID or NIH-style file name): splits are image-level for them")  # fmt: skip
    for p in d["problems"]:
        print(f"warning: {p}")
    if d["skipped"]:
        print(f"skipped files: {len(d['skipped'])} (not images, or rows left out)")
        for u in d["skipped"]:
            print(f"  {u}")
    if d["unreadable"]:
        print(f"unreadable files: {len(d['unreadable'])} (skipped)")
        for u in d["unreadable"]:
            print(f"  {u}")
    groups = d["duplicate_groups"]
    n_ex = sum(g["kind"] == "exact" for g in groups)
    print(f"duplicate groups: {len(groups)} ({n_ex} exact, {len(groups) - n_ex} near: pHash distance <= {a.near_threshold} "
          "and verified as the same radiograph; copies cropped, padded or rescaled beyond pHash's reach: "
          f"cxraug data dedupe {show_path(a.path)})")  # fmt: skip
    for g in groups:
        print(
            f"  [{g['kind']}{'' if g['kind'] == 'exact' else ' d=' + str(g['distance'])}] "
            + "  ".join(map(show_path, g["paths"]))
        )
    return 0


def _open_checked(a: argparse.Namespace):
    """Validate, list the collection, run the output guard: all before any file is written."""
    from cxraug.data.source import check_outputs, is_cache, open_config

    cfg = _data_cfg(a)
    coll = None if cfg.is_phantom or is_cache(cfg.path) else open_config(cfg)
    check_outputs([cfg], a.out)
    for w in ([*coll.problems, *collection_warnings(coll)] if coll is not None else []):
        print(f"warning: {w}", file=sys.stderr)
    for sk in coll.skipped if coll is not None else []:
        print(f"skipped: {sk}", file=sys.stderr)
    return cfg, coll


def cmd_data_prepare(a: argparse.Namespace) -> int:
    import numpy as np

    from cxraug.config import save_config
    from cxraug.data import skipped
    from cxraug.data.source import load_dataset, skipped_lines
    from cxraug.io import new_run_dir, write_json
    from cxraug.plotting import save_grid

    cfg, coll = _open_checked(a)
    ds = load_dataset(cfg, progress=not a.quiet, collection=coll)
    run = new_run_dir(a.out, "prepare")
    save_config(cfg, run / "config.yaml")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ds), size=min(64, len(ds)), replace=False)
    save_grid(np.asarray(ds.images[np.sort(pick)]), run / "preview.png")
    cache = ds.save(run / "dataset") if a.copy_cache else None
    write_json(run / "summary.json", {"n": len(ds), "counts": ds.counts(), "errors": ds.errors, "size": ds.size,
                                      "cache": str(cache) if cache else None,
                                      "skipped": list(coll.skipped) if coll is not None else []})  # fmt: skip
    skipped.save(run, skipped_lines(ds))
    print(f"prepared {len(ds)} images at {ds.size}px ({', '.join(f'{k}={v}' for k, v in ds.counts().items())})")
    print(f"run folder: {run}")
    return 0


def cmd_data_split(a: argparse.Namespace) -> int:
    import numpy as np

    from cxraug.config import save_config
    from cxraug.data import skipped
    from cxraug.data.dedupe import dataset_signatures, find_duplicates, groups
    from cxraug.data.source import load_dataset, skipped_lines
    from cxraug.data.splits import check_patient_disjoint, patient_split
    from cxraug.data.stats import fingerprints, hamming_pairs
    from cxraug.data.tables import write_csv
    from cxraug.io import new_run_dir, write_json

    fr = parse_fractions(a.fractions)
    check_near_threshold(a.near_threshold)
    cfg, coll = _open_checked(a)
    ds = load_dataset(cfg, progress=not a.quiet, collection=coll)
    images = np.asarray(ds.images)
    # copies of one radiograph (cropped, padded, rescaled, re-windowed or not), pHash neighbours verified too
    sig = dataset_signatures(ds.paths, images)
    near = hamming_pairs(fingerprints(images), None, threshold=a.near_threshold)
    pairs = [(m.i, m.j) for m in find_duplicates(sig, extra_pairs=near)]
    del sig
    patients = sorted(set(ds.patient_ids))
    at = {p: k for k, p in enumerate(patients)}
    joined = groups(len(patients), [(at[ds.patient_ids[i]], at[ds.patient_ids[j]]) for i, j in pairs])
    group_of = {patients[k]: "+".join(patients[m] for m in g) for g in joined for k in g}
    split_ids = [group_of.get(p, p) for p in ds.patient_ids] if a.dedupe else list(ds.patient_ids)
    # refuses synthetic images
    sp = patient_split(ds.labels, split_ids, fractions=fr, seed=a.seed, sources=ds.sources, paths=ds.paths)
    check_patient_disjoint(ds.patient_ids, sp)
    where = np.empty(len(ds), object)
    for k, idx in sp.items():
        where[idx] = k
    dup = sorted({t for i, j in pairs for t, o in ((i, j), (j, i)) if where[t] == "test" and where[o] == "train"})
    run = new_run_dir(a.out, "split")
    save_config(cfg, run / "config.yaml")
    multi = ds.multilabel
    for name, idx in sp.items():
        rows = []
        for i in idx:
            lab = ds.labels[i]
            cols = [f"{v:g}" for v in lab] if multi else [ds.class_names[int(np.argmax(lab))]]
            rows.append([os.path.abspath(ds.paths[i]), ds.patient_ids[i], *cols])
        write_csv(run / f"{name}.csv", ["path", "patient", *(ds.class_names if multi else ["label"])], rows)
    counts = {k: {c: int((ds.label_index[v] == j).sum()) for j, c in enumerate(ds.class_names)} for k, v in sp.items()}
    write_json(run / "summary.json", {"counts": counts, "patients": len(patients), "seed": a.seed,
                                      "fractions": fr, "near_threshold": a.near_threshold,
                                      "duplicate_pairs": [[ds.paths[i], ds.paths[j]] for i, j in pairs],
                                      "patient_groups_joined": [[patients[m] for m in g] for g in joined],
                                      "dedupe": bool(a.dedupe),
                                      "test_near_duplicates_of_train": [ds.paths[i] for i in dup],
                                      "errors": ds.errors})  # fmt: skip
    for k, c in counts.items():
        print(f"{k:<6} " + "  ".join(f"{n}={v}" for n, v in c.items()))
    skipped.save(run, skipped_lines(ds))
    for k, f in zip(("train", "val", "test"), fr):
        if f > 0 and len(sp[k]) == 0:
            print(f"warning: the {k} split is empty: {len(ds)} image(s) of {len(patients)} patient(s) "
                  f"are too few for fractions {a.fractions}", file=sys.stderr)  # fmt: skip
    two_ids = len(joined)
    if a.dedupe:
        what = (f"{two_ids} group(s) of patients sharing a radiograph were joined before splitting, so no copy sits in "
                "two splits")  # fmt: skip
    else:
        what = (f"{len(dup)} test image(s) are copies of a training image, kept (--dedupe joins the patients of "
                "each copy before splitting)")  # fmt: skip
    print(f"{len(pairs)} duplicate pair(s) ({two_ids} patient group(s) under two or more ids): {what}")
    print(f"run folder: {run}   (train a GAN on the training split: cxraug train --data {run / 'train.csv'} ...)")
    return 0


def _load_for_dedupe(path: str, spec, label: str, progress: bool):
    """Decode every image of one input (folder, manifest, phantoms) as the detector needs it: the file's own pixels.
    Returns (collection samples kept, uint8 images, skipped lines)."""
    from tqdm.auto import tqdm

    from cxraug.data.dedupe import original_image
    from cxraug.data.source import open_source
    from cxraug.errors import ImageReadError

    coll = open_source(path, size=64, manifest=spec)
    for w in [*coll.problems, *collection_warnings(coll)]:
        print(f"warning: {label}: {w}", file=sys.stderr)
    kept, images, skipped = [], [], list(coll.skipped)
    for smp in tqdm(coll.samples, desc=f"read {label}", unit="img", disable=not progress, leave=False):
        try:
            images.append(original_image(smp.path, smp.image))
            kept.append(smp)
        except ImageReadError as e:
            skipped.append(str(e))
    return kept, images, skipped


def cmd_data_dedupe(a: argparse.Namespace) -> int:
    import time

    import cv2
    import numpy as np
    from tqdm.auto import tqdm

    from cxraug.data import dedupe, skipped
    from cxraug.data.source import DataConfig, check_outputs
    from cxraug.data.splits import NEAR_DUPLICATE_BITS
    from cxraug.data.stats import fingerprints, hamming_pairs
    from cxraug.data.tables import write_csv
    from cxraug.io import atomic_path, new_run_dir, write_json

    if a.top_k < 1 or a.sheet_pairs < 0:
        raise ConfigError("--top-k must be >= 1 and --sheet-pairs >= 0")
    t0 = time.perf_counter()
    spec = manifest_from_args(a)
    spec.validate()
    inputs = [a.a] + ([a.b] if a.b else [])
    check_outputs([DataConfig(path=p, manifest=spec) for p in inputs], a.out, cache=False)
    progress = not a.quiet
    sa, ia, skip_a = _load_for_dedupe(a.a, spec, "A", progress)
    sb, ib, skip_b = _load_for_dedupe(a.b, spec, "B", progress) if a.b else (sa, ia, [])
    within = a.b is None
    if not sa or not sb:
        raise CXRAugError(f"no readable images in {show_path(a.a if not sa else a.b)}")
    total = len(ia) + (0 if within else len(ib))
    with tqdm(total=total, desc="features", unit="img", disable=not progress, leave=False) as bar:
        sig_a = dedupe.signatures(ia, flipped=True, progress=bar.update)
        sig_b = sig_a if within else dedupe.signatures(ib, flipped=False, progress=bar.update)
    fa = fingerprints(ia)
    fb = fa if within else fingerprints(ib)
    # the old screen's pairs: verified too
    extra = hamming_pairs(fa, None if within else fb, threshold=NEAR_DUPLICATE_BITS)
    with tqdm(desc="verify", unit="pair", disable=not progress, leave=False) as bar:
        found = dedupe.find_duplicates(sig_a, None if within else sig_b, top_k=a.top_k, extra_pairs=extra,
                                       progress=bar.update)  # fmt: skip
    found.sort(key=lambda m: (m.i, m.j))
    run = new_run_dir(a.out, "dedupe")
    bits = np.unpackbits(fa[[m.i for m in found]] ^ fb[[m.j for m in found]], axis=1).sum(1) if found else []
    rows = []
    for m, d in zip(found, bits):
        ev, x, y = m.evidence.to_dict(), sa[m.i], sb[m.j]
        rows.append([os.path.abspath(x.path) if "://" not in x.path else x.path,
                     os.path.abspath(y.path) if "://" not in y.path else y.path, x.patient_id, y.patient_id,
                     int(x.patient_id != y.patient_id), ev["inliers"], ev["matches"], ev["spread"], int(ev["flipped"]),
                     ev["scale_x"], ev["scale_y"], ev["rotation_deg"], ev["correlation"], ev["shift_gain"],
                     ev["tiles"], round(m.votes, 1), int(d)])  # fmt: skip
    write_csv(run / "pairs.csv", ["path_a", "path_b", "patient_a", "patient_b", "different_patients", "inliers",
                                  "matches", "spread", "flipped", "scale_x", "scale_y", "rotation_deg", "correlation",
                                  "shift_gain", "tiles", "votes", "phash_bits"], rows)  # fmt: skip
    sheet = dedupe.contact_sheet([
        (f"{k + 1}: {os.path.basename(sa[m.i].path)} | {os.path.basename(sb[m.j].path)}  {m.evidence.inliers} inl, "
         f"r={m.evidence.correlation:.2f}", dedupe.pair_panel(sig_a.images[m.i], sig_b.images[m.j], m.evidence))
        for k, m in enumerate(found[: a.sheet_pairs])])  # fmt: skip
    _, png = cv2.imencode(".png", sheet)
    with atomic_path(run / "pairs.png") as tmp:
        tmp.write_bytes(png.tobytes())
    groups = dedupe.groups(len(sa), [(m.i, m.j) for m in found]) if within else []
    with_copy = sorted({m.i for m in found})
    secs = time.perf_counter() - t0
    summary = {"a": a.a, "b": a.b, "images_a": len(sa), "images_b": None if within else len(sb), "pairs": len(found),
               "images_a_with_copy": None if within else len(with_copy),
               "groups": None if not within else [[sa[i].path for i in g] for g in groups],
               "pairs_different_patients": sum(r[4] for r in rows), "phash_pairs_verified": len(extra),
               "top_k": a.top_k, "seconds": round(secs, 1),
               "sheet_pairs": min(len(found), a.sheet_pairs)}  # fmt: skip
    write_json(run / "summary.json", summary)
    skipped.save(run, [*skip_a, *skip_b])
    if within:
        n_img = sum(len(g) for g in groups)
        print(f"{len(found)} duplicate pair(s) within {len(sa)} images ({n_img} images in {len(groups)} group(s), "
              f"{summary['pairs_different_patients']} pair(s) under two patient ids) in {secs:.0f} s: "
              f"{run / 'pairs.csv'}, {run / 'pairs.png'}")  # fmt: skip
    else:
        print(f"{len(with_copy)} of {len(sa)} images of A have a copy in B ({len(found)} pair(s)); "
              f"{len(sa) - len(with_copy)} remain, in {secs:.0f} s: {run / 'pairs.csv'}, {run / 'pairs.png'}")  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- parser
def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug data inspect|prepare|split|dedupe``."""
    d = sub.add_parser("data", help="inspect and prepare a CXR collection")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    di = dsub.add_parser(
        "inspect",
        help="counts, patients, views, sizes, modes, skew, duplicates, unreadable and skipped files",
        description="Read every image once and report what is in a collection. Writes nothing.",
    )
    di.add_argument("path", help="folder-per-class root, CSV/TSV manifest, or 'phantom'")
    di.add_argument("--json", action="store_true", help="print the report as JSON")
    di.add_argument(
        "--near-threshold",
        type=int,
        default=4,
        help="max pHash Hamming distance for near-duplicate candidates (each verified by the duplicate detector); "
        "default %(default)s",
    )
    di.add_argument(
        "--skip-bad",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report unreadable files and continue (default); --no-skip-bad exits 1 on any",
    )
    add_manifest_args(di)
    di.set_defaults(func=cmd_data_inspect)
    dp = dsub.add_parser(
        "prepare",
        help="preprocess once into the uint8 cache + a preview grid",
        description="Decode, (CLAHE), resize and cache a collection; writes a run folder with preview.png.",
    )
    _add_data_args(dp)
    dp.add_argument("--copy-cache", action="store_true", help="also write the cache into the run folder (portable)")
    dp.set_defaults(func=cmd_data_prepare)

    ds_ = dsub.add_parser(
        "split",
        help="patient-level train/val/test manifests + a cross-split duplicate check",
        description="Stratified, patient-level split written as train.csv/val.csv/test.csv (paths into your data; "
        "nothing is copied). Copies of one radiograph (cropped, padded, rescaled, re-windowed or not; see `cxraug "
        "data dedupe`) are found; test images that copy a training image are reported, and --dedupe joins the "
        "patients of every copy into one group before splitting, so no copy sits in two splits (even under two "
        "patient ids). Synthetic images are refused.",
    )
    _add_data_args(ds_)
    ds_.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test; default %(default)s")
    ds_.add_argument("--seed", type=int, default=0)
    ds_.add_argument("--dedupe", action="store_true",
                     help="join the patients of every copy of a radiograph into one group before splitting")  # fmt: skip
    ds_.add_argument("--near-threshold", type=int, default=4,
                     help="pairs within this many pHash bits are verified as candidates too; default %(default)s")  # fmt: skip
    ds_.set_defaults(func=cmd_data_split)

    dd = dsub.add_parser(
        "dedupe",
        help="the same radiograph twice, cropped, padded, rescaled, re-windowed or not: within A, or between A and B",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Find copies of one radiograph: within A, or A's images that are also in B. A and B are folders,
CSV/TSV manifests or phantom specs, as for the other data commands (the manifest flags apply to both).

A copy may be cropped (up to about a quarter per side), padded or letterboxed, rescaled or squeezed,
labelled (burnt-in text, side markers), re-windowed (gamma, contrast, window), recompressed as JPEG,
rotated by a few degrees or flipped left-right. Each image is read from its file; candidate pairs come from
hashed local (ORB) features, and every candidate is verified: an affine map fitted to matched features
(RANSAC), then the pixels compared after alignment, tile by tile. Two radiographs of one patient taken
on different days share the anatomy but move locally against each other, and are not called copies.
Pairs within 4 pHash bits (the old screen) are verified too. Images under about 85 px (the 64 px NIH
set) are only called copies when nearly unaltered.

Writes a run folder with pairs.csv (one row per pair: both paths and patient ids, whether the ids
differ, and the evidence: inliers, spread, scales, rotation, flip, pixel correlation, shift gain,
pHash bits), pairs.png (a contact sheet: each pair side by side and overlaid, magenta = A, green = B,
grey where they agree) and summary.json. Prints one line: how many of A's images have a copy in B
(between two inputs) or how many pairs and groups (within one).""",
        epilog="""examples:
  cxraug data dedupe ../shared/data/external/covid-hannover/data.csv ../shared/data/covid-cxnet
  cxraug data dedupe ../shared/data/pneumonia-kermany/manifest.csv --patient-column patient_id --label-column label""",
    )
    dd.add_argument("a", metavar="A", help="folder, CSV/TSV manifest or phantom spec")
    dd.add_argument("b", metavar="B", nargs="?", default=None,
                    help="second input: report A's images that are also in B (default: duplicates within A)")  # fmt: skip
    dd.add_argument("--top-k", type=int, default=5,
                    help="candidates verified per image of A (and per orientation); default %(default)s")  # fmt: skip
    dd.add_argument("--sheet-pairs", type=int, default=200,
                    help="pairs drawn on the contact sheet (all are in pairs.csv); default %(default)s")  # fmt: skip
    add_manifest_args(dd, "A and B")
    dd.set_defaults(func=cmd_data_dedupe)
