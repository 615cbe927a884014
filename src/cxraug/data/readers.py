"""Readers for real collections. All return a :class:`Collection` of :class:`Sample` (images lazy).

- :func:`read_folder`: ``root/<class>/**/<image>``; also the COVID-19 Radiography Database layout
  (``COVID/images/*.png`` with ``COVID/masks`` ignored) and DICOM files.
- :func:`read_csv_manifest`: a CSV with a path column and a label column or multi-hot columns
  (CheXpert style, uncertain ``-1`` mapped by a policy); named release formats (CheXpert, NIH,
  MIMIC-CXR, Hannover) are in :mod:`cxraug.data.manifests`.
- :func:`read_xrv`: any torchxrayvision dataset object the user has the files for.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from cxraug.data.imageio import SUPPORTED_EXTS, dicom_patient_id, file_kind, is_dicom
from cxraug.data.manifests import UNCERTAIN_POLICIES, ManifestSpec, read_manifest
from cxraug.data.sample import Collection, Sample
from cxraug.errors import CXRAugError, show_path

NIH_NAME = re.compile(r"^(\d{8})_(\d{3})$")
IGNORED_DIRS = {"masks", "mask", "lung masks", "__macosx"}


def patient_id_from_name(path: str | os.PathLike) -> str:
    """NIH ``PATIENT_FOLLOWUP.png`` -> ``PATIENT``; anything else -> the file stem (one image/patient)."""
    stem = Path(path).stem
    m = NIH_NAME.match(stem)
    return m.group(1) if m else stem


def patient_id_known(path: str | os.PathLike) -> bool:
    return NIH_NAME.match(Path(path).stem) is not None


def _file_mode(p: Path, where: str = "") -> tuple[int | None, str]:
    """(st_mode, ""), or (None, the line saying why it is skipped): a broken symlink, or a file that cannot be
    stat'ed."""
    try:
        return os.stat(p).st_mode, ""
    except FileNotFoundError:
        return None, f"{show_path(p)}: broken symlink{where}, skipped"
    except OSError as e:
        return None, f"{show_path(p)}: cannot stat ({e.strerror or e}), skipped"


def _is_image(p: Path) -> bool:
    """An image by its extension, or DICOM by its content (named without .dcm: no extension, or a UID's)."""
    return p.suffix.lower() in SUPPORTED_EXTS or is_dicom(p)


def _walk_images(folder: Path) -> tuple[list[Path], list[str], list[str]]:
    """Image files below ``folder`` (sorted), skipping mask folders, hidden files and symlink loops.

    Returns (files, problems, skipped). Only regular files are listed: a FIFO, device or socket is
    never opened (a FIFO would block forever) and is reported in ``skipped`` with its kind.
    """
    files: list[Path] = []
    problems: list[str] = []
    skipped: list[str] = []
    others: dict[str, int] = {}  # regular files neither an image by extension nor DICOM by content, per extension
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
            mode, why = _file_mode(p)
            if mode is None:
                skipped.append(why)
                continue
            if not stat.S_ISREG(mode):
                skipped.append(f"{show_path(p)}: {file_kind(mode)}, not a regular file, skipped")
                continue
            if _is_image(p):
                files.append(p)
            else:
                ext = p.suffix.lower() or "no extension"
                others[ext] = others.get(ext, 0) + 1
    if others:
        counts = ", ".join(f"{e} {n}" for e, n in sorted(others.items(), key=lambda kv: (-kv[1], kv[0])))
        problems.append(f"{show_path(folder)}: {sum(others.values())} file(s) neither an image by extension nor "
                        f"DICOM by content, not read ({counts})")  # fmt: skip
    return files, problems, skipped


def _beside_classes(root: Path, classes: list[str]) -> list[str]:
    """Lines for what a folder-per-class read leaves out at the top level: image files beside the class
    folders, and broken links (a class folder on an unmounted disk, say), each named."""
    out = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.name.startswith("."):
            continue
        p = Path(e.path)
        mode, why = _file_mode(p, " beside the class folders (a class folder not there?)")
        if mode is None:
            out.append(why)
            continue
        if stat.S_ISREG(mode) and _is_image(p):
            out.append(f"{show_path(p)}: an image beside the class folders ({', '.join(classes)}), left out: a folder "
                       "with sub-folders is read as one sub-folder per class")  # fmt: skip
    return out


