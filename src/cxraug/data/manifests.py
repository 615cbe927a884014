"""Manifests as they ship: CheXpert, NIH ChestX-ray14, MIMIC-CXR-JPG, Hannover, and any CSV/TSV.

A :class:`ManifestSpec` names the columns; ``format`` picks a :class:`~cxraug.data.formats.ManifestFormat` from
the registry in :mod:`cxraug.data.formats` (``auto``: the first whose header check fits, else the generic
``csv``), which fills in its release's defaults; anything the user sets wins. Each format's class documents its
layout and cites its dataset; a new layout is one class there (docs/architecture.md, "How to add a manifest
format"). Reading is the same for every format:

1. columns nobody named are looked for by common names (:data:`PATH_COLUMNS`, :data:`PATIENT_COLUMNS`,
   :data:`VIEW_COLUMNS`); labels are a ``label`` column, else the columns whose every value is 1, 0, -1 or blank;
2. each row becomes a path (the format's ``row_path``), found the way releases lay files out (:class:`_Resolver`),
   labels (the format's ``label_separator`` and ``hot``), a patient id (the column, else the format's
   ``patient_from_path``, else the file's own name, counted as unknown) and a view;
3. a file listed twice is kept once, or left out if its labels differ; problems are collected, not raised,
   unless nothing usable is left, and every error is one line naming the file.

Views: ``view='frontal'`` (the default wherever a view column exists) keeps PA, AP and frontal images of
unknown projection; ``pa``, ``ap``, ``lateral`` keep only those; ``all`` keeps everything.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cxraug.data.formats import (
    CHEXPERT_LABELS,
    CHEXPERT_PATIENT,
    FORMATS,
    NIH_NAME,
    Columns,
    ManifestFormat,
    canonical_view,
    detect,
    get_format,
    register_format,
    unregister_format,
)
from cxraug.data.imageio import SUPPORTED_EXTS
from cxraug.data.sample import Collection, Sample
from cxraug.data.tables import Table, read_table
from cxraug.errors import ConfigError, CXRAugError, show_path

__all__ = [
    "CHEXPERT_LABELS", "CHEXPERT_PATIENT", "FORMATS", "MISSING_IDS", "NIH_NAME", "PATH_COLUMNS", "PATIENT_COLUMNS",
    "UNCERTAIN_POLICIES", "VIEWS", "VIEW_COLUMNS", "Columns", "ManifestFormat", "ManifestSpec", "canonical_view",
    "detect_format", "manifest_spec", "read_manifest", "register_format", "unregister_format", "view_kept",
]  # fmt: skip

VIEWS = ("frontal", "pa", "ap", "lateral", "all")
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")
PATH_COLUMNS = ("path", "Path", "filepath", "file", "filename", "file_name", "image", "image_path", "Image Index")
PATIENT_COLUMNS = ("patient", "patient_id", "Patient ID", "PatientID", "patientid", "subject_id")
# a patient id cell that means "unknown" (pandas' astype(str) writes nan, R writes NA): such rows are unknown
# patients (each image its own, counted and warned about), not one patient called "nan"
MISSING_IDS = frozenset({"nan", "na", "n/a", "none", "null", "<na>", "-"})
VIEW_COLUMNS = ("view", "View Position", "ViewPosition", "projection", "Frontal/Lateral")
LABEL_FIELDS = ("label_column", "label_columns", "label")
UNCERTAIN_VALUES = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}


@dataclass
class ManifestSpec:
    """How to read a manifest. ``None`` fields take the format's default (or are found automatically)."""

    format: str = "auto"  # auto or a registered format (cxraug.data.formats): csv | chexpert | nih | mimic | hannover
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
        given = [n for n in LABEL_FIELDS if getattr(self, n) not in (None, [])]
        if len(given) > 1:
            raise ConfigError(f"give only one of label_column, label_columns, label; got {', '.join(given)}")
        if self.path_column and self.path_template:
            raise ConfigError("give path_column or path_template, not both")
        if self.classes is not None and (not self.classes or len(set(self.classes)) < len(self.classes)
                                         or self.label or self.label_columns):  # fmt: skip
            raise ConfigError("manifest classes: distinct class names of the label column (it selects rows of a "
                              f"one-class-per-row manifest); got {self.classes}")  # fmt: skip


def detect_format(header: list[str], path: str | os.PathLike = "") -> str:
    """The name of the format auto-detection picks for this header (see :func:`cxraug.data.formats.detect`)."""
    return detect(header, Path(path)).name


