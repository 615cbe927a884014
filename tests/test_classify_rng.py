"""The classifier's training leaves torch's global RNG alone and is reproducible from its seed."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxraug.classify.train import fit_classifier


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (24, 16, 16), dtype=np.uint8)
    y = np.arange(24) % 2
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(123)  # the test's own init; the function under test must not depend on the global RNG
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(256, 2))


def test_fit_classifier_leaves_the_global_rng_alone_and_is_seeded():
    x, y = _data()
    m1, c1 = fit_classifier(_model(), x, y, x, y, epochs=2, batch_size=8, augment=True, seed=3)
    m0 = _model()
    torch.manual_seed(7)
    expected_next = torch.rand(3)  # what the caller's stream yields next if nobody touches it
    torch.manual_seed(7)
    m2, c2 = fit_classifier(m0, x, y, x, y, epochs=2, batch_size=8, augment=True, seed=3)
    assert torch.equal(torch.rand(3), expected_next), "fit_classifier changed torch's global RNG state"
    # same seed: dropout masks and flips replay exactly -> identical curves and weights (wall times aside)
    c1.pop("seconds"), c2.pop("seconds")
    assert c1 == c2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    # another seed draws other dropout masks and flips
    _, c3 = fit_classifier(_model(), x, y, x, y, epochs=2, batch_size=8, augment=True, seed=4)
    c3.pop("seconds")
    assert c3 != c1


def test_study_quality_encoder_split_is_patient_level(monkeypatch, tmp_path):
    """The report's image quality trains the auto encoder on one half of the minority training images and uses
    the other as the FID reference: the halves must be split by patient (images of one patient are near
    copies), so the study hands its patient ids down. Regression: they were not passed (image-level split)."""
    import cxraug.classify.explain as explain
    import cxraug.metrics as metrics
    from cxraug.metrics import encoder_split

    seen = {}

    def fake_evaluate(real, fake, features, **kw):
        seen.update(kw)
        return {"memorization": {"flagged": []}}

    monkeypatch.setattr(metrics, "evaluate_images", fake_evaluate)
    monkeypatch.setattr(explain, "gradcam", lambda *a: np.zeros((1, 8, 8)))
    monkeypatch.setattr(explain, "umap_embedding", lambda *a: np.zeros((1, 2)))
    monkeypatch.setattr("cxraug.metrics.memorization.closest_pairs_grid", lambda *a, **k: None)
    rng = np.random.default_rng(0)
    train_min = rng.integers(0, 256, (8, 16, 16), dtype=np.uint8)
    patients = ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]
    explain.save_explanations(tmp_path, nn.Identity(), 1, test_minority=train_min[:2], synthetic=train_min[:4],
                              train_minority=train_min, umap_x=train_min[:2], umap_y=np.zeros(2, np.int64),
                              umap_synthetic=np.zeros(2, bool), features="auto", progress=False,
                              train_patients=patients)  # fmt: skip
    assert seen["patient_ids"] == patients
    enc, ref = encoder_split(len(patients), seen["patient_ids"], 0)
    assert not {patients[i] for i in enc} & {patients[i] for i in ref}  # no patient on both sides
