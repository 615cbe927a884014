"""Manifests as they ship: CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, Hannover, and any CSV/TSV.

A :class:`ManifestSpec` names the columns; ``format`` fills in the defaults of a known release, and
anything the user sets wins. Formats (column layouts from the datasets' own documentation):

- ``chexpert`` (Irvin et al., 2019): ``Path`` (``CheXpert-v1.0[-small]/train/patientNNNNN/studyN/
  viewN_frontal.jpg``, relative to the folder *containing* the release folder), ``Frontal/Lateral``,
  ``AP/PA``, and the 14 observations with 1 / 0 / -1 (uncertain) / blank (not mentioned = 0).
  ``Sex`` and ``Age`` are metadata, never labels. Patient = the ``patientNNNNN`` path component.
- ``nih`` (Wang et al., 2017), ``Data_Entry_2017.csv``: ``Image Index`` (a file name; found under the
  CSV's folder, e.g. in ``images_001/images/``), ``Finding Labels`` (``|``-separated, ``No Finding``
  included as a label), ``Patient ID``, ``View Position`` (PA/AP).
- ``mimic`` (Johnson et al., 2019), ``mimic-cxr-2.0.0-metadata.csv``: ``dicom_id``, ``subject_id``,
  ``study_id``, ``ViewPosition``; image ``files/p{first 2 digits}/p{subject}/s{study}/{dicom}.jpg``.
  Labels are the CheXpert columns of the same CSV if present, else of ``labels_csv`` (default: the
  ``mimic-cxr-2.0.0-chexpert.csv`` next to it), joined on ``(subject_id, study_id)``.
- ``hannover`` (Hannover Medical School COVID-19 image repository), ``data.csv``: ``image_id`` ->
  ``png/<image_id>.png``, ``patient_id``, ``projection`` (ap/pa); every image is COVID-19 positive,
  so the one class is ``label`` (default ``covid``). Sex, age and lab values are not labels.
- ``csv`` (generic): a path column (``path``/``Path``/``file``/``filename``/``image``...), or a
  ``path_template`` over columns; a ``label`` column (one class name per row, ``|`` for several), or
  multi-hot 0/1/-1 columns (found automatically: columns whose every value is -1, 0, 1 or blank;
  so ``Age``/``Sex`` never become labels), or a constant ``label``.

Views: ``view='frontal'`` (the default wherever a view column exists) keeps PA, AP and frontal images of
unknown projection; ``pa``, ``ap``, ``lateral`` keep only those; ``all`` keeps everything.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cxraug.data.imageio import SUPPORTED_EXTS
from cxraug.data.sample import Collection, Sample
from cxraug.data.tables import Table, read_table
from cxraug.errors import ConfigError, CXRAugError, show_path

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
FORMATS = ("auto", "csv", "chexpert", "nih", "mimic", "hannover")
VIEWS = ("frontal", "pa", "ap", "lateral", "all")
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
PATH_COLUMNS = ("path", "Path", "filepath", "file", "filename", "file_name", "image", "image_path", "Image Index")
PATIENT_COLUMNS = ("patient", "patient_id", "Patient ID", "PatientID", "patientid", "subject_id")
# a patient id cell that means "unknown" (pandas' astype(str) writes nan, R writes NA): such rows are unknown
# patients (each image its own, counted and warned about), not one patient called "nan"
MISSING_IDS = frozenset({"nan", "na", "n/a", "none", "null", "<na>", "-"})
VIEW_COLUMNS = ("view", "View Position", "ViewPosition", "projection", "Frontal/Lateral")
NIH_NAME = re.compile(r"^(\d{8})_(\d{3})$")
CHEXPERT_PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")


@dataclass
class ManifestSpec:
    """How to read a manifest. ``None`` fields take the format's default (or are found automatically)."""

    format: str = "auto"  # auto | csv | chexpert | nih | mimic | hannover
    path_column: str | None = None
    path_template: str | None = None  # e.g. "png/{image_id}.png" (Python format over the row's columns)
    patient_column: str | None = None
    label_column: str | None = None  # one class name per row ("A|B" for several)
    label_columns: list[str] | None = None  # multi-hot 1/0/-1/blank columns
    label: str | None = None  # one class for every row (a positives-only manifest)
    view_column: str | None = None
    view: str = "frontal"  # frontal | pa | ap | lateral | all (applies where a view column exists)
    uncertain: str = "ones"  # -1 -> 1 (U-Ones), 0 (U-Zeros) or NaN (ignored in the loss)
    root: str | None = None  # folder relative paths start from (default: the manifest's folder)
    labels_csv: str | None = None  # MIMIC: the label file joined on (subject_id, study_id)
    # keep only the rows of these classes of a label column, e.g. [viral, bacterial] of a three-class manifest;
    # None: every class
    classes: list[str] | None = None

    def validate(self) -> None:
        for name, value, allowed in (("format", self.format, FORMATS), ("view", self.view, VIEWS),
                                     ("uncertain", self.uncertain, UNCERTAIN_POLICIES)):  # fmt: skip
            if value not in allowed:
                raise ConfigError(f"manifest {name} must be one of {', '.join(allowed)}; got {value!r}")
        given = [n for n in ("label_column", "label_columns", "label") if getattr(self, n) not in (None, [])]
        if len(given) > 1:
            raise ConfigError(f"give only one of label_column, label_columns, label; got {', '.join(given)}")
        if self.path_column and self.path_template:
            raise ConfigError("give path_column or path_template, not both")
        if self.classes is not None and (not self.classes or len(set(self.classes)) < len(self.classes)
                                         or self.label or self.label_columns):  # fmt: skip
            raise ConfigError("manifest classes: distinct class names of the label column (it selects rows of a "
                              f"one-class-per-row manifest); got {self.classes}")  # fmt: skip


