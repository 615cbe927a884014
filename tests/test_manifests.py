"""Issue 14: manifests as they ship, on hand-made miniature copies of each release's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinput.corpus import gray, write_rows
from conftest import shared
from cxraug.cli import main
from cxraug.data.manifests import CHEXPERT_LABELS, ManifestSpec, read_manifest
from cxraug.data.readers import read_csv_manifest
from cxraug.errors import ConfigError, CXRAugError


def _img(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray(32, seed)).save(path)


# ------------------------------------------------------------------ CheXpert
CHX_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]


def _chexpert(tmp_path: Path) -> Path:
    rel = "CheXpert-v1.0-small/train/patient0000{}/study1/view{}_{}.jpg"
    rows = []

    def row(p, view, fl, apa, **labels):
        r = [rel.format(p, view, fl.lower()), "Female", "68", fl, apa] + [""] * 14
        for k, v in labels.items():
            r[5 + CHEXPERT_LABELS.index(k.replace("_", " "))] = v
        rows.append(r)
        _img(tmp_path / r[0], len(rows))

    row(1, 1, "Frontal", "AP", Edema="1.0", Pleural_Effusion="-1.0", Support_Devices="1.0")
    row(1, 2, "Lateral", "", Edema="1.0")
    row(2, 1, "Frontal", "PA", No_Finding="1.0")
    row(3, 1, "Frontal", "", Cardiomegaly="-1.0", Edema="0.0")
    return write_rows(tmp_path / "CheXpert-v1.0-small" / "train.csv", CHX_HEADER, rows)


def test_chexpert_as_shipped(tmp_path):
    csv_ = _chexpert(tmp_path)
    c = read_manifest(csv_)  # auto-detected; paths start with the release folder the CSV is in
    assert c.class_names == list(CHEXPERT_LABELS) and "Sex" not in c.class_names and "Age" not in c.class_names
    assert c.multilabel and len(c) == 3  # the lateral view is left out by default (view=frontal)
    assert c.views == {"ap": 1, "lateral": 1, "pa": 1, "frontal": 1} and c.view_filter == "frontal"
    assert [s.patient_id for s in c.samples] == ["patient00001", "patient00002", "patient00003"]
    assert [s.view for s in c.samples] == ["ap", "pa", "frontal"]
    assert all(Path(s.path).is_file() for s in c.samples)
    i_pe, i_cm = CHEXPERT_LABELS.index("Pleural Effusion"), CHEXPERT_LABELS.index("Cardiomegaly")
    first = c.samples[0].labels
    assert first[CHEXPERT_LABELS.index("Edema")] == 1 and first[i_pe] == 1  # U-Ones by default
    zeros = read_manifest(csv_, ManifestSpec(uncertain="zeros"))
    assert zeros.samples[0].labels[i_pe] == 0 and zeros.samples[2].labels[i_cm] == 0
    ign = read_manifest(csv_, ManifestSpec(uncertain="ignore"))
    assert np.isnan(ign.samples[0].labels[i_pe]) and np.isnan(ign.samples[2].labels[i_cm])
    assert ign.samples[1].labels.tolist() == [1.0] + [0.0] * 13  # blank = not mentioned = 0
    lat = read_manifest(csv_, ManifestSpec(format="chexpert", view="lateral"))
    assert len(lat) == 1 and lat.samples[0].view == "lateral"
    assert len(read_manifest(csv_, ManifestSpec(view="all"))) == 4
    assert [s.view for s in read_manifest(csv_, ManifestSpec(view="pa")).samples] == ["pa"]


def test_chexpert_inspect_counts_images_not_positive_labels(tmp_path, capsys):
    """`inspect` reported the number of positive labels (5 here, U-Ones) as the number of images (3)."""
    csv_ = _chexpert(tmp_path)
    assert main(["data", "inspect", str(csv_), "--format", "chexpert", "--json", "-q"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_images"] == 3 and rep["n_patients"] == 3 and sum(rep["counts"].values()) == 5
    assert rep["counts"]["Edema"] == 1 and rep["counts"]["Pleural Effusion"] == 1
    assert rep["views"] == {"ap": 1, "lateral": 1, "pa": 1, "frontal": 1}
    assert main(["data", "inspect", str(csv_), "--uncertain", "zeros", "--json", "-q"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["Pleural Effusion"] == 0 and rep["counts"]["Cardiomegaly"] == 0 and rep["n_images"] == 3
    assert main(["data", "inspect", str(csv_), "-q", "--view", "all"]) == 0
    out = capsys.readouterr().out
    assert "4 readable images, 3 patients, 14 class(es) (multi-label)" in out
    assert "views: ap 1, frontal 1, lateral 1, pa 1   (kept: all)" in out


# ------------------------------------------------------------------ NIH ChestX-ray14
def test_nih_data_entry_as_shipped(tmp_path):
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]  # fmt: skip
    rows = [
        ["00000001_000.png", "Cardiomegaly|Effusion", "0", "1", "58", "M", "PA", "2682", "2749", "0.143", "0.143"],
        ["00000001_001.png", "No Finding", "1", "1", "58", "M", "AP", "2894", "2729", "0.143", "0.143"],
        ["00000002_000.png", "Effusion", "0", "2", "81", "F", "PA", "2500", "2048", "0.168", "0.168"],
    ]
    for i, r in enumerate(rows):
        _img(tmp_path / f"images_00{i % 2 + 1}" / "images" / r[0], i)  # the Kaggle layout: images_00N/images/
    csv_ = write_rows(tmp_path / "Data_Entry_2017.csv", header, rows)
    c = read_manifest(csv_, ManifestSpec(format="nih"))
    assert c.class_names == ["Cardiomegaly", "Effusion", "No Finding"] and c.multilabel
    assert [s.labels.tolist() for s in c.samples] == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    assert [s.patient_id for s in c.samples] == ["1", "1", "2"]
    assert [s.view for s in c.samples] == ["pa", "ap", "pa"]
    assert all(Path(s.path).is_file() for s in c.samples)
    assert c.unknown_patients == 0
    assert len(read_manifest(csv_, ManifestSpec(format="nih", view="pa"))) == 2


# ------------------------------------------------------------------ MIMIC-CXR-JPG
def test_mimic_metadata_joined_with_chexpert_labels(tmp_path):
    meta = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
            "Columns"]  # fmt: skip
    rows = [["d1", "10000032", "50414267", "CHEST (PA AND LAT)", "PA", "3056", "2544"],
            ["d2", "10000032", "50414267", "CHEST (PA AND LAT)", "LATERAL", "3056", "2544"],
            ["d3", "10000764", "57375967", "CHEST (PORTABLE AP)", "AP", "3056", "2544"],
            ["d4", "10000898", "50771383", "CHEST (PA AND LAT)", "PA", "3056", "2544"]]  # fmt: skip
    for i, (d, subj, study, *_r) in enumerate(rows):
        _img(tmp_path / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}" / f"{d}.jpg", i)
    write_rows(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *CHEXPERT_LABELS],
               [["10000032", "50414267"] + ["", "", "", "", "", "1.0"] + [""] * 8,
                ["10000764", "57375967"] + ["1.0"] + [""] * 13])  # fmt: skip  (study 50771383 has no labels)
    csv_ = write_rows(tmp_path / "mimic-cxr-2.0.0-metadata.csv", meta, rows)
    c = read_manifest(csv_)
    assert c.class_names == list(CHEXPERT_LABELS)
    assert [Path(s.path).name for s in c.samples] == ["d1.jpg", "d3.jpg"]  # frontal views with labels
    assert all(Path(s.path).is_file() for s in c.samples)
    assert [s.patient_id for s in c.samples] == ["10000032", "10000764"]
    assert c.samples[0].labels[CHEXPERT_LABELS.index("Edema")] == 1 and c.samples[1].labels[0] == 1
    assert c.views == {"pa": 1, "lateral": 1, "ap": 1}  # of the rows with labels
    assert any("study 50771383 has no labels" in s for s in c.skipped)
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").unlink()
    with pytest.raises(CXRAugError, match="no label columns.*--labels-csv"):
        read_manifest(csv_)
    assert read_manifest(csv_, ManifestSpec(label="cxr")).counts() == {"cxr": 3}  # 4 rows, 3 frontal


# ------------------------------------------------------------------ Hannover
def test_hannover_data_csv_as_shipped(tmp_path):
    header = ["patient_id", "image_id", "sex", "age", "size", "weight", "modality", "projection", "crp_val"]
    rows = [["024e7871", "fff13f3a", "f", "", "", "", "CR", "pa", "3.0"],
            ["04a33bab", "6b5af975", "m", "61", "", "", "CR", "ap", "6.0"],
            ["04a33bab", "c4a0e11a", "m", "61", "", "", "CR", "ap", ""]]  # fmt: skip
    for i, r in enumerate(rows):
        _img(tmp_path / "png" / f"{r[1]}.png", i)
    csv_ = write_rows(tmp_path / "data.csv", header, rows)
    for spec in (ManifestSpec(format="hannover"), ManifestSpec(), ManifestSpec(
            format="csv", path_template="png/{image_id}.png", patient_column="patient_id", view_column="projection",
            label="covid")):  # fmt: skip
        c = read_manifest(csv_, spec)
        assert c.class_names == ["covid"] and c.counts() == {"covid": 3}
        assert c.n_patients == 2 and c.views == {"pa": 1, "ap": 2}
        assert all(Path(s.path).is_file() for s in c.samples)


@pytest.mark.shared_data
def test_shared_hannover_inspect_reports_images_patients_views(capsys):
    """Issue 14's definition of done."""
    csv_ = shared("external/covid-hannover") / "data.csv"
    assert main(["data", "inspect", str(csv_), "--format", "hannover", "-q", "--near-threshold", "0"]) == 0
    out = capsys.readouterr().out
    assert "120 readable images, 31 patients, 1 class(es)" in out
    assert "views: ap 96, pa 24   (kept: frontal)" in out
    assert "unreadable" not in out and "skipped files" not in out


