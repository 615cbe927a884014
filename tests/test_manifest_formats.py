"""Issue 29 item 4: manifest formats are classes behind one interface, kept in one registry.

The toy format below is registered from this file alone (nothing under src/ names it) and then read the way users
read manifests: auto-detected by `load_dataset`, `cxraug data inspect` and `read_manifest`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinput.corpus import gray, write_rows
from cxraug.cli import main
from cxraug.data.formats import Columns, ManifestFormat, get_format, register_format, unregister_format
from cxraug.data.manifests import FORMATS, ManifestSpec, detect_format, read_manifest
from cxraug.data.source import DataConfig, load_dataset
from cxraug.errors import ConfigError

BUILT_IN = ("auto", "csv", "chexpert", "nih", "mimic", "hannover")
TOY_HEADER = ["img", "dx", "pid", "proj", "age"]
TOY_ROWS = [
    ["scan-001", "pneumonia", "P1", "PA", "54"],
    ["scan-002", "pneumonia+effusion", "P1", "AP", "54"],
    ["scan-003", "normal", "P2", "PA", "61"],
    ["scan-004", "effusion", "P3", "LAT", "47"],  # a lateral view: left out by the default view filter
    ["scan-005", "normal", "", "AP", "70"],  # no patient id: the format reads it from the file name
]


@pytest.fixture
def toyhospital():
    """A made-up hospital export: semicolon-separated, findings joined by '+', images filed per patient, and
    patient ids also written into file names ('P9_scan.png'). Unregistered afterwards."""

    @register_format
    class ToyHospital(ManifestFormat):
        """Toy hospital export (no paper: a fixture)."""

        name = "toyhospital"
        columns = Columns(path_column="img", label_column="dx", patient_column="pid", view_column="proj")
        label_separator = "+"

        def detect(self, columns: Sequence[str], path: Path) -> bool:
            return {"img", "dx", "pid"} <= set(columns)

        def row_path(self, row: Mapping[str, str], path_column: str | None, path_template: str | None) -> str:
            if path_template:  # a template the user gives still wins
                return super().row_path(row, path_column, path_template)
            folder = row["pid"].strip() or "unfiled"
            return f"scans/{folder}/{row[path_column].strip()}.png"

        def patient_from_path(self, rel: str, path: Path) -> str:
            return path.stem.split("_")[0] if "_" in path.stem else ""

    yield ToyHospital
    unregister_format("toyhospital")


def _toy_manifest(tmp_path: Path) -> Path:
    for i, (img, _dx, pid, _proj, _age) in enumerate(TOY_ROWS):
        dest = tmp_path / "scans" / (pid or "unfiled") / f"{img}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray(32, i)).save(dest)
    return write_rows(tmp_path / "export.csv", TOY_HEADER, TOY_ROWS, delimiter=";")


def test_a_format_added_from_a_test_is_read_through_every_user_path(toyhospital, tmp_path, capsys):
    csv_ = _toy_manifest(tmp_path)
    assert FORMATS[0] == "auto" and "toyhospital" in FORMATS and list(FORMATS)[-1] == "toyhospital"
    assert detect_format(TOY_HEADER) == "toyhospital"

    c = read_manifest(csv_)  # auto-detected
    assert c.class_names == ["effusion", "normal", "pneumonia"] and c.multilabel  # '+' splits findings
    assert [s.labels.tolist() for s in c.samples] == [[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]]
    assert [s.patient_id for s in c.samples] == ["P1", "P1", "P2", "scan-005"]  # the last from its file name
    assert c.unknown_patients == 1 and c.views == {"pa": 2, "ap": 2, "lateral": 1}
    assert all(Path(s.path).is_file() for s in c.samples)

    ds = load_dataset(DataConfig(path=str(csv_), size=32), progress=False)  # what `cxraug train` reads
    assert ds.class_names == ["effusion", "normal", "pneumonia"] and len(ds) == 4
    assert ds.counts() == {"effusion": 1, "normal": 2, "pneumonia": 2}
    assert sorted(set(ds.patient_ids)) == ["P1", "P2", "scan-005"]

    for flags in ([], ["--format", "toyhospital"]):
        assert main(["data", "inspect", str(csv_), "--json", "-q", *flags]) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["n_images"] == 4 and rep["n_patients"] == 3 and rep["multilabel"]
        assert rep["counts"] == {"effusion": 1, "normal": 2, "pneumonia": 2}
    assert main(["data", "inspect", str(csv_), "--json", "-q", "--view", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 5


def test_a_toy_format_keeps_the_readers_one_line_errors(toyhospital, tmp_path, capsys):
    bad = write_rows(tmp_path / "broken.csv", ["img", "pid"], [["scan-001", "P1"]], delimiter=";")
    assert main(["data", "inspect", str(bad), "--format", "toyhospital", "-q"]) == 2
    err = capsys.readouterr().err
    assert "broken.csv: missing column(s) ['proj', 'dx']; has ['img', 'pid']" in err and err.count("\n") == 1
    # the user's columns still win over the format's defaults
    csv_ = _toy_manifest(tmp_path)
    c = read_manifest(csv_, ManifestSpec(format="toyhospital", label="cxr", view="all"))
    assert c.class_names == ["cxr"] and len(c) == 5


def test_the_registry_is_back_to_the_built_in_formats():
    """Runs after the toy tests: their fixture unregistered the toy format."""
    assert FORMATS == BUILT_IN and tuple(FORMATS) == BUILT_IN
    assert detect_format(TOY_HEADER) == "csv"
    with pytest.raises(ConfigError, match="manifest format must be one of auto, csv, chexpert"):
        ManifestSpec(format="toyhospital").validate()
    with pytest.raises(ConfigError, match="manifest format must be one of"):
        get_format("toyhospital")


def test_the_registry_refuses_clashes():
    class Clash(ManifestFormat):
        name = "nih"

        def detect(self, columns: Sequence[str], path: Path) -> bool:
            return False

    with pytest.raises(ValueError, match="'nih' is already registered"):
        register_format(Clash)
    for bad in ("auto", "Has Space", ""):
        Clash.name = bad
        with pytest.raises(ValueError, match="lower-case name"):
            register_format(Clash)
    Clash.name, Clash.fallback = "second_fallback", True
    with pytest.raises(ValueError, match="only one manifest format may be the fallback"):
        register_format(Clash)
    with pytest.raises(KeyError):
        unregister_format("second_fallback")
    assert FORMATS == BUILT_IN


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (["Path", "Sex", "Frontal/Lateral", "AP/PA", "Edema"], "chexpert"),
        (["Image Index", "Finding Labels", "Patient ID", "View Position"], "nih"),
        (["dicom_id", "subject_id", "study_id", "ViewPosition"], "mimic"),
        (["patient_id", "image_id", "projection", "sex"], "hannover"),
        (["filename", "diagnosis"], "csv"),
        # a header that fits two formats goes to the one registered first, as before the registry
        (["Path", "Frontal/Lateral", "dicom_id", "subject_id", "study_id"], "chexpert"),
    ],
)
def test_auto_detection_of_the_built_in_formats(header, name):
    assert detect_format(header) == name


def test_each_built_in_format_cites_its_dataset():
    cites = {"chexpert": "Irvin et al., 2019", "nih": "Wang et al., 2017", "mimic": "Johnson et al., 2019",
             "hannover": "Winther et al., 2020"}  # fmt: skip
    for name, cite in cites.items():
        doc = " ".join((type(get_format(name)).__doc__ or "").split())
        assert cite in doc, (name, doc[:80])
    assert re.search(r"fallback", type(get_format("csv")).__doc__ or "")


def test_label_policy_lives_on_the_format():
    chexpert = get_format("chexpert")
    assert [chexpert.hot(v, 1.0) for v in ("1.0", "0", "", "-1.0")] == [1.0, 0.0, 0.0, 1.0]
    assert chexpert.hot("-1", 0.0) == 0.0 and np.isnan(chexpert.hot("-1", np.nan)) and np.isnan(chexpert.hot("nan", 1))
    with pytest.raises(ValueError):
        chexpert.hot("yes", 1.0)
    assert get_format("nih").label_separator == "|"
