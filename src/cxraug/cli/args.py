"""The argument helpers the command modules share: how a command that reads real images takes its data-source
and CSV/TSV manifest flags, reads them back as configs, and refuses a bad value up front."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from cxraug.errors import ConfigError

if TYPE_CHECKING:
    from cxraug.data.manifests import ManifestSpec
    from cxraug.data.source import DataConfig


def require(ok: bool, message: str) -> None:
    """Up-front argument check for sub-commands: one clear line (exit 2) instead of a failure deep inside."""
    if not ok:
        raise ConfigError(message)


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
                   help=f"manifest layout: {', '.join(f for f in FORMATS if f != 'auto')} (chexpert, nih: "
                        "Data_Entry_2017.csv, mimic: metadata CSV, hannover: data.csv, csv: generic, and any format "
                        "registered with @register_format); default auto-detected from the header")  # fmt: skip
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


def source_config(a: argparse.Namespace, path: str | None, size: int = 64) -> DataConfig | None:
    """The :class:`~cxraug.data.source.DataConfig` for one input ``path`` of a command that took
    :func:`add_source_args` (``None`` for an input that was not given), validated."""
    from cxraug.data.source import DataConfig

    if path is None:
        return None
    cfg = DataConfig(path=str(path), size=size, cache_dir=getattr(a, "cache_dir", None),
                     manifest=manifest_from_args(a))  # fmt: skip
    cfg.validate()
    return cfg


def manifest_from_args(a: argparse.Namespace) -> ManifestSpec:
    """The :class:`~cxraug.data.manifests.ManifestSpec` the manifest flags describe (not yet validated)."""
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
