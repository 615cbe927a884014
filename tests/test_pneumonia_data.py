"""The Kermany pneumonia manifest through the product's own paths: no patient crosses train/val/test (issue 31).

Kermany's patients often have several radiographs, and 736 of its 1,250 pneumonia patients have both a viral and a
bacterial one: a split by image would put the same child in training and test. The manifest is read as `cxraug data
split` and the headline study (benchmarks/study-pneumonia.yaml) read it (its ``patient_id`` column, the study's
``classes: [viral, bacterial]``), and split by the function both call, with the study's own fractions and seed.
Without decoding an image (the split depends on labels and patient ids only), so it takes a second; skips when
../shared/data/pneumonia-kermany is absent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from conftest import shared
from cxraug.classify.study import load_study_config
from cxraug.data.manifests import ManifestSpec
from cxraug.data.source import open_source
from cxraug.data.splits import check_patient_disjoint, patient_split

ROOT = Path(__file__).resolve().parents[1]


def _manifest(root: Path) -> dict[str, tuple[str, str]]:
    """path (resolved) -> (label, patient_id), read independently of the product."""
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        return {str((root / r["path"]).resolve()): (r["label"], r["patient_id"]) for r in csv.DictReader(f)}


def _check(coll, truth: dict, fractions: tuple, seed: int) -> dict[str, set[str]]:
    labels = np.stack([s.labels for s in coll.samples])
    pids = [s.patient_id for s in coll.samples]
    sp = patient_split(labels, pids, fractions=fractions, seed=seed, sources=[s.source for s in coll.samples],
                       paths=[s.path for s in coll.samples])  # fmt: skip
    check_patient_disjoint(pids, sp)  # the product's own guard, and the independent check below
    where: dict[str, set[str]] = {}
    for name, idx in sp.items():
        for i in idx:
            smp = coll.samples[i]
            label, pid = truth[str(Path(smp.path).resolve())]
            assert (coll.class_names[int(np.argmax(smp.labels))], smp.patient_id) == (label, pid), smp.path
            where.setdefault(pid, set()).add(name)
    crossing = {p: s for p, s in where.items() if len(s) > 1}
    assert not crossing, f"{len(crossing)} patients in two splits, e.g. {next(iter(crossing.items()))}"
    assert sum(len(v) for v in sp.values()) == len(coll)  # every image once
    return where


def test_data_split_keeps_every_patient_in_one_split():
    root = shared("pneumonia-kermany")
    truth = _manifest(root)
    coll = open_source(str(root / "manifest.csv"), manifest=ManifestSpec(patient_column="patient_id"))
    assert coll.class_names == ["bacterial", "normal", "viral"] and len(coll) == len(truth)
    where = _check(coll, truth, (0.7, 0.15, 0.15), 0)  # `cxraug data split`'s defaults
    assert len(where) == len({pid for _, pid in truth.values()})


def test_headline_study_split_is_patient_level(monkeypatch):
    root = shared("pneumonia-kermany")
    truth = _manifest(root)
    monkeypatch.chdir(ROOT)  # the config's paths are relative to the repository, as `cxraug benchmark` reads them
    cfg = load_study_config(ROOT / "benchmarks" / "study-pneumonia.yaml")
    (src,) = cfg.sources
    coll = open_source(src.path, manifest=src.manifest)
    assert coll.class_names == ["bacterial", "viral"] and coll.counts() == {"bacterial": 2091, "viral": 1139}
    assert coll.unknown_patients == 0  # every id from the manifest: patient-level splits, clustered DeLong
    _check(coll, truth, tuple(cfg.split), cfg.split_seed)