def view_kept(view: str, wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "frontal":
        return view in ("pa", "ap", "frontal")
    return view == wanted


def _fill(spec: ManifestSpec, fmt: ManifestFormat, header: list[str]) -> ManifestSpec:
    """``spec`` with the format's defaults where the user left a field unset."""
    d = fmt.defaults(header).given()
    if any(getattr(spec, k) not in (None, []) for k in LABEL_FIELDS):
        for k in LABEL_FIELDS:
            d.pop(k, None)  # the user named the labels: the format's label default is off
    if spec.path_column or spec.path_template:
        d.pop("path_column", None)
        d.pop("path_template", None)
    return replace(spec, format=fmt.name, **{k: v for k, v in d.items() if getattr(spec, k) in (None, [])})


def _labels_named(s: ManifestSpec) -> bool:
    return bool(s.label or s.label_column or s.label_columns)


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
    """Relative manifest paths -> files, the way releases lay them out. Every format's paths go through it, so a
    generic CSV cut from a release (a CheXpert subset, NIH file names) finds its files as the release's own does."""

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


# ----------------------------------------------------------------------------- reading
@dataclass
class _Manifest:
    """One manifest being read: its table, format and filled-in spec, its rows, and what went wrong so far."""

    table: Table
    fmt: ManifestFormat
    spec: ManifestSpec
    rows: list[dict[str, str]]  # header -> cell, plus "__line__" (the file line, for messages)
    where: str  # the file, as messages name it
    problems: list[str]
    skipped: list[str]

    @property
    def header(self) -> set[str]:
        """The rows' columns: the manifest's, plus any the format joined in."""
        return set(self.rows[0]) if self.rows else set(self.table.header)


@dataclass
class _Listing:
    """The rows kept: samples by normalised file path (with their lines), views seen, files of unknown patient."""

    entries: dict[str, list[tuple[str, Sample]]] = field(default_factory=dict)
    views: Counter[str] = field(default_factory=Counter)
    unknown: set[str] = field(default_factory=set)


def read_manifest(csv_path: str | os.PathLike, spec: ManifestSpec | None = None) -> Collection:
    """Read a manifest into a :class:`Collection` (images not decoded). Problems are collected, not raised,
    unless nothing usable is left."""
    m = _open(csv_path, spec or ManifestSpec())
    _name_columns(m)
    labels = _Labels.plan(m)
    listing = _list_rows(m, labels)
    samples = _merge_repeats(listing.entries, labels.classes, m.where, m.problems, m.skipped)
    s = m.spec
    if not samples:
        kept = f" (view filter {s.view!r}; views found: {dict(listing.views)})" if s.view_column else ""
        raise CXRAugError(f"{m.where}: no usable rows{kept}" + (f"; e.g. {m.skipped[0]}" if m.skipped else ""))
    return Collection(samples, labels.classes, multilabel=labels.multilabel, root=str(m.table.path),
                      problems=m.problems, skipped=m.skipped, views=dict(listing.views),
                      view_filter=s.view if s.view_column else "",
                      unknown_patients=sum(os.path.normpath(x.path) in listing.unknown for x in samples))  # fmt: skip


def _open(csv_path: str | os.PathLike, spec: ManifestSpec) -> _Manifest:
    """Check ``spec``, parse the table, pick the format, fill in its defaults and any labels it brings."""
    spec.validate()
    t = read_table(csv_path)
    fmt = detect(t.header, t.path) if spec.format == "auto" else get_format(spec.format)
    rows = [{**dict(zip(t.header, r)), "__line__": str(n)} for r, n in zip(t.rows, t.lines)]
    m = _Manifest(t, fmt, _fill(spec, fmt, t.header), rows, show_path(t.path), list(t.warnings), list(t.skipped))
    if not rows:
        raise CXRAugError(f"{m.where}: manifest has no rows" + (f" ({len(m.skipped)} malformed)" if m.skipped else ""))
    if not _labels_named(m.spec):
        joined = fmt.add_labels(t, rows, m.spec.labels_csv)
        if joined is not None:
            m.rows, more, columns = joined
            m.skipped += more
            m.spec.label_columns = list(columns)
    return m


def _name_columns(m: _Manifest) -> None:
    """Fill in the columns nobody named (by common names); one clear error when a needed one is missing."""
    s, header = m.spec, m.header
    if s.path_template is None and s.path_column is None:
        s.path_column = next((c for c in PATH_COLUMNS if c in header), None)
        if s.path_column is None:
            raise CXRAugError(f"{m.where}: no path column; name it with --path-column (or --path-template "
                              f"'png/{{id}}.png'); columns are {m.table.header}")  # fmt: skip
    if s.patient_column is None:
        s.patient_column = next((c for c in PATIENT_COLUMNS if c in header), None)
    if s.view_column is None:
        s.view_column = next((c for c in VIEW_COLUMNS if c in header), None)
    if not _labels_named(s):
        _find_labels(m, header)
    need = [s.path_column, s.patient_column, s.view_column, s.label_column, *(s.label_columns or [])]
    if s.path_template:
        need += re.findall(r"{([^{}:!]+)[^{}]*}", s.path_template)
    missing = [c for c in need if c and c not in header]
    if missing:
        raise CXRAugError(f"{m.where}: missing column(s) {missing}; has {m.table.header}")


def _find_labels(m: _Manifest, header: set[str]) -> None:
    """No labels named: a ``label`` column, else the columns whose every value is 1, 0, -1 or blank."""
    s = m.spec
    if "label" in header:
        s.label_column = "label"
        return
    used = {s.path_column, s.patient_column, s.view_column, "synthetic", "AP/PA"}
    s.label_columns = [c for c in m.table.header if c not in used and any(r[c].strip() for r in m.rows)
                       and all(not r[c].strip() or _is_ternary(r[c].strip()) for r in m.rows)]  # fmt: skip
    if not s.label_columns:
        raise CXRAugError(f"{m.where}: no label column found; name it with --label-column, --label-columns, "
                          f"or give every row one class with --label NAME; columns are {m.table.header}")  # fmt: skip


@dataclass
class _Labels:
    """The classes, and how a row's label cells become a vector over them."""

    classes: list[str]
    multilabel: bool
    names: dict[str, str] = field(default_factory=dict)  # a label column's spelling -> its class

    @classmethod
    def plan(cls, m: _Manifest) -> _Labels:
        s = m.spec
        if s.label:
            return cls([s.label.strip()], False)
        if s.label_columns:
            return cls(list(s.label_columns), True)
        raw = [r[s.label_column] for r in m.rows]
        sep = m.fmt.label_separator
        multilabel = any(sep in v for v in raw)
        names, warns = _canonical_names([p for v in raw for p in (v.split(sep) if multilabel else [v]) if p.strip()],
                                        m.where)  # fmt: skip
        m.problems += warns
        classes = sorted(set(names.values()))
        if s.classes is not None:
            wanted = [c.strip() for c in s.classes]
            absent = [c for c in wanted if c not in classes]
            if absent:
                raise CXRAugError(f"{m.where}: manifest classes {absent} are not in its label column "
                                  f"{s.label_column!r} (classes there: {classes})")  # fmt: skip
            classes = sorted(wanted)
        return cls(classes, multilabel, names)

    def vector(self, m: _Manifest, r: dict[str, str], at: str) -> np.ndarray | None:
        """The row's labels; ``None``: the row is left out (an empty label is also reported)."""
        s = m.spec
        lab = np.zeros(len(self.classes), np.float32)
        if s.label:
            lab[0] = 1.0
        elif s.label_columns:
            uncertain = UNCERTAIN_VALUES[s.uncertain]
            for i, c in enumerate(self.classes):
                try:
                    lab[i] = m.fmt.hot(r[c], uncertain)
                except ValueError:
                    m.problems.append(f"{at}: {c}={r[c].strip()!r} is not a number, taken as 0")
        else:
            sep, v = m.fmt.label_separator, r[s.label_column]
            found = [self.names[p] for p in (v.split(sep) if self.multilabel else [v]) if p.strip()]
            if not found:
                m.skipped.append(f"{at}: empty label; row skipped")
                return None
            if s.classes is not None:  # rows of other classes are not part of this source
                found = [f for f in found if f in self.classes]
                if not found:
                    return None
            for f in found:
                lab[self.classes.index(f)] = 1.0
        return lab


def _list_rows(m: _Manifest, labels: _Labels) -> _Listing:
    resolve = _Resolver(Path(m.spec.root) if m.spec.root else m.table.path.parent, m.table.encoding)
    out = _Listing()
    for r in m.rows:
        sample = _row_sample(m, labels, resolve, r, out)
        if sample is not None:
            out.entries.setdefault(os.path.normpath(sample.path), []).append((r["__line__"], sample))
    return out


def _row_sample(m: _Manifest, labels: _Labels, resolve: _Resolver, r: dict[str, str], out: _Listing) -> Sample | None:
    """One row as a sample (image not decoded); ``None``: left out (reported where it is a problem)."""
    s, at = m.spec, f"{m.where}:{r['__line__']}"
    rel = _row_path(m, r, at)
    if not rel:
        m.skipped.append(f"{at}: empty path; row skipped")
        return None
    lab = labels.vector(m, r, at)
    if lab is None:
        return None
    path = resolve(rel)
    pid = _patient(m, r, rel, path, out.unknown)
    view = ""
    if s.view_column:
        view = m.fmt.view(r, s.view_column)
        out.views[view] += 1
        if not view_kept(view, s.view):
            return None
    synthetic = r.get("synthetic", "").strip().lower() in ("true", "1", "yes")
    return Sample(None, lab, pid, "synthetic" if synthetic else "real", str(path), view)


def _row_path(m: _Manifest, r: dict[str, str], at: str) -> str:
    s = m.spec
    try:
        return m.fmt.row_path(r, s.path_column, s.path_template)
    except (KeyError, IndexError, ValueError) as e:
        if s.path_template:
            raise CXRAugError(f"path template {s.path_template!r} does not fit {at} ({e})") from e
        raise CXRAugError(f"{at}: the {m.fmt.name} format cannot build an image path from this row ({e})") from e


def _patient(m: _Manifest, r: dict[str, str], rel: str, path: Path, unknown: set[str]) -> str:
    """The patient column, else the format's reading of the path, else the file itself (an unknown patient)."""
    pid = r[m.spec.patient_column].strip() if m.spec.patient_column else ""
    if pid.lower() in MISSING_IDS:  # what pandas, R or a database export writes for a missing id
        pid = ""
    if not pid:
        pid = m.fmt.patient_from_path(rel, path)
    if not pid:
        pid = path.stem
        unknown.add(os.path.normpath(str(path)))
    return pid


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