# ------------------------------------------------------------------ generic CSV
def test_generic_csv_with_column_mapping_flags_and_yaml(tmp_path, capsys):
    for i in range(4):
        _img(tmp_path / "imgs" / f"{i}.png", i)
    rows = [[f"imgs/{i}.png", d, s, a] for i, (d, s, a) in
            enumerate([("covid", "s1", "40"), ("normal", "s1", "41"), ("normal", "s2", "0"), ("covid", "s3", "1")])]
    csv_ = write_rows(tmp_path / "m.csv", ["filename", "diagnosis", "subject", "Age"], rows)
    assert main(["data", "inspect", str(csv_), "--label-column", "diagnosis", "--patient-column", "subject",
                 "--json", "-q"]) == 0  # fmt: skip
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"] == {"covid": 2, "normal": 2} and rep["n_patients"] == 3 and rep["views"] == {}
    # Multi-hot columns are found automatically; Age (values 40, 41, 0, 1) is not 1/0/-1, so it is no label.
    write_rows(tmp_path / "mh.csv", ["path", "Edema", "Age"], [[f"imgs/{i}.png", str(i % 2), str(40 + i)]
                                                               for i in range(4)])  # fmt: skip
    assert read_csv_manifest(tmp_path / "mh.csv").class_names == ["Edema"]
    # The same mapping from YAML (data.manifest.*), through the dataset loader.
    from cxraug.config import from_dict, load_yaml
    from cxraug.data.source import DataConfig, load_dataset

    y = load_yaml(f"path: {csv_}\nsize: 32\nmanifest: {{label_column: diagnosis, patient_column: subject}}\n")
    ds = load_dataset(from_dict(DataConfig, y), progress=False)
    assert ds.counts() == {"covid": 2, "normal": 2} and sorted(set(ds.patient_ids)) == ["s1", "s2", "s3"]


