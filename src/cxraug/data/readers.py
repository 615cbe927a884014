"""Readers for real collections. All return a :class:`Collection` of :class:`Sample` (images lazy).

- :func:`read_folder`: ``root/<class>/**/<image>``; also the COVID-19 Radiography Database layout
  (``COVID/images/*.png`` with ``COVID/masks`` ignored) and DICOM files.
- :func:`read_csv_manifest`: a CSV with a path column and a label column or multi-hot columns
  (CheXpert style, uncertain ``-1`` mapped by a policy).
- :func:`read_xrv`: any torchxrayvision dataset object the user has the files for.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from cxraug.data.imageio import SUPPORTED_EXTS, dicom_patient_id, is_dicom
from cxraug.data.sample import Collection, Sample
from cxraug.errors import CXRAugError, show_path

NIH_NAME = re.compile(r"^(\d{8})_(\d{3})$")
IGNORED_DIRS = {"masks", "mask", "lung masks", "__macosx"}


def patient_id_from_name(path: str | os.PathLike) -> str:
    """NIH ``PATIENT_FOLLOWUP.png`` -> ``PATIENT``; anything else -> the file stem (one image/patient)."""
    stem = Path(path).stem
    m = NIH_NAME.match(stem)
    return m.group(1) if m else stem


def _walk_images(folder: Path) -> tuple[list[Path], list[str]]:
    """Image files below ``folder`` (sorted), skipping mask folders, hidden files and symlink loops."""
    files: list[Path] = []
    problems: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=None):
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink loop or a second link to the same folder
            problems.append(f"{show_path(dirpath)}: symlink loop or repeated folder, skipped")
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if d.lower() not in IGNORED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith("."):
                continue
            if not p.exists():
                problems.append(f"{show_path(p)}: broken symlink, skipped")
                continue
            if p.suffix.lower() in SUPPORTED_EXTS or (p.suffix == "" and is_dicom(p)):
                files.append(p)
    return files, problems


def read_folder(root: str | os.PathLike, classes: list[str] | None = None) -> Collection:
    """Folder-per-class collection. Class names are the sub-folder names (sorted)."""
    root = Path(root)
    if not root.exists():
        raise CXRAugError(f"{show_path(root)}: no such file or folder")
    if not root.is_dir():
        raise CXRAugError(f"{show_path(root)}: not a folder (expected one sub-folder per class)")
    subdirs = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and d.name.lower() not in IGNORED_DIRS
    )
    problems: list[str] = []
    if classes is None:
        classes = subdirs
    if not classes:
        # A flat folder of images: one unnamed class (e.g. covid-cxnet). Its name is the folder's.
        files, problems = _walk_images(root)
        if not files:
            raise CXRAugError(f"{show_path(root)}: no images found")
        classes = [root.name]
        per_class = {root.name: files}
    else:
        per_class = {}
        for c in classes:
            files, probs = _walk_images(root / c)
            problems += probs
            if not files:
                problems.append(f"{show_path(root / c)}: class folder has no images")
            per_class[c] = files
        if not any(per_class.values()):
            raise CXRAugError(f"{show_path(root)}: no images in any class folder ({', '.join(classes)})")
    samples = []
    for i, c in enumerate(classes):
        for p in per_class[c]:
            lab = np.zeros(len(classes), np.float32)
            lab[i] = 1.0
            pid = (dicom_patient_id(p) if is_dicom(p) else None) or patient_id_from_name(p)
            samples.append(Sample(None, lab, pid, "real", str(p)))
    return Collection(samples, list(classes), multilabel=False, root=str(root), problems=problems)


UNCERTAIN_POLICIES = ("ones", "zeros", "ignore")


def read_csv_manifest(
    csv_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    path_col: str = "path",
    label_col: str | None = None,
    label_cols: list[str] | None = None,
    patient_col: str | None = None,
    uncertain: str = "ones",
) -> Collection:
    """A CSV manifest. Either ``label_col`` (one class name per row) or ``label_cols`` (multi-hot
    0/1/-1/blank columns, CheXpert style). Uncertain ``-1`` -> 1 (``ones``, U-Ones), 0 (``zeros``)
    or NaN (``ignore``: masked out of the loss). Blank -> 0. Paths are relative to ``root``
    (default: the CSV's folder)."""
    csv_path = Path(csv_path)
    if uncertain not in UNCERTAIN_POLICIES:
        raise CXRAugError(f"uncertain policy must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if not csv_path.is_file():
        raise CXRAugError(f"{show_path(csv_path)}: manifest not found")
    root = Path(root) if root is not None else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise CXRAugError(f"{show_path(csv_path)}: manifest has no rows")
    cols = rows[0].keys()
    missing = [c for c in [path_col, label_col, patient_col, *(label_cols or [])] if c and c not in cols]
    if missing:
        raise CXRAugError(f"{show_path(csv_path)}: missing column(s) {missing}; has {list(cols)}")
    if label_col is None and label_cols is None:  # auto: a `label` column, else every other column is a label
        patient_col = patient_col or next((c for c in ("patient", "patient_id", "Patient ID") if c in cols), None)
        if "label" in cols:
            label_col = "label"
        else:
            label_cols = [c for c in cols if c not in (path_col, patient_col, "synthetic")]
    if (label_col is None) == (label_cols is None):
        raise CXRAugError("give exactly one of label_col (single label) or label_cols (multi-hot)")
    samples: list[Sample] = []
    problems: list[str] = []
    if label_col is not None:
        classes = sorted({r[label_col] for r in rows if r[label_col] != ""})
        multilabel = False
    else:
        classes = list(label_cols or [])
        multilabel = True
    unc = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}[uncertain]
    for n, r in enumerate(rows, start=2):
        p = Path(r[path_col])
        p = p if p.is_absolute() else root / p
        lab = np.zeros(len(classes), np.float32)
        if label_col is not None:
            if r[label_col] == "":
                problems.append(f"{show_path(csv_path)}:{n}: empty label, row skipped")
                continue
            lab[classes.index(r[label_col])] = 1.0
        else:
            for i, c in enumerate(classes):
                v = (r[c] or "").strip()
                try:
                    x = float(v) if v else 0.0
                except ValueError:
                    problems.append(f"{show_path(csv_path)}:{n}: {c}={v!r} is not a number, taken as 0")
                    x = 0.0
                lab[i] = unc if x == -1 else float(x > 0)
        pid = r[patient_col] if patient_col else patient_id_from_name(p)
        synthetic = str(r.get("synthetic", "")).strip().lower() in ("true", "1", "yes")
        samples.append(Sample(None, lab, str(pid), "synthetic" if synthetic else "real", str(p)))
    return Collection(samples, classes, multilabel=multilabel, root=str(root), problems=problems)


def read_xrv(
    dataset, patient_cols: tuple[str, ...] = ("patientid", "Patient ID", "PatientID", "patient_id")
) -> Collection:
    """Wrap a torchxrayvision dataset (e.g. ``xrv.datasets.NIH_Dataset(imgpath=...)``).

    Images are decoded through the dataset itself (its own ``__getitem__``), so every dataset
    class xrv supports works; labels are ``dataset.labels`` over ``dataset.pathologies`` (NaN kept).
    """
    import torchxrayvision as xrv

    base = dataset
    idx_map = np.arange(len(dataset))
    while isinstance(base, xrv.datasets.SubsetDataset):  # unwrap to the object that holds .csv
        idx_map = np.asarray(base.idxs)[idx_map]
        base = base.dataset
    csvdf = getattr(base, "csv", None)
    pcol = next((c for c in patient_cols if csvdf is not None and c in csvdf.columns), None)
    samples = []
    for k in range(len(dataset)):
        j = int(idx_map[k])
        pid = str(csvdf[pcol].iloc[j]) if pcol else f"{type(base).__name__}-{j}"
        path = f"xrv://{type(base).__name__}/{j}"
        samples.append(_XRVSample(None, np.asarray(dataset.labels[k], np.float32), pid, "real", path, dataset, k))
    return Collection(samples, list(dataset.pathologies), multilabel=True, root=type(base).__name__)


class _XRVSample(Sample):
    def __init__(self, image, labels, patient_id, source, path, dataset, index):
        super().__init__(image, labels, patient_id, source, path)
        self._ds, self._i = dataset, index

    def load(self) -> Sample:
        from cxraug.errors import ImageReadError

        try:
            img = np.asarray(self._ds[self._i]["img"], np.float32)
        except Exception as e:  # missing file, decoding error inside xrv
            raise ImageReadError(self.path, f"torchxrayvision could not load it ({e})") from e
        img = img[0] if img.ndim == 3 else img
        img = np.clip((img + 1024.0) / 2048.0, 0.0, 1.0)  # xrv normalises to [-1024, 1024]
        return Sample(img, self.labels, self.patient_id, self.source, self.path)


def open_collection(path: str | os.PathLike, **csv_kwargs) -> Collection:
    """Folder or CSV manifest, by what ``path`` is."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return read_csv_manifest(p, **csv_kwargs)
    return read_folder(p)
