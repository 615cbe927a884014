"""``cxraug data inspect|prepare|split``: look at a collection, cache it, split it by patient."""

from __future__ import annotations

import argparse
import json
import sys

from cxraug.commands import register
from cxraug.errors import ConfigError, show_path


# ----------------------------------------------------------------------------- arguments
def add_manifest_args(p: argparse.ArgumentParser, inputs: str = "", constant_label: bool = True) -> None:
    """How to read a CSV/TSV manifest (ignored for folders); mirrors ``data.manifest.*`` in YAML. ``inputs``
    names the command's inputs they apply to, for its ``--help``; ``constant_label=False`` leaves out
    ``--label`` (for a command whose own ``--label`` means something else)."""
    from cxraug.data.manifests import FORMATS, UNCERTAIN_POLICIES, VIEWS

    g = p.add_argument_group(
        "manifest (CSV/TSV input)",
        f"These apply to {inputs or 'the input'} wherever it is a CSV/TSV manifest (folders, caches and phantoms "
        "ignore them): the same flags as `cxraug train` and `cxraug data`, data.manifest.* in YAML.",
    )
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="manifest layout: chexpert, nih (Data_Entry_2017.csv), mimic (metadata CSV), hannover "
                        "(data.csv), csv (generic); default auto-detected from the header")  # fmt: skip
    g.add_argument("--path-column", metavar="COLUMN",
                   help="column holding image paths (relative to the manifest's folder or --root)")  # fmt: skip
    g.add_argument("--path-template", metavar="TEMPLATE", help="image path built from columns, e.g. 'png/{image_id}.png'")
    g.add_argument("--patient-column", metavar="COLUMN", help="column holding patient ids (for patient-level splits)")
    g.add_argument("--label-column", metavar="COLUMN", help="column holding one class name per row ('A|B' for several)")
    g.add_argument("--label-columns", metavar="C1,C2,...",
                   help="comma-separated multi-hot 1/0/-1/blank columns (CheXpert style)")  # fmt: skip
    if constant_label:
        g.add_argument("--label", dest="manifest_label", metavar="NAME",
                       help="one class for every row (a positives-only manifest)")  # fmt: skip
    g.add_argument("--view-column", metavar="COLUMN", help="column holding the view (PA/AP/lateral)")
    g.add_argument("--view", choices=VIEWS, default=None,
                   help="keep these views where a view column exists; default frontal (PA + AP)")  # fmt: skip
    g.add_argument("--uncertain", choices=UNCERTAIN_POLICIES, default=None,
                   help="uncertain (-1) labels: ones (U-Ones, default), zeros, or ignore (masked)")  # fmt: skip
    g.add_argument("--root", dest="manifest_root", metavar="FOLDER",
                   help="folder relative paths start from (default: the manifest's)")  # fmt: skip
    g.add_argument("--labels-csv", metavar="FILE", help="MIMIC: label file to join on subject_id/study_id")


def add_source_args(p: argparse.ArgumentParser, inputs: str, cache: bool = True, constant_label: bool = True) -> None:
    """The data-source flags of a command that reads real images (``evaluate``, ``encoder train``,
    ``balance``, ``synthesize``, ``benchmark``): the manifest flags and, with ``cache``, ``--cache-dir``.
    Read back with :func:`source_config`, one :class:`~cxraug.data.source.DataConfig` per input."""
    add_manifest_args(p, inputs, constant_label)
    if cache:
        p.add_argument("--cache-dir", default=None,
                       help="where decoded images are cached (default $CXRAUG_CACHE or ~/.cache/cxraug); refused "
                            "inside any input")  # fmt: skip


def source_config(a: argparse.Namespace, path: str | None, size: int = 64):
    """The :class:`~cxraug.data.source.DataConfig` for one input ``path`` of a command that took
    :func:`add_source_args` (``None`` for an input that was not given), validated."""
    from cxraug.data.source import DataConfig

    if path is None:
        return None
    cfg = DataConfig(path=str(path), size=size, cache_dir=getattr(a, "cache_dir", None),
                     manifest=manifest_from_args(a))  # fmt: skip
    cfg.validate()
    return cfg