def test_no_path_or_label_column_is_one_clear_error(tmp_path, capsys):
    csv_ = write_rows(tmp_path / "m.csv", ["image_ref", "dx"], [["a.png", "covid"]])
    assert main(["data", "inspect", str(csv_), "-q"]) == 2
    err = capsys.readouterr().err
    assert "m.csv: no path column; name it with --path-column" in err and err.count("\n") == 1
    csv2 = write_rows(tmp_path / "n.csv", ["path", "Sex"], [["a.png", "M"]])
    assert main(["data", "inspect", str(csv2), "-q"]) == 2
    assert "n.csv: no label column found" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="view must be one of"):
        read_manifest(csv_, ManifestSpec(view="oblique"))


# ------------------------------------------------------------------ encodings, delimiters, bad rows
def _four(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / f"{i}.png", i)


def test_latin1_csv_is_read_with_a_warning(tmp_path, capsys):
    d = tmp_path / "d"
    _img(d / "café.png", 1)  # stored under its UTF-8 name, listed in a Latin-1 CSV
    _img(d / "b.png", 2)
    csv_ = write_rows(d / "l.csv", ["path", "label"], [["café.png", "neumonía"], ["b.png", "normal"]],
                      encoding="latin-1")  # fmt: skip
    c = read_manifest(csv_)
    assert c.class_names == ["neumonía", "normal"]
    assert Path(c.samples[0].path).name == "café.png" and Path(c.samples[0].path).is_file()
    assert any("l.csv: not valid UTF-8; read as cp1252" in p for p in c.problems)
    assert main(["data", "prepare", str(csv_), "--size", "32", "--out", str(tmp_path / "o"), "-q"]) == 0
    assert "warning: " in (err := capsys.readouterr().err) and "l.csv: not valid UTF-8; read as cp1252" in err