def read_folder(root: str | os.PathLike, classes: list[str] | None = None) -> Collection:
    """Folder-per-class collection. Class names are the sub-folder names (sorted).

    Patient ids come from DICOM ``PatientID`` or NIH-style names (``PATIENT_FOLLOWUP.png``); other
    files count as one patient each and are reported in ``unknown_patients``. A file reachable under
    two classes (symlinks or hard links to one file) is left out and reported.
    """
    root = Path(root)
    if not root.exists():
        raise CXRAugError(f"{show_path(root)}: no such file or folder")
    if not root.is_dir():
        raise CXRAugError(f"{show_path(root)}: not a folder (expected one sub-folder per class)")
    try:
        subdirs = sorted(
            d.name
            for d in root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and d.name.lower() not in IGNORED_DIRS
        )
    except OSError as e:
        raise CXRAugError(f"{show_path(root)}: cannot list the folder ({e.strerror or e})") from e
    problems: list[str] = []
    skipped: list[str] = []
    if classes is None:
        classes = subdirs
    if not classes:
        # A flat folder of images: one unnamed class (e.g. covid-cxnet). Its name is the folder's.
        files, problems, skipped = _walk_images(root)
        if not files:
            raise CXRAugError(f"{show_path(root)}: no images found")
        classes = [root.name]
        per_class = {root.name: files}
    else:
        per_class = {}
        try:
            skipped += _beside_classes(root, classes)
        except OSError as e:
            raise CXRAugError(f"{show_path(root)}: cannot list the folder ({e.strerror or e})") from e
        for c in classes:
            files, probs, skip = _walk_images(root / c)
            problems += probs
            skipped += skip
            if not files:
                problems.append(f"{show_path(root / c)}: class folder has no images")
            per_class[c] = files
        if not any(per_class.values()):
            raise CXRAugError(f"{show_path(root)}: no images in any class folder ({', '.join(classes)})")
    where: dict[tuple[int, int], list[tuple[str, Path]]] = {}
    for c in classes:
        for p in per_class[c]:
            st = os.stat(p)
            where.setdefault((st.st_dev, st.st_ino), []).append((c, p))
    conflicted = set()
    for hits in where.values():
        if len({c for c, _ in hits}) > 1:
            conflicted.update(p for _, p in hits)
            shown = "; ".join(f"{c}: {show_path(p)}" for c, p in hits)
            skipped.append(f"the same file under different classes ({shown}); left out")
    samples = []
    unknown = 0
    for i, c in enumerate(classes):
        for p in per_class[c]:
            if p in conflicted:
                continue
            lab = np.zeros(len(classes), np.float32)
            lab[i] = 1.0
            pid = dicom_patient_id(p) if is_dicom(p) else None
            if pid is None:
                pid = patient_id_from_name(p)
                unknown += not patient_id_known(p)
            samples.append(Sample(None, lab, pid, "real", str(p)))
    if not samples:
        raise CXRAugError(f"{show_path(root)}: no usable images ({len(skipped)} skipped)")
    return Collection(samples, list(classes), multilabel=False, root=str(root), problems=problems,
                      skipped=skipped, unknown_patients=unknown)  # fmt: skip


def read_csv_manifest(
    csv_path: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    path_col: str = "path",
    label_col: str | None = None,
    label_cols: list[str] | None = None,
    patient_col: str | None = None,
    uncertain: str = "ones",
    spec: ManifestSpec | None = None,
) -> Collection:
    """A CSV/TSV manifest. Either ``label_col`` (one class name per row) or ``label_cols`` (multi-hot
    0/1/-1/blank columns, CheXpert style). Uncertain ``-1`` -> 1 (``ones``, U-Ones), 0 (``zeros``)
    or NaN (``ignore``: masked out of the loss). Blank -> 0. Paths are relative to ``root``
    (default: the CSV's folder). ``spec`` (a :class:`ManifestSpec`) replaces the keyword arguments and
    reads the named formats (CheXpert, NIH, MIMIC-CXR, Hannover)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise CXRAugError(f"uncertain policy must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    if label_col is not None and label_cols is not None:
        raise CXRAugError("give exactly one of label_col (single label) or label_cols (multi-hot)")
    if spec is None:
        spec = ManifestSpec(
            format="auto" if path_col == "path" and label_col is None and label_cols is None else "csv",
            path_column=None if path_col == "path" else path_col,
            label_column=label_col,
            label_columns=list(label_cols) if label_cols is not None else None,
            patient_column=patient_col,
            uncertain=uncertain,
            root=str(root) if root is not None else None,
        )
    return read_manifest(csv_path, spec)


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


def is_manifest(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in (".csv", ".tsv") and Path(path).is_file()


def open_collection(path: str | os.PathLike, spec: ManifestSpec | None = None, **csv_kwargs) -> Collection:
    """Folder or CSV/TSV manifest, by what ``path`` is."""
    p = Path(path)
    if is_manifest(p):
        return read_csv_manifest(p, spec=spec, **csv_kwargs)
    if p.is_file():
        raise CXRAugError(f"{show_path(p)}: not a folder or a .csv/.tsv manifest")
    return read_folder(p)