def manifest_from_args(a: argparse.Namespace):
    from cxraug.data.manifests import manifest_spec

    cols = getattr(a, "label_columns", None)
    return manifest_spec(
        format=a.format, path_column=a.path_column, path_template=a.path_template, patient_column=a.patient_column,
        label_column=a.label_column, label_columns=[c.strip() for c in cols.split(",") if c.strip()] if cols else None,
        label=getattr(a, "manifest_label", None), view_column=a.view_column, view=a.view, uncertain=a.uncertain, root=a.manifest_root,
        labels_csv=a.labels_csv,
    )  # fmt: skip


def manifest_overrides(a: argparse.Namespace) -> list[str]:
    """The manifest flags given, as ``data.manifest.KEY=VALUE`` config overrides (JSON-quoted values, so a
    template like ``{id}.png`` stays a string)."""
    from dataclasses import fields

    spec, default = manifest_from_args(a), type(manifest_from_args(a))()
    return [f"data.manifest.{f.name}={json.dumps(getattr(spec, f.name))}" for f in fields(spec)
            if getattr(spec, f.name) != getattr(default, f.name)]  # fmt: skip


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


def _short(p: str) -> str:
    return show_path(p)


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
    print(
        f"duplicate groups: {len(groups)} ({n_ex} exact, {len(groups) - n_ex} near, pHash distance <= {a.near_threshold})"
    )
    for g in groups:
        print(
            f"  [{g['kind']}{'' if g['kind'] == 'exact' else ' d=' + str(g['distance'])}] "
            + "  ".join(map(_short, g["paths"]))
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
    import os

    import numpy as np

    from cxraug.config import save_config
    from cxraug.data import skipped
    from cxraug.data.source import load_dataset, skipped_lines
    from cxraug.data.splits import check_patient_disjoint, near_duplicates_in_test, patient_split
    from cxraug.data.stats import fingerprints
    from cxraug.data.tables import write_csv
    from cxraug.io import new_run_dir, write_json

    fr = parse_fractions(a.fractions)
    check_near_threshold(a.near_threshold)
    cfg, coll = _open_checked(a)
    ds = load_dataset(cfg, progress=not a.quiet, collection=coll)
    sp = patient_split(ds.labels, ds.patient_ids, fr, a.seed, ds.sources, ds.paths)  # refuses synthetic images
    check_patient_disjoint(ds.patient_ids, sp)
    near = near_duplicates_in_test(fingerprints(np.asarray(ds.images)), sp, a.near_threshold)
    dup = sp["test"][near]
    if a.dedupe:
        sp["test"] = sp["test"][~near]
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
    write_json(run / "summary.json", {"counts": counts, "patients": len(set(ds.patient_ids)), "seed": a.seed,
                                      "fractions": fr, "near_threshold": a.near_threshold,
                                      "test_near_duplicates_of_train": [ds.paths[i] for i in dup],
                                      "removed_from_test": bool(a.dedupe), "errors": ds.errors})  # fmt: skip
    for k, c in counts.items():
        print(f"{k:<6} " + "  ".join(f"{n}={v}" for n, v in c.items()))
    skipped.save(run, skipped_lines(ds))
    for k, f in zip(("train", "val", "test"), fr):
        if f > 0 and len(sp[k]) == 0:
            print(f"warning: the {k} split is empty: {len(ds)} image(s) of {len(set(ds.patient_ids))} patient(s) "
                  f"are too few for fractions {a.fractions}", file=sys.stderr)  # fmt: skip
    what = "removed from test" if a.dedupe else "kept in test (use --dedupe to remove them)"
    print(f"{len(dup)} test image(s) near-duplicate a training image (pHash <= {a.near_threshold} bits): {what}")
    print(f"run folder: {run}   (train a GAN on the training split: cxraug train --data {run / 'train.csv'} ...)")
    return 0


# ----------------------------------------------------------------------------- parser
@register
def _register(sub: argparse._SubParsersAction) -> None:
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
        help="max pHash Hamming distance for near-duplicates; default %(default)s",
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
        "nothing is copied). Test images that (near-)duplicate a training image are reported, and removed "
        "with --dedupe. Synthetic images are refused.",
    )
    _add_data_args(ds_)
    ds_.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test; default %(default)s")
    ds_.add_argument("--seed", type=int, default=0)
    ds_.add_argument("--dedupe", action="store_true", help="remove near-duplicates of training images from test")
    ds_.add_argument("--near-threshold", type=int, default=4, help="pHash bits; default %(default)s")
    ds_.set_defaults(func=cmd_data_split)
