"""Metric sanity on real CXRs (issue 13; shared data, skipped without it).

The offline encoder (the texture objective, trained on covid-cxnet patients disjoint from the FID
reference) must rank, at 64 px, with non-overlapping 95 % bootstrap CIs:
    real-vs-real (another third of covid-cxnet, by patient)
  < real-vs-blurred (Gaussian sigma 3 px at 256 px) and real-vs-downsampled (8x down and back at 256 px)
  < real-vs-other-class (NIH "No Finding" normals: another class and source).
The degradations are written here independently of the library (OpenCV at 256 px, then 64 px).
The encoder is the one `--features auto` trains (`auto_encoder_path`: `train_encoder`'s defaults);
`benchmarks/metric_sanity.py` prints the same table with its CIs (BENCHMARKS.md section 7).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import shared

pytestmark = pytest.mark.shared_data


def _to64(u8: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in u8])


@pytest.fixture(scope="session")
def sanity_fids(tmp_path_factory):
    # a session fixture runs before conftest's per-test cache isolation: point it at the same session cache
    # (else the dataset cache and auto's encoder would be written to ~/.cache/cxraug)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CXRAUG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return _sanity_fids()


def _sanity_fids():
    from cxraug.data.source import DataConfig, load_dataset
    from cxraug.data.splits import patient_split
    from cxraug.metrics.encoder import image_fingerprints
    from cxraug.metrics.features import auto_encoder_path, encoder_extractor, extract
    from cxraug.metrics.fid import fid_bootstrap, fid_from_features

    covid, nih = shared("covid-cxnet"), shared("nih-64")
    ds = load_dataset(DataConfig(path=str(covid), size=256), progress=False)
    imgs = np.asarray(ds.images)
    sp = patient_split(np.zeros(len(imgs), int), ds.patient_ids, fractions=(1 / 3, 1 / 3, 1 / 3), seed=0)
    e, r, h = (imgs[np.sort(sp[k])] for k in ("train", "val", "test"))
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), 3.0) for im in h])
    down = np.stack([cv2.resize(cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA), (256, 256),
                                interpolation=cv2.INTER_LINEAR) for im in h])  # fmt: skip
    normals = np.asarray(load_dataset(DataConfig(path=str(nih / "normal"), size=64), progress=False).images)
    e64, r64 = _to64(e), _to64(r)
    ref_fp = set(image_fingerprints(r64))
    e64 = e64[[f not in ref_fp for f in image_fingerprints(e64)]]  # covid-cxnet repeats some images across patients
    ext = encoder_extractor(auto_encoder_path(e64, progress=False))  # trained exactly as `--features auto` trains it
    fr = extract(ext, r64, progress=False)
    out = {}
    for name, imgs64 in (("real", _to64(h)), ("blurred", _to64(blurred)), ("down x8", _to64(down)),
                         ("other class", normals[: len(h)])):  # fmt: skip
        ff = extract(ext, imgs64, progress=False)
        out[name] = (fid_from_features(fr, ff), *fid_bootstrap(fr, ff, reps=30))
    return out


def test_encoder_fid_ranks_real_below_degraded_below_other_class(sanity_fids):
    f = sanity_fids
    for lower, higher in (("real", "blurred"), ("real", "down x8"), ("blurred", "other class"),
                          ("down x8", "other class")):  # fmt: skip
        (v_lo, _, hi_lo), (v_hi, lo_hi, _) = f[lower], f[higher]
        assert hi_lo < lo_hi, f"{lower} {f[lower]} vs {higher} {f[higher]}: CIs overlap"  # non-overlapping CIs
        assert v_hi > 1.5 * v_lo, f"{lower} {f[lower]} vs {higher} {f[higher]}: margin"  # and a margin
