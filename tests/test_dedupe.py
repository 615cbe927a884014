"""Issue 30: leak-proof duplicate detection. The same radiograph is found when it was cropped, padded, rescaled,
labelled, re-windowed, recompressed, rotated or flipped (copies of real radiographs from ../shared/data made here
with cxraug.data.copies); different radiographs (other patients, one patient's other days) are not called the same,
where the 64-bit pHash screen (<= 4 bits) fails both ways; and the detector is used where leakage matters:
``data dedupe``, ``data split --dedupe``, ``data inspect``, the study's screens and the generator check."""

from __future__ import annotations

import collections
import csv
import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared, snapshot
from cxraug.cli import main
from cxraug.data import dedupe
from cxraug.data.copies import TRANSFORMS, make_copy
from cxraug.data.stats import fingerprints

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "dedupe_accuracy.py"


def _bench():
    spec = importlib.util.spec_from_file_location("dedupe_accuracy", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _u8(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.unpackbits(a ^ b, axis=1).sum(1)


# ----------------------------------------------------------------------------------------------- real radiographs
@pytest.mark.shared_data
def test_copies_of_real_radiographs_are_found_where_phash_misses_them():
    """Twelve real radiographs (covid-cxnet, Kermany), each made into a copy by every transform alone and by a random
    combination (108 copies), searched for among 72 images: the detector finds >= 99 % (every one here); the pHash
    screen finds far fewer (crops and borders move every coefficient)."""
    rng = np.random.default_rng(7)
    cx = sorted(shared("covid-cxnet").glob("*.png"))
    km = sorted(shared("pneumonia-kermany").rglob("*.png"))
    picks = [cx[i] for i in rng.choice(len(cx), 36, replace=False)] + [km[i] for i in rng.choice(len(km), 36, replace=False)]
    index = [_u8(p) for p in picks]
    sources = list(range(0, 6)) + list(range(36, 42))  # six of each collection; the other 60 are distractors
    kinds = [*TRANSFORMS, "combined"]
    copies, truth = [], []
    for kind in kinds:
        for n, k in enumerate(sources):
            copies.append(make_copy(index[k], kind, 1000 * n + len(copies)))
            truth.append(k)
    found = {(m.i, m.j) for m in dedupe.find_duplicates(dedupe.signatures(copies), dedupe.signatures(index, flipped=False))}
    hit = np.array([(q, k) in found for q, k in enumerate(truth)])
    phash_hit = _bits(fingerprints(copies), fingerprints(index)[truth]) <= 4
    assert hit.mean() >= 0.99, [(kinds[q // len(sources)], str(picks[truth[q]].name)) for q in np.flatnonzero(~hit)]
    per_kind = hit.reshape(len(kinds), -1).mean(1)
    assert per_kind.min() >= 0.9, dict(zip(kinds, per_kind))
    assert phash_hit.mean() < 0.75  # the old screen: most crops, borders, rescalings and flips slip through


@pytest.mark.shared_data
def test_different_radiographs_are_not_called_the_same():
    """About 750 pairs known to be different radiographs: two images of one Kermany child (other visits, less the
    pairs that are one file twice), NIH follow-ups of one patient (64 px: the low-resolution rule), different
    children, and the three pairs of different children the issue found the pHash screen calling duplicates. No
    false positive; the pHash screen flags those three. (The rate, <= 0.1 % asked, is measured on about 19,000
    such pairs by benchmarks/dedupe_accuracy.py, BENCHMARKS.md §3e; this sample keeps the suite fast.)"""
    rng = np.random.default_rng(3)
    km_root = shared("pneumonia-kermany")
    nih_root = shared("nih-64")
    with open(km_root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_patient = collections.defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r["path"])
    same_radiograph = _bench().SAME_RADIOGRAPH  # one file twice with another crop, checked by eye
    same = [(a, b) for v in by_patient.values() for a, b in itertools.combinations(sorted(v), 2)
            if (a, b) not in same_radiograph]  # fmt: skip
    same = [same[i] for i in rng.choice(len(same), 250, replace=False)]
    named = [("normal/IM-0507-0001.png", "viral/person932_virus_1593.png"),
             ("normal/IM-0752-0001.png", "viral/person1230_virus_2081.png"),
             ("viral/person673_virus_1263.png", "bacterial/person955_bacteria_2880.png")]  # fmt: skip
    loaded = sorted({p for ab in same + named for p in ab})
    pid = {r["path"]: r["patient_id"] for r in rows}
    other = []
    while len(other) < 100:
        a, b = rng.choice(len(loaded), 2, replace=False)
        if pid[loaded[a]] != pid[loaded[b]]:
            other.append((loaded[a], loaded[b]))
    km_pairs = [(str(km_root / a), str(km_root / b)) for a, b in same + named + other]
    nih = collections.defaultdict(list)
    for p in sorted(nih_root.rglob("*.png")):
        nih[p.stem.split("_")[0]].append(str(p))
    follow = [ab for v in nih.values() for ab in itertools.combinations(v, 2)]
    follow = [follow[i] for i in rng.choice(len(follow), 400, replace=False)]
    paths = sorted({p for ab in km_pairs + follow for p in ab})
    images = {p: _u8(p) for p in paths}
    pairs = [(a, b) for a, b in km_pairs + follow if not np.array_equal(images[a], images[b])]  # one file twice
    at = {p: k for k, p in enumerate(paths)}
    sig = dedupe.signatures([images[p] for p in paths])
    ev = dedupe.verify_pairs(sig, sig, [(at[a], at[b]) for a, b in pairs])
    wrong = [(Path(a).name, Path(b).name, e.to_dict()) for (a, b), e in zip(pairs, ev) if e.same]
    assert len(pairs) >= 700 and not wrong, wrong
    fp = fingerprints([images[p] for p in paths])
    named_full = [(at[str(km_root / a)], at[str(km_root / b)]) for a, b in named]
    assert (_bits(fp[[i for i, _ in named_full]], fp[[j for _, j in named_full]]) <= 4).all()


# ----------------------------------------------------------------------------------------------- phantoms (offline)
def _phantoms(folder: Path, seeds: range, size: int = 128) -> list[Path]:
    from PIL import Image

    from cxraug.data.phantom import phantom
    from cxraug.data.preprocess import to_uint8

    out = []
    for s in seeds:
        for cls in ("normal", "covid"):
            (folder / cls).mkdir(parents=True, exist_ok=True)
            p = folder / cls / f"p{s:03d}.png"
            Image.fromarray(to_uint8(phantom(cls, size, seed=s))).save(p)
            out.append(p)
    return out


def _cropped_copy(src: Path, dest: Path, k: int) -> None:
    """Cropped by 6-12 % a side, rescaled, with a black bar and a burnt-in label."""
    from PIL import Image

    im = _u8(src)
    h, w = im.shape
    c = im[h // (8 + k % 5) : h - h // 10, w // 12 : w - w // (9 + k % 4)]
    c = cv2.resize(c, (round(c.shape[1] * 1.15), round(c.shape[0] * 1.05)), interpolation=cv2.INTER_CUBIC)
    c = cv2.copyMakeBorder(c, 12, 0, 0, 6, cv2.BORDER_CONSTANT, value=0)
    cv2.putText(c, "COPY", (5, c.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(c).save(dest)


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory):
    """Hospital A (12 phantom patients x 2 classes, 128 px) and hospital B: cropped copies of a third of A's images
    under new names (eight), and eight phantoms of its own."""
    tmp = tmp_path_factory.mktemp("dedupe")
    a = _phantoms(tmp / "a", range(12))
    b_own = _phantoms(tmp / "b", range(100, 104))
    copied = a[::3]  # four normal and four covid images
    for k, p in enumerate(copied):
        _cropped_copy(p, tmp / "b" / p.parent.name / f"copy-{p.name}", k)
    return tmp, a, b_own, copied


def test_cli_dedupe_between_two_folders_and_within_one(hospitals, tmp_path, capsys):
    tmp, a, _b_own, copied = hospitals
    before = snapshot(tmp)
    out = tmp_path / "runs"
    assert main(["data", "dedupe", str(tmp / "b"), str(tmp / "a"), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"{len(copied)} of {len(copied) + 8} images of A have a copy in B")
    (run,) = list(out.glob("dedupe-*"))
    with open(run / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((Path(r["path_a"]).name, Path(r["path_b"]).name) for r in rows) == sorted(
        (f"copy-{p.name}", p.name) for p in copied)  # fmt: skip
    assert all(int(r["inliers"]) >= dedupe.MIN_INLIERS and float(r["correlation"]) > 0.6 for r in rows)
    sheet = cv2.imread(str(run / "pairs.png"))
    assert sheet is not None and sheet.shape[0] > 100
    assert json.loads((run / "summary.json").read_text())["images_a_with_copy"] == len(copied)
    # within one folder: the copies and their originals, under different names (patient ids)
    both = tmp_path / "both"
    shutil.copytree(tmp / "a", both)
    for p in copied:
        shutil.copy(tmp / "b" / p.parent.name / f"copy-{p.name}", both / p.parent.name)
    assert main(["data", "dedupe", str(both), "--out", str(out), "-q"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{len(copied)} duplicate pair(s) within {len(a) + len(copied)} images"), line
    assert snapshot(tmp) == before  # inputs only read


def test_cli_dedupe_bad_input_is_one_line(tmp_path, capsys):
    assert main(["data", "dedupe", str(tmp_path / "missing"), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cxraug: error:") and "missing" in err[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "dedupe", str(empty), "--out", str(tmp_path / "runs")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_data_split_dedupe_joins_the_patients_of_a_copy(hospitals, tmp_path, capsys):
    """A cropped copy filed under another name (another patient id) sits in the split of its original with
    --dedupe; without it the copies that cross into test are reported. (The pHash screen saw none of them.)"""
    tmp, _a, _b, copied = hospitals
    data = tmp_path / "data"
    shutil.copytree(tmp / "a", data)
    for p in copied:
        shutil.copy(tmp / "b" / p.parent.name / f"copy-{p.name}", data / p.parent.name)
    for dd in (True, False):
        out = tmp_path / f"out-{dd}"
        assert main(["data", "split", str(data), "--out", str(out), "-q", "--size", "32", "--seed", "1"]
                    + (["--dedupe"] if dd else [])) == 0  # fmt: skip
        (run,) = list(out.glob("split-*"))
        split_of = {}
        for k in ("train", "val", "test"):
            with open(run / f"{k}.csv", newline="") as f:
                split_of |= {Path(r["path"]).name: k for r in csv.DictReader(f)}
        summary = json.loads((run / "summary.json").read_text())
        assert len(summary["duplicate_pairs"]) == len(copied)
        if dd:
            assert all(split_of[f"copy-{p.name}"] == split_of[p.name] for p in copied)
            assert len(summary["patient_groups_joined"]) == len(copied)
            assert summary["test_near_duplicates_of_train"] == []
        else:
            crossing = sum({split_of[f"copy-{p.name}"], split_of[p.name]} == {"train", "test"} for p in copied)
            assert len(summary["test_near_duplicates_of_train"]) == crossing
    assert "joined before splitting" in capsys.readouterr().out


@pytest.mark.slow
def test_study_drops_cropped_copies_from_external_sets_and_refuses_a_generator_that_saw_them(hospitals, tmp_path):
    """An external set holding cropped copies of training/validation images loses exactly those (counted in
    data.json, which the report's external table shows); a `generator:` trained on hospital A is refused for a
    study whose external set holds cropped copies of its training images: its checkpoint records the detector's
    features, not only pHashes (the pHash check passed it)."""
    from cxraug.classify.study import Source, Study, StudyConfig
    from cxraug.errors import LeakageError
    from cxraug.train import train

    tmp, _a, b_own, copied = hospitals
    base = {"sources": [Source(str(tmp / "a"))], "size": 32, "regimes": [1.0], "seeds": [0], "epochs": 1,
            "protocols": ["real"]}  # fmt: skip
    st = Study(StudyConfig(**base, external_test=[Source(str(tmp / "b"), name="b")]), tmp_path / "s", progress=False)
    st.prepare()
    fit = {Path(st.ds.paths[i]).name for i in np.concatenate([st.split["train"], st.split["val"]])}
    in_fit = sum(p.name in fit for p in copied)
    e = json.loads((st.dir / "data.json").read_text())["external"]["b"]
    assert in_fit > 0 and e["dropped_near_duplicate"] == in_fit
    assert e["n"] == len(b_own) + len(copied) - in_fit and e["n_loaded"] == len(b_own) + len(copied)
    gan = train("dcgan-64", str(tmp / "a"), tmp_path / "gan", progress=False, cls="covid", steps=1, width=8,
                batch_size=4)  # fmt: skip
    ckpt = gan / "checkpoints" / "last.pt"
    from cxraug.families import GeneratorArtifact

    assert len(GeneratorArtifact.load(ckpt).signatures()) == 12  # every training image's features
    own, ext = tmp_path / "own", tmp_path / "copies"  # a study on B's own images; B's copies as its external set
    for p in b_own:
        (own / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, own / p.parent.name / p.name)
    ext.mkdir()
    for p in copied:
        shutil.copy(tmp / "b" / p.parent.name / f"copy-{p.name}", ext / f"copy-{p.parent.name}-{p.name}")
    cfg = StudyConfig(sources=[Source(str(own))], size=32, regimes=[1.0], seeds=[0], epochs=1,
                      protocols=["real", "gan-aug"], generator=str(ckpt),
                      external_test=[Source(str(ext), name="copies", label="covid")])  # fmt: skip
    with pytest.raises(LeakageError, match=r"trained on \d+ image\(s\) of the external set copies"):
        Study(cfg, tmp_path / "s2", progress=False).prepare()


@pytest.mark.shared_data
def test_inspect_no_longer_calls_different_children_near_duplicates(tmp_path, capsys):
    """The issue's three pairs of different Kermany children within 4 pHash bits: `data inspect` reported each as a
    near-duplicate group; their pHash pairs are now verified, and none is the same radiograph."""
    km = shared("pneumonia-kermany")
    named = ["normal/IM-0507-0001.png", "viral/person932_virus_1593.png", "normal/IM-0752-0001.png",
             "viral/person1230_virus_2081.png", "viral/person673_virus_1263.png", "bacterial/person955_bacteria_2880.png"]  # fmt: skip
    manifest = tmp_path / "six.csv"
    manifest.write_text("path,label,patient_id\n" + "".join(f"{p},{p.split('/')[0]},{Path(p).stem}\n" for p in named))
    args = ["data", "inspect", str(manifest), "--root", str(km), "--patient-column", "patient_id",
            "--label-column", "label", "-q"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 6 and report["duplicate_groups"] == []
    assert main(args) == 0
    assert "0 near: pHash distance <= 4 and verified" in capsys.readouterr().out
