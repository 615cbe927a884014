"""Manifest formats: one class per release layout, registered once.

A format says what one release's CSV looks like: how to recognise it from its header (:meth:`~ManifestFormat.detect`),
which columns hold paths, patients, views and labels (:attr:`~ManifestFormat.columns`), how a row becomes an image
path (:meth:`~ManifestFormat.row_path`), where a patient id hides when no column has one
(:meth:`~ManifestFormat.patient_from_path`), and how label cells read (:attr:`~ManifestFormat.label_separator`,
:meth:`~ManifestFormat.hot`, :meth:`~ManifestFormat.add_labels`). :func:`register_format` adds a class to the
registry, which is the only list of formats: ``--format`` choices, auto-detection and
:class:`~cxraug.data.manifests.ManifestSpec` validation all read it. How any manifest is then read (column
discovery, view filter, repeated files, problem reporting) is :mod:`cxraug.data.manifests`, the same for every format.

Auto-detection asks the formats in registration order and takes the first whose ``detect`` is true; the generic
``csv`` format is the fallback, asked last. See docs/architecture.md, "How to add a manifest format".
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, TypeVar

from cxraug.data.tables import Table, read_table
from cxraug.errors import ConfigError, CXRAugError, show_path

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
NIH_NAME = re.compile(r"^(\d{8})_(\d{3})$")
CHEXPERT_PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")
FORMAT_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Columns:
    """A format's column defaults. ``None``: the format does not set it (the user may, or it is looked for by
    common names). Whatever the user sets wins; naming any label field turns all of the format's label defaults
    off, naming a path column or template turns both path defaults off."""

    path_column: str | None = None
    path_template: str | None = None  # Python format over the row's columns, e.g. "png/{image_id}.png"
    patient_column: str | None = None
    view_column: str | None = None
    label_column: str | None = None  # one class name per row (label_separator between several)
    label_columns: tuple[str, ...] | None = None  # multi-hot 1/0/-1/blank columns
    label: str | None = None  # one class for every row

    def given(self) -> dict[str, str | list[str]]:
        """The fields the format sets (``label_columns`` as a list, as :class:`ManifestSpec` holds it)."""
        out: dict[str, str | list[str]] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


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


class ManifestFormat(ABC):
    """One manifest layout. Subclass, set :attr:`name` and :attr:`columns`, write :meth:`detect`, override any
    other hook whose default does not fit, and decorate with :func:`register_format`. The defaults below are the
    conventions the built-in releases share (and that generic CSVs derived from them keep)."""

    name: ClassVar[str]  # what --format and data.manifest.format take
    columns: ClassVar[Columns] = Columns()
    label_separator: ClassVar[str] = "|"  # between several class names in one label cell ("Effusion|Mass")
    fallback: ClassVar[bool] = False  # the format auto-detection takes when no other fits (only one may be)

    @abstractmethod
    def detect(self, columns: Sequence[str], path: Path) -> bool:
        """Whether a manifest at ``path`` with these header ``columns`` is in this format."""

    def defaults(self, header: Sequence[str]) -> Columns:
        """The column defaults for a manifest with this header (:attr:`columns` unless they depend on it)."""
        return self.columns

    def add_labels(
        self, table: Table, rows: list[dict[str, str]], labels_csv: str | None
    ) -> tuple[list[dict[str, str]], list[str], list[str]] | None:
        """Labels from outside the manifest, asked only when neither the user nor :meth:`defaults` named any:
        ``(rows with label columns added, one line per row skipped, the label columns)``, or ``None`` to look
        for labels in the manifest itself (a ``label`` column, else 1/0/-1 columns)."""
        return None

    def row_path(self, row: Mapping[str, str], path_column: str | None, path_template: str | None) -> str:
        """The image path of a row, relative to the manifest's folder (or ``root``), or absolute; blank: no image.
        ``path_template`` wins over ``path_column``; a template that does not fit the row raises ``KeyError``,
        ``IndexError`` or ``ValueError`` (the reader names the row)."""
        if path_template:
            return path_template.format(**{k: v.strip() for k, v in row.items()})
        return row[path_column].strip() if path_column else ""

    def patient_from_path(self, rel: str, path: Path) -> str:
        """A patient id read from the image path when the row has none; ``""``: unknown. By default an NIH-style
        file name (``00000013_005.png``: patient 13, follow-up 5) names its patient, whatever the format."""
        m = NIH_NAME.match(path.stem)
        return m.group(1) if m else ""

    def view(self, row: Mapping[str, str], view_column: str) -> str:
        """The row's view (see :func:`canonical_view`). CheXpert's ``Frontal/Lateral`` column says only
        "frontal"; its ``AP/PA`` column, where present, tells which."""
        view = canonical_view(row[view_column])
        if view_column == "Frontal/Lateral" and view == "frontal" and "AP/PA" in row:
            pp = canonical_view(row["AP/PA"])
            view = pp if pp in ("pa", "ap") else "frontal"
        return view

    def hot(self, cell: str, uncertain: float) -> float:
        """One multi-hot label cell: 1 positive, 0 negative, blank = not mentioned = 0, -1 = uncertain (the
        policy's value: 1, 0 or NaN), ``nan`` = ignored (as ``data split`` writes it). ``ValueError`` if the cell
        is no number (the reader reports it and takes 0)."""
        v = cell.strip()
        if v.lower() == "nan":
            return float("nan")
        x = float(v) if v else 0.0
        return uncertain if x == -1 else float(x > 0)


# ----------------------------------------------------------------------------- registry
_REGISTRY: dict[str, ManifestFormat] = {}
F = TypeVar("F", bound=type[ManifestFormat])


def register_format(cls: F) -> F:
    """Class decorator: add a :class:`ManifestFormat` to the registry under ``cls.name``. Registering the same
    class again (a module reloaded) replaces it in place; another class under a taken name is refused."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not FORMAT_NAME.match(name) or name == "auto":
        raise ValueError(
            f"{cls.__qualname__}: a manifest format needs a lower-case name other than 'auto'; got {name!r}"
        )
    old = _REGISTRY.get(name)
    if old is not None and _qualified(type(old)) != _qualified(cls):
        raise ValueError(f"manifest format {name!r} is already registered by {_qualified(type(old))}")
    if cls.fallback and any(f.fallback and f.name != name for f in _REGISTRY.values()):
        raise ValueError(f"{cls.__qualname__}: only one manifest format may be the fallback")
    _REGISTRY[name] = cls()
    return cls


def unregister_format(name: str) -> None:
    """Remove a format from the registry (a test's toy format, say)."""
    if _REGISTRY.pop(name, None) is None:
        raise KeyError(f"no manifest format {name!r} is registered")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def format_names() -> tuple[str, ...]:
    """``auto`` and every registered format, in registration order."""
    return ("auto", *_REGISTRY)


def get_format(name: str) -> ManifestFormat:
    """The registered format called ``name`` (one clear error naming the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"manifest format must be one of {', '.join(format_names())}; got {name!r}") from None


def detect(columns: Sequence[str], path: str | Path = "") -> ManifestFormat:
    """The first registered format whose ``detect`` accepts this header, else the fallback."""
    p = Path(path)
    for f in _REGISTRY.values():
        if not f.fallback and f.detect(columns, p):
            return f
    for f in _REGISTRY.values():
        if f.fallback:
            return f
    raise CXRAugError(f"{show_path(p)}: no registered manifest format fits its columns {list(columns)}")


class FormatNames(Sequence[str]):
    """``FORMATS``: :func:`format_names` read afresh on every use, so a format registered after import is a valid
    ``--format`` choice and ``ManifestSpec.format`` too."""

    def __getitem__(self, i):  # type: ignore[override]
        return format_names()[i]

    def __len__(self) -> int:
        return len(format_names())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(format_names())


FORMATS = FormatNames()


# ----------------------------------------------------------------------------- the built-in formats
@register_format
class GenericCSV(ManifestFormat):
    """Any CSV/TSV: a path column found by common names (``path``, ``filename``, ...) or a ``path_template``; a
    ``label`` column (one class per row, ``|`` between several), or multi-hot 1/0/-1 columns found by their values
    (so ``Age`` or ``Sex`` never become labels), or one ``label`` for every row. The fallback of auto-detection."""

    name = "csv"
    fallback = True

    def detect(self, columns: Sequence[str], path: Path) -> bool:
        return True


@register_format
class CheXpert(ManifestFormat):
    """CheXpert (Irvin et al., 2019, "CheXpert: a large chest radiograph dataset with uncertainty labels and
    expert comparison"), ``train.csv``/``valid.csv``. ``Path`` starts with the release folder
    (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), so it is relative to the folder that
    holds the release; ``Frontal/Lateral`` and ``AP/PA`` give the view. The 14 observations are multi-hot with
    -1 for the labeller's "uncertain" (the ``uncertain`` policy decides: U-Ones, U-Zeros or ignored) and blank for
    "not mentioned" (0). ``Sex`` and ``Age`` are metadata. There is no patient column: the patient is the
    ``patientNNNNN`` folder of the path."""

    name = "chexpert"
    columns = Columns(path_column="Path", view_column="Frontal/Lateral")

    def detect(self, columns: Sequence[str], path: Path) -> bool:
        return {"Path", "Frontal/Lateral"} <= set(columns)

    def defaults(self, header: Sequence[str]) -> Columns:
        return replace(self.columns, label_columns=tuple(c for c in CHEXPERT_LABELS if c in header))

    def patient_from_path(self, rel: str, path: Path) -> str:
        m = CHEXPERT_PATIENT.search(rel.replace("\\", "/"))
        return m.group(1) if m else super().patient_from_path(rel, path)


@register_format
class NIHChestXray(ManifestFormat):
    """NIH ChestX-ray8/14 (Wang et al., 2017, "ChestX-ray8: hospital-scale chest X-ray database and benchmarks on
    weakly-supervised classification and localization of common thorax diseases"), ``Data_Entry_2017.csv``.
    ``Image Index`` is a bare file name, found anywhere under the CSV's folder (the download splits the images
    over ``images_001/images/`` ... ``images_012/images/``); ``Finding Labels`` holds the text-mined findings
    separated by ``|``, with ``No Finding`` a class of its own; ``Patient ID``; ``View Position`` (PA/AP)."""

    name = "nih"
    columns = Columns(path_column="Image Index", label_column="Finding Labels", patient_column="Patient ID",
                      view_column="View Position")  # fmt: skip

    def detect(self, columns: Sequence[str], path: Path) -> bool:
        return {"Image Index", "Finding Labels"} <= set(columns)


@register_format
class MimicCxrJpg(ManifestFormat):
    """MIMIC-CXR-JPG (Johnson et al., 2019, "MIMIC-CXR-JPG, a large publicly available database of labeled chest
    radiographs"), ``mimic-cxr-2.0.0-metadata.csv``: one row per image (``dicom_id``, ``subject_id``,
    ``study_id``, ``ViewPosition``); the JPEG is ``files/p{first two digits of subject}/p{subject}/s{study}/
    {dicom_id}.jpg``. Labels are per study, in a second CSV (``mimic-cxr-2.0.0-chexpert.csv``, else the negbio
    one, beside the metadata, or ``labels_csv``) joined on ``(subject_id, study_id)``, unless the metadata itself
    carries the CheXpert columns. The patient is ``subject_id``."""

    name = "mimic"
    columns = Columns(path_template="files/p{subject_id:.2}/p{subject_id}/s{study_id}/{dicom_id}.jpg",
                      patient_column="subject_id", view_column="ViewPosition")  # fmt: skip
    label_files = ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-negbio.csv")

    def detect(self, columns: Sequence[str], path: Path) -> bool:
        return {"dicom_id", "subject_id", "study_id"} <= set(columns)

    def defaults(self, header: Sequence[str]) -> Columns:
        present = tuple(c for c in CHEXPERT_LABELS if c in header)
        return replace(self.columns, label_columns=present or None)

    def add_labels(
        self, table: Table, rows: list[dict[str, str]], labels_csv: str | None
    ) -> tuple[list[dict[str, str]], list[str], list[str]]:
        src = Path(labels_csv) if labels_csv else self._label_file(table)
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
                skipped.append(f"{show_path(table.path)}:{r['__line__']}: study {r.get('study_id')} has no labels in "
                               f"{show_path(src.name)}; row skipped")  # fmt: skip
                continue
            out.append({**r, **lab})
        return out, skipped, [c for c in CHEXPERT_LABELS if out and c in out[0]]

    def _label_file(self, table: Table) -> Path:
        for name in self.label_files:
            if (table.path.parent / name).is_file():
                return table.path.parent / name
        raise CXRAugError(
            f"{show_path(table.path)}: MIMIC metadata has no label columns and no mimic-cxr-2.0.0-chexpert.csv beside "
            "it; give labels_csv (--labels-csv FILE), label_columns, or one class for all rows (--label NAME)"
        )


@register_format
class Hannover(ManifestFormat):
    """The Hannover Medical School COVID-19 chest X-ray repository (Winther et al., 2020, "COVID-19 image
    repository", figshare), ``data.csv``: ``image_id`` names ``png/<image_id>.png``; ``patient_id``;
    ``projection`` (ap/pa). Every image is of a COVID-19 positive patient, so every row gets the one class
    ``covid`` (``label``); sex, age and laboratory values are metadata."""

    name = "hannover"
    columns = Columns(path_template="png/{image_id}.png", patient_column="patient_id", view_column="projection",
                      label="covid")  # fmt: skip

    def detect(self, columns: Sequence[str], path: Path) -> bool:
        return {"image_id", "patient_id", "projection"} <= set(columns)