def detect_format(header: list[str]) -> str:
    h = set(header)
    if {"Path", "Frontal/Lateral"} <= h:
        return "chexpert"
    if {"Image Index", "Finding Labels"} <= h:
        return "nih"
    if {"dicom_id", "subject_id", "study_id"} <= h:
        return "mimic"
    if {"image_id", "patient_id", "projection"} <= h:
        return "hannover"
    return "csv"


def canonical_view(value: str) -> str:
    """``pa``, ``ap``, ``lateral``, ``frontal`` (projection unknown), ``unknown`` (blank) or ``other``."""
    v = " ".join(value.strip().lower().replace("-", " ").replace("_", " ").split())
    if not v:
        return "unknown"
    if v in ("pa", "posteroanterior", "postero anterior"):
        return "pa"
    if v in ("ap", "anteroposterior", "antero posterior", "ap supine", "ap erect", "ap portable", "ap upright"):
        return "ap"
    if v in ("lateral", "lat", "ll", "rl", "left lateral", "right lateral", "xtable lateral"):
        return "lateral"
    if v == "frontal":
        return "frontal"
    return "other"


def view_kept(view: str, wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "frontal":
        return view in ("pa", "ap", "frontal")
    return view == wanted


def _defaults(fmt: str, t: Table) -> dict:
    h = set(t.header)
    if fmt == "chexpert":
        return dict(path_column="Path", view_column="Frontal/Lateral",
                    label_columns=[c for c in CHEXPERT_LABELS if c in h])  # fmt: skip
    if fmt == "nih":
        return dict(path_column="Image Index", label_column="Finding Labels", patient_column="Patient ID",
                    view_column="View Position")  # fmt: skip
    if fmt == "mimic":
        return dict(path_template="files/p{subject_id:.2}/p{subject_id}/s{study_id}/{dicom_id}.jpg",
                    patient_column="subject_id", view_column="ViewPosition")  # fmt: skip
    if fmt == "hannover":
        return dict(path_template="png/{image_id}.png", patient_column="patient_id", view_column="projection",
                    label="covid")  # fmt: skip
    return {}


def _fill(spec: ManifestSpec, fmt: str, t: Table) -> ManifestSpec:
    d = _defaults(fmt, t)
    if any(getattr(spec, k) not in (None, []) for k in ("label_column", "label_columns", "label")):
        for k in ("label_column", "label_columns", "label"):
            d.pop(k, None)  # the user named the labels: the format's label default is off
    if spec.path_column or spec.path_template:
        d.pop("path_column", None)
        d.pop("path_template", None)
    return replace(spec, format=fmt, **{k: v for k, v in d.items() if getattr(spec, k) in (None, [])})


def _is_ternary(v: str) -> bool:
    if v.lower() == "nan":  # an ignored label, as `data split` writes it
        return True
    try:
        return float(v) in (-1.0, 0.0, 1.0)
    except ValueError:
        return False


def _canonical_names(raw: list[str], where: str) -> tuple[dict[str, str], list[str]]:
    """Map each raw label to one spelling per (stripped, case-folded) name: the most frequent one."""
    spellings: dict[str, Counter[str]] = {}
    for v in raw:
        spellings.setdefault(v.strip().casefold(), Counter())[v] += 1
    mapping, warns = {}, []
    for c in spellings.values():
        stripped = Counter()
        for v, n in c.items():
            stripped[v.strip()] += n
        name = sorted(stripped.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        for v in c:
            mapping[v] = name
        if len(c) > 1 or next(iter(c)) != name:
            shown = ", ".join(repr(v) for v in sorted(c))
            warns.append(f"{where}: labels {shown} differ only in spaces/case; taken as one class {name!r}")
    return mapping, warns


class _Resolver:
    """Relative manifest paths -> files, the way releases lay them out."""

    def __init__(self, root: Path, encoding: str = "utf-8-sig"):
        self.root = root
        self.encoding = encoding
        self._index: dict[str, Path] | None = None

    def __call__(self, rel: str) -> Path:
        p = self._find(rel)
        if self.encoding != "utf-8-sig" and not p.exists():
            # A non-UTF-8 manifest (ours write non-UTF-8 file names byte for byte, as the file system has
            # them): the field's original bytes are the file name.
            try:
                raw = self._find(os.fsdecode(rel.encode(self.encoding)))
            except UnicodeEncodeError:
                return p
            return raw if raw.exists() else p
        return p

    def _find(self, rel: str) -> Path:
        p = Path(rel)
        if p.is_absolute():
            return p
        cand = self.root / p
        if p.parts and p.parts[0] == self.root.name and not cand.exists():
            alt = self.root.parent / p  # CheXpert: paths start with the release folder the CSV is in
            if alt.exists():
                return alt
        if len(p.parts) == 1 and not cand.exists():  # NIH: a bare name inside images_00N/images/
            return self.index().get(p.name, cand)
        return cand

    def index(self) -> dict[str, Path]:
        if self._index is None:
            self._index = {}
            for dp, dns, fns in os.walk(self.root):
                dns[:] = sorted(d for d in dns if not d.startswith("."))
                for f in fns:
                    if os.path.splitext(f)[1].lower() in SUPPORTED_EXTS:
                        self._index.setdefault(f, Path(dp) / f)
        return self._index


def _mimic_labels(spec: ManifestSpec, t: Table, rows: list[dict[str, str]]) -> tuple[list[dict], list[str]]:
    """Add the CheXpert label columns to MIMIC metadata rows from the label CSV (joined on subject, study)."""
    src = Path(spec.labels_csv) if spec.labels_csv else None
    if src is None:
        for name in ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-negbio.csv"):
            if (t.path.parent / name).is_file():
                src = t.path.parent / name
                break
    if src is None:
        raise CXRAugError(
            f"{show_path(t.path)}: MIMIC metadata has no label columns and no mimic-cxr-2.0.0-chexpert.csv beside "
            "it; give labels_csv (--labels-csv FILE), label_columns, or one class for all rows (--label NAME)"
        )
    lt = read_table(src)
    for c in ("subject_id", "study_id"):
        if c not in lt.header:
            raise CXRAugError(f"{show_path(src)}: missing column {c!r} to join on; has {lt.header}")
    cols = [c for c in CHEXPERT_LABELS if c in lt.header]
    si, st = lt.column("subject_id"), lt.column("study_id")
    by_study = {(r[si].strip(), r[st].strip()): {c: r[lt.column(c)] for c in cols} for r in lt.rows}
    out, skipped = [], []
    for r in rows:
        lab = by_study.get((r.get("subject_id", "").strip(), r.get("study_id", "").strip()))
        if lab is None:
            skipped.append(f"{show_path(t.path)}:{r['__line__']}: study {r.get('study_id')} has no labels in "
                           f"{show_path(src.name)}; row skipped")  # fmt: skip
            continue
        out.append({**r, **lab})
    return out, skipped


def read_manifest(csv_path: str | os.PathLike, spec: ManifestSpec | None = None) -> Collection:
    """Read a manifest into a :class:`Collection` (images not decoded). Problems are collected, not raised,
    unless nothing usable is left."""
    spec = spec or ManifestSpec()
    spec.validate()
    t = read_table(csv_path)
    fmt = detect_format(t.header) if spec.format == "auto" else spec.format
    s = _fill(spec, fmt, t)
    where = show_path(t.path)
    problems, skipped = list(t.warnings), list(t.skipped)
    rows = [{**dict(zip(t.header, r)), "__line__": str(n)} for r, n in zip(t.rows, t.lines)]
    if not rows:
        raise CXRAugError(f"{where}: manifest has no rows" + (f" ({len(skipped)} malformed)" if skipped else ""))
    if fmt == "mimic" and not (s.label or s.label_column or s.label_columns):
        if any(c in t.header for c in CHEXPERT_LABELS):
            s.label_columns = [c for c in CHEXPERT_LABELS if c in t.header]
        else:
            rows, sk = _mimic_labels(s, t, rows)
            skipped += sk
            s.label_columns = [c for c in CHEXPERT_LABELS if rows and c in rows[0]]
    header = set(rows[0]) if rows else set(t.header)

    # --- columns
    if s.path_template is None and s.path_column is None:
        s.path_column = next((c for c in PATH_COLUMNS if c in header), None)
        if s.path_column is None:
            raise CXRAugError(f"{where}: no path column; name it with --path-column (or --path-template "
                              f"'png/{{id}}.png'); columns are {t.header}")  # fmt: skip
    if s.patient_column is None:
        s.patient_column = next((c for c in PATIENT_COLUMNS if c in header), None)
    if s.view_column is None:
        s.view_column = next((c for c in VIEW_COLUMNS if c in header), None)
    used = {s.path_column, s.patient_column, s.view_column, "synthetic", "AP/PA"}
    if not (s.label or s.label_column or s.label_columns):
        if "label" in header:
            s.label_column = "label"
        else:
            s.label_columns = [c for c in t.header if c not in used and any(r[c].strip() for r in rows)
                               and all(not r[c].strip() or _is_ternary(r[c].strip()) for r in rows)]  # fmt: skip
            if not s.label_columns:
                raise CXRAugError(f"{where}: no label column found; name it with --label-column, --label-columns, "
                                  f"or give every row one class with --label NAME; columns are {t.header}")  # fmt: skip
    need = [s.path_column, s.patient_column, s.view_column, s.label_column, *(s.label_columns or [])]
    if s.path_template:
        need += re.findall(r"{([^{}:!]+)[^{}]*}", s.path_template)
    missing = [c for c in need if c and c not in header]
    if missing:
        raise CXRAugError(f"{where}: missing column(s) {missing}; has {t.header}")

    # --- labels
    multilabel = bool(s.label_columns)
    if s.label:
        classes = [s.label.strip()]
    elif s.label_columns:
        classes = list(s.label_columns)
    else:
        raw = [r[s.label_column] for r in rows]
        multilabel = any("|" in v for v in raw)
        parts = [p for v in raw for p in (v.split("|") if multilabel else [v]) if p.strip()]
        names, warns = _canonical_names(parts, where)
        problems += warns
        classes = sorted(set(names.values()))
        if s.classes is not None:
            wanted = [c.strip() for c in s.classes]
            absent = [c for c in wanted if c not in classes]
            if absent:
                raise CXRAugError(f"{where}: manifest classes {absent} are not in its label column {s.label_column!r} "
                                  f"(classes there: {classes})")  # fmt: skip
            classes = sorted(wanted)
    unc = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[s.uncertain]

    # --- rows
    resolve = _Resolver(Path(s.root) if s.root else t.path.parent, t.encoding)
    views: Counter[str] = Counter()
    entries: dict[str, list[tuple[str, Sample]]] = {}
    unknown: set[str] = set()
    for r in rows:
        at = f"{where}:{r['__line__']}"
        if s.path_template:
            try:
                rel = s.path_template.format(**{k: v.strip() for k, v in r.items()})
            except (KeyError, IndexError, ValueError) as e:
                raise CXRAugError(f"path template {s.path_template!r} does not fit {at} ({e})") from e
        else:
            rel = r[s.path_column].strip()
        if not rel:
            skipped.append(f"{at}: empty path; row skipped")
            continue
        lab = np.zeros(len(classes), np.float32)
        if s.label:
            lab[0] = 1.0
        elif s.label_columns:
            for i, c in enumerate(classes):
                v = r[c].strip()
                if v.lower() == "nan":  # ignored (U-Ignore), e.g. in a manifest `data split` wrote
                    lab[i] = np.nan
                    continue
                try:
                    x = float(v) if v else 0.0
                except ValueError:
                    problems.append(f"{at}: {c}={v!r} is not a number, taken as 0")
                    x = 0.0
                lab[i] = unc if x == -1 else float(x > 0)
        else:
            v = r[s.label_column]
            found = [names[p] for p in (v.split("|") if multilabel else [v]) if p.strip()]
            if not found:
                skipped.append(f"{at}: empty label; row skipped")
                continue
            if s.classes is not None:  # rows of other classes are not part of this source
                found = [f for f in found if f in classes]
                if not found:
                    continue
            for f in found:
                lab[classes.index(f)] = 1.0
        path = resolve(rel)
        pid = r[s.patient_column].strip() if s.patient_column else ""
        if pid.lower() in MISSING_IDS:  # what pandas, R or a database export writes for a missing id
            pid = ""
        if not pid:
            m = CHEXPERT_PATIENT.search(rel.replace("\\", "/")) if fmt == "chexpert" else None
            m = m or NIH_NAME.match(path.stem)
            pid = m.group(1) if m else ""
        if not pid:
            pid = path.stem
            unknown.add(os.path.normpath(str(path)))
        view = ""
        if s.view_column:
            view = canonical_view(r[s.view_column])
            if s.view_column == "Frontal/Lateral" and view == "frontal" and "AP/PA" in r:
                pp = canonical_view(r["AP/PA"])
                view = pp if pp in ("pa", "ap") else "frontal"
            views[view] += 1
            if not view_kept(view, s.view):
                continue
        synthetic = r.get("synthetic", "").strip().lower() in ("true", "1", "yes")
        sample = Sample(None, lab, pid, "synthetic" if synthetic else "real", str(path), view)
        entries.setdefault(os.path.normpath(str(path)), []).append((r["__line__"], sample))

    samples = _merge_repeats(entries, classes, where, problems, skipped)
    if not samples:
        kept = f" (view filter {s.view!r}; views found: {dict(views)})" if s.view_column else ""
        raise CXRAugError(f"{where}: no usable rows{kept}" + (f"; e.g. {skipped[0]}" if skipped else ""))
    return Collection(samples, classes, multilabel=multilabel, root=str(t.path), problems=problems, skipped=skipped,
                      views=dict(views), view_filter=s.view if s.view_column else "",
                      unknown_patients=sum(os.path.normpath(x.path) in unknown for x in samples))  # fmt: skip


def _describe(lab: np.ndarray, classes: list[str]) -> str:
    pos = [c for c, v in zip(classes, lab) if v > 0.5]
    return "+".join(pos) if pos else "none"


def _merge_repeats(entries: dict[str, list[tuple[str, Sample]]], classes: list[str], where: str,
                   problems: list[str], skipped: list[str]) -> list[Sample]:  # fmt: skip
    """One sample per file. A file listed twice with the same labels is kept once; a file listed with
    different labels (the same image under two classes) is left out and reported."""
    out = []
    for rows in entries.values():
        first = rows[0][1]
        if len(rows) == 1:
            out.append(first)
            continue
        labs = [np.nan_to_num(x.labels, nan=-1.0) for _, x in rows]
        lines = ", ".join(n for n, _ in rows)
        if all(np.array_equal(labs[0], b) for b in labs[1:]):
            problems.append(f"{where}: {show_path(first.path)} is listed {len(rows)} times (lines {lines}); kept once")
            out.append(first)
        else:
            what = "; ".join(f"line {n}: {_describe(x.labels, classes)}" for n, x in rows)
            skipped.append(f"{show_path(first.path)}: the same file under different labels ({what}); left out")
    return out


def manifest_spec(**kw) -> ManifestSpec:
    """A spec from keyword arguments, ``None`` values dropped (CLI flags that were not given)."""
    return ManifestSpec(**{k: v for k, v in kw.items() if v is not None})