@pytest.mark.parametrize("name,delim", [("s.csv", ";"), ("t.tsv", "\t"), ("tab.csv", "\t")])
def test_delimiter_is_sniffed(tmp_path, name, delim):
    _four(tmp_path)
    csv_ = write_rows(tmp_path / name, ["path", "label", "patient"],
                      [[f"{i}.png", "covid" if i < 2 else "normal", f"p{i}"] for i in range(4)], delimiter=delim)
    c = read_manifest(csv_)
    assert c.counts() == {"covid": 2, "normal": 2} and c.n_patients == 4


def test_short_and_long_rows_are_reported_by_line(tmp_path):
    _four(tmp_path)
    (tmp_path / "r.csv").write_text("path,label,patient\n0.png,covid,p0\n1.png,covid\n2.png,normal,p2,extra\n"
                                    "\n3.png,normal,p3\n")  # fmt: skip
    c = read_manifest(tmp_path / "r.csv")
    assert len(c) == 2
    assert any(s.endswith("r.csv:3: 2 field(s), fewer than the header's 3; row skipped") for s in c.skipped)
    assert any(s.endswith("r.csv:4: 4 field(s), more than the header's 3; row skipped") for s in c.skipped)


def test_an_unclosed_quote_is_one_error_naming_its_line_not_a_field_that_swallows_the_rest(tmp_path, capsys):
    """Row 3's comment opens a quote that never closes: a lenient CSV reader takes every later row into that
    one field and keeps 2 of 4 rows without a word."""
    _four(tmp_path)
    (tmp_path / "q.csv").write_text('path,label,patient,comment\n0.png,covid,p0,ok\n1.png,covid,p1,"portable AP, '
                                    'rotated\n2.png,normal,p2,ok\n3.png,normal,p3,ok\n')  # fmt: skip
    with pytest.raises(CXRAugError, match=r"q\.csv:3: not a readable CSV from this line on .*unclosed quote"):
        read_manifest(tmp_path / "q.csv")
    assert main(["data", "inspect", str(tmp_path / "q.csv"), "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "q.csv:3" in err[0], err


def test_missing_patient_ids_written_as_nan_are_unknown_patients_not_one_patient(tmp_path):
    """pandas' astype(str) writes a missing id as "nan", R as "NA": those rows are unknown patients (each image
    its own, counted), not one patient "nan" whose images a split keeps together."""
    for i in range(6):
        _img(tmp_path / f"{i}.png", i)
    ids = ["p0", "nan", "NaN", "NA", "", "p0"]
    csv_ = write_rows(tmp_path / "m.csv", ["path", "label", "patient_id"],
                      [[f"{i}.png", "covid" if i % 2 else "normal", pid] for i, pid in enumerate(ids)])  # fmt: skip
    c = read_manifest(csv_)
    assert c.unknown_patients == 4 and c.n_patients == 5  # p0, and the four unknown images one each
    assert not {"nan", "NaN", "NA"} & {s.patient_id for s in c.samples}


def test_labels_stripped_and_case_normalised_with_a_warning(tmp_path):
    _four(tmp_path)
    csv_ = write_rows(tmp_path / "m.csv", ["path", "label"],
                      [["0.png", " normal"], ["1.png", "Normal"], ["2.png", "normal"], ["3.png", "COVID"]])
    c = read_manifest(csv_)
    assert c.class_names == ["COVID", "normal"] and c.counts() == {"COVID": 1, "normal": 3}
    (w,) = c.problems
    assert "' normal', 'Normal', 'normal' differ only in spaces/case; taken as one class 'normal'" in w


def test_same_file_under_two_labels_is_left_out_and_reported(tmp_path):
    _four(tmp_path)
    csv_ = write_rows(tmp_path / "m.csv", ["path", "label"],
                      [["0.png", "covid"], ["1.png", "normal"], ["./0.png", "normal"], ["2.png", "normal"],
                       ["2.png", "normal"]])  # fmt: skip
    c = read_manifest(csv_)
    assert sorted(Path(s.path).name for s in c.samples) == ["1.png", "2.png"]
    (sk,) = c.skipped
    assert "0.png: the same file under different labels (line 2: covid; line 4: normal); left out" in sk
    assert any("2.png is listed 2 times (lines 5, 6); kept once" in p for p in c.problems)


def test_train_takes_the_manifest_flags(tmp_path):
    """The column mapping reaches `train` too (and its saved config, so `--config run/config.yaml` repeats it)."""
    for i in range(4):
        _img(tmp_path / "data" / "png" / f"id{i}.png", i)
    csv_ = write_rows(tmp_path / "data" / "meta.csv", ["image_id", "pid", "sex"],
                      [[f"id{i}", f"p{i // 2}", "f"] for i in range(4)])  # fmt: skip
    out = tmp_path / "runs"
    assert main(["train", "--preset", "dcgan-64", "--data", str(csv_), "--path-template", "png/{image_id}.png",
                 "--patient-column", "pid", "--label", "covid", "--steps", "1", "--batch-size", "2",
                 "--set", "width=8", "--out", str(out), "-q"]) == 0  # fmt: skip
    from cxraug.config import load_yaml

    (cfg,) = out.glob("train-*/config.yaml")
    m = load_yaml(cfg.read_text())["data"]["manifest"]
    assert m["path_template"] == "png/{image_id}.png" and m["patient_column"] == "pid" and m["label"] == "covid"


def test_ignored_labels_survive_a_split_csv(tmp_path):
    """`data split` writes an ignored (U-Ignore) label as `nan`; reading that CSV back keeps it ignored."""
    csv_ = _chexpert(tmp_path / "d")
    out = tmp_path / "runs"
    assert main(["data", "split", str(csv_), "--uncertain", "ignore", "--fractions", "1,0,0", "--size", "32",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    (train,) = out.glob("split-*/train.csv")
    back = read_manifest(train)
    assert back.class_names == list(CHEXPERT_LABELS) and len(back) == 3
    i_pe = CHEXPERT_LABELS.index("Pleural Effusion")
    first = next(s for s in back.samples if "patient00001" in s.path)
    assert np.isnan(first.labels[i_pe]) and first.labels[CHEXPERT_LABELS.index("Edema")] == 1
    assert first.patient_id == "patient00001"


# ------------------------------------------------------------------ the same flags on every command that reads data
MAP = ["--path-template", "img/{ref}.png", "--label-column", "dx", "--patient-column", "subj", "--view-column", "proj"]


def _odd_manifest(root: Path, n: dict[str, int], laterals: int = 2) -> tuple[Path, dict[str, list[Path]]]:
    """A CSV nothing reads without its mapping: images named by a ``ref`` column, classes in ``dx``, patients in
    ``subj``, views in ``proj`` (``laterals`` lateral rows per class, left out by the default view filter).
    Returns the CSV and, per class, the frontal images any reader must keep (written here, independently)."""
    rows, keep, k = [], {}, 0
    for cls, m in n.items():
        keep[cls] = []
        for i in range(m + laterals):
            ref = f"{cls}{i}"
            _img(root / "img" / f"{ref}.png", k)
            k += 1
            rows.append([ref, cls, f"{cls}-p{i // 2}", "LATERAL" if i >= m else ("PA" if i % 2 else "AP"), "55"])
            if i < m:
                keep[cls].append(root / "img" / f"{ref}.png")
    return write_rows(root / "list.csv", ["ref", "dx", "subj", "proj", "age"], rows), keep


def test_encoder_and_evaluate_take_the_manifest_flags(tmp_path, capsys, monkeypatch):
    """`encoder train --data` and `evaluate --real/--heldout` read a mapped CSV as exactly the frontal images a
    folder-per-class copy of them holds (compared by the bytes of the decoded images, an independent route)."""
    import shutil

    from cxraug.data.source import DataConfig, load_dataset
    from cxraug.errors import CXRAugError
    from cxraug.metrics.encoder import image_fingerprints, load_encoder

    csv_, keep = _odd_manifest(tmp_path / "d", {"normal": 6, "covid": 4})
    folder = tmp_path / "same"  # the frontal images, copied into a folder-per-class tree
    for cls, files in keep.items():
        (folder / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, folder / cls / f.name)
    ref = load_dataset(DataConfig(path=str(folder), size=32), progress=False)
    want = sorted(image_fingerprints(np.asarray(ref.images)))
    want_covid = sorted(image_fingerprints(np.asarray(ref.only_class("covid").images)))
    assert len(want) == 10 and len(want_covid) == 4
    out = tmp_path / "runs"
    assert main(["encoder", "train", "--data", str(csv_), "--size", "32", "--steps", "1", "--out", str(out), "-q"]) == 2
    assert "list.csv: no path column" in capsys.readouterr().err  # without the mapping: one line, nothing written
    assert main(["encoder", "train", "--data", str(csv_), *MAP, "--size", "32", "--steps", "1", "--out", str(out),
                 "-q"]) == 0  # fmt: skip
    (enc,) = out.glob("encoder-*/encoder.safetensors")
    assert sorted(load_encoder(enc).trained_on) == want

    class Seen(CXRAugError):
        pass

    seen = {}

    def capture(real, fake, *args, **kw):  # the metrics themselves are tested elsewhere
        seen.update(real=real, heldout=kw["heldout_u8"], patients=kw["patient_ids"])
        raise Seen("captured")

    monkeypatch.setattr("cxraug.metrics.evaluate_images", capture)
    assert main(["evaluate", "--real", str(csv_), "--heldout", str(csv_), *MAP, "--class", "covid", "--fake",
                 str(folder), "--size", "32", "--n", "20", "--k", "2", "--out", str(out), "-q"]) == 2  # fmt: skip
    assert "captured" in capsys.readouterr().err
    assert sorted(image_fingerprints(seen["real"])) == sorted(image_fingerprints(seen["heldout"])) == want_covid
    assert sorted(seen["patients"]) == ["covid-p0", "covid-p0", "covid-p1", "covid-p1"]


def test_balance_takes_the_manifest_flags(tmp_path, capsys):
    csv_, keep = _odd_manifest(tmp_path / "d", {"normal": 6, "covid": 3})
    out = tmp_path / "runs"
    assert main(["train", "--preset", "dcgan-64", "--data", str(csv_), *MAP, "--class", "covid", "--size", "32",
                 "--steps", "1", "--batch-size", "2", "--set", "width=8", "--out", str(out), "-q"]) == 0  # fmt: skip
    ckpt = next(out.glob("train-*/checkpoints/last.pt"))
    capsys.readouterr()
    assert main(["balance", "--data", str(csv_), "--generator", str(ckpt), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "list.csv: no path column" in err and err.count("\n") == 1
    assert main(["balance", "--data", str(csv_), *MAP, "--generator", str(ckpt), "--out", str(out), "-q"]) == 0
    (run,) = out.glob("balance-*")
    bal = json.loads((run / "balance.json").read_text())
    assert bal["before"] == {"covid": 3, "normal": 6} and bal["added"] == {"covid": 3}
    import csv

    rows = list(csv.DictReader((run / "manifest.csv").open()))
    real = {Path(r["path"]).resolve() for r in rows if r["synthetic"] == "false"}
    assert real == {p.resolve() for files in keep.values() for p in files}  # the laterals left out
    assert {r["patient_id"] for r in rows if r["synthetic"] == "false"} == {
        "normal-p0", "normal-p1", "normal-p2", "covid-p0", "covid-p1"}  # fmt: skip


def test_study_sources_and_external_test_as_manifests(tmp_path, capsys, monkeypatch):
    """A study reads its sources and external test set through a `manifest:` block (or, on the command line,
    `benchmark --data CSV` with the flags); the mapping is kept in the study's config.yaml."""
    import yaml

    from cxraug.classify.study import Study, load_study_config

    csv_, keep = _odd_manifest(tmp_path / "d", {"normal": 12, "covid": 8})
    ext = tmp_path / "hannover"
    for i in range(3):
        _img(ext / "png" / f"x{i}.png", 50 + i)
    write_rows(ext / "data.csv", ["patient_id", "image_id", "projection"],
               [["h1", "x0", "pa"], ["h2", "x1", "ap"], ["h2", "x2", "lateral"]])  # fmt: skip
    mapping = {"path_template": "img/{ref}.png", "label_column": "dx", "patient_column": "subj", "view_column": "proj"}
    study = {"sources": [{"path": str(csv_), "manifest": mapping}], "minority": "covid", "size": 32,
             "external_test": [{"path": str(ext / "data.csv"), "name": "ext", "manifest": {"format": "hannover"}}],
             "protocols": ["real"], "regimes": [1.0], "seeds": [0], "epochs": 1, "batch_size": 16, "bootstrap": 20}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    st = Study(load_study_config(tmp_path / "s.yaml"), tmp_path / "study", progress=False)
    st.prepare()
    assert st.ds.counts() == {c: len(f) for c, f in keep.items()}
    assert {Path(p).resolve() for p in st.ds.paths} == {p.resolve() for f in keep.values() for p in f}
    assert set(st.ds.patient_ids) == {f"{c}-p{i}" for c, m in (("normal", 12), ("covid", 8)) for i in range(m // 2)}
    assert st.external["ext"]["n_loaded"] == 2 and st.external["ext"]["counts"] == {"covid": 2, "normal": 0}
    # the command line: --data and the manifest flags, and the output guard over the rows' folder
    monkeypatch.setattr("cxraug.classify.explain.umap_embedding",
                        lambda model, images, seed=0: np.stack([images.mean((1, 2)), images.std((1, 2))], 1))
    sets = ["--set", "size=32", "--set", "protocols=[real]", "--set", "regimes=[1.0]", "--set", "seeds=[0]",
            "--set", "epochs=1", "--set", "batch_size=16", "--set", "bootstrap=20"]  # fmt: skip
    assert main(["benchmark", "--data", str(csv_), *MAP, *sets, "--out", str(tmp_path / "d" / "img" / "r"), "-q"]) == 2
    assert "is inside the input folder" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(csv_), *MAP, *sets, "--out", str(tmp_path / "out"), "-q"]) == 0
    (run,) = (tmp_path / "out").glob("study-*")
    saved = yaml.safe_load((run / "config.yaml").read_text())["sources"]
    assert saved[0]["path"] == str(csv_) and saved[0]["manifest"]["path_template"] == "img/{ref}.png"
    assert json.loads((run / "data.json").read_text())["sources"][0]["manifest"]["label_column"] == "dx"


@pytest.mark.shared_data
def test_shared_hannover_as_a_study_source_with_a_manifest_block():
    """The real Hannover data.csv through a study source's `manifest:` (PA views only), against the rows of the
    CSV counted here with the csv module."""
    import csv

    from cxraug.classify.assemble import load_labelled
    from cxraug.classify.config import Source

    csv_ = shared("external/covid-hannover") / "data.csv"
    rows = [r for r in csv.DictReader(csv_.open(encoding="utf-8-sig")) if r["projection"].strip().lower() == "pa"]
    src = Source(str(csv_), label="covid", name="hannover-pa", manifest=ManifestSpec(format="hannover", view="pa"))
    ds, origin = load_labelled([src], 32, class_names=["covid", "normal"], progress=False)
    assert len(ds) == len(rows) > 0 and ds.counts() == {"covid": len(rows), "normal": 0}
    assert sorted(set(ds.patient_ids)) == sorted({r["patient_id"] for r in rows}) and set(origin) == {"hannover-pa"}


def test_bad_study_sources_are_one_line_before_any_study_folder(tmp_path, capsys):
    """A study source's manifest block is checked up front and named: a bad value, an unknown key (it said
    only "does not fit ManifestSpec | None"), a missing file (the study folder was made, then an unrelated error)."""
    csv_, _ = _odd_manifest(tmp_path / "d", {"normal": 2, "covid": 2}, laterals=0)
    cases = [
        ({"path": str(csv_), "manifest": {"view": "oblique"}},
         f"{csv_}: manifest view must be one of frontal, pa, ap, lateral, all; got 'oblique'"),
        ({"path": str(csv_), "manifest": {"colour": "red"}}, "config.sources[].manifest: unknown key(s) ['colour']"),
        ({"path": str(tmp_path / "nope.csv")}, f"{tmp_path / 'nope.csv'}: no such file or folder"),
        ({"path": str(csv_)}, "list.csv: no path column"),
    ]  # fmt: skip
    import yaml

    for source, expected in cases:
        (tmp_path / "s.yaml").write_text(yaml.safe_dump({"sources": [source]}))
        assert main(["benchmark", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "-q"]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
        assert not (tmp_path / "o").exists()


def test_manifest_classes_select_rows_of_a_three_class_manifest(tmp_path):
    """`classes: [viral, bacterial]` reads only those rows of a normal/bacterial/viral manifest (the pneumonia study's
    two-class question, issue 31), through the study's own loader; a class the label column lacks is one line."""
    from cxraug.classify.assemble import load_sources
    from cxraug.classify.config import Source, StudyConfig
    from cxraug.errors import ConfigError, CXRAugError

    labels = ["normal", "bacterial", "viral", "normal", "viral", "bacterial", "viral"]
    for i in range(len(labels)):
        _img(tmp_path / "img" / f"{i}.png", i)
    csv_ = write_rows(tmp_path / "manifest.csv", ["path", "label", "patient_id"],
                      [[f"img/{i}.png", lab, f"p{i // 2}"] for i, lab in enumerate(labels)])  # fmt: skip
    spec = ManifestSpec(label_column="label", patient_column="patient_id", classes=["viral", "bacterial"])
    c = read_manifest(csv_, spec)
    assert c.class_names == ["bacterial", "viral"] and c.counts() == {"bacterial": 2, "viral": 3}
    assert sorted(Path(s.path).name for s in c.samples) == ["1.png", "2.png", "4.png", "5.png", "6.png"]
    ds = load_sources(StudyConfig(sources=[Source(str(csv_), manifest=spec)], size=32, minority="viral"),
                      progress=False)  # fmt: skip
    assert ds.class_names == ["bacterial", "viral"] and len(ds) == 5
    with pytest.raises(CXRAugError, match="manifest classes \\['covid'\\] are not in its label column"):
        read_manifest(csv_, ManifestSpec(label_column="label", classes=["covid", "viral"]))
    with pytest.raises(ConfigError, match="manifest classes"):
        ManifestSpec(label="viral", classes=["viral"]).validate()
