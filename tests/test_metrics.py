"""Metrics (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import rand_u8
from cxraug.errors import OfflineWeightsError
from cxraug.metrics import evaluate_images, frechet_distance, kid, memorization_audit, prdc
from cxraug.metrics.fid import fid_from_features, mean_cov


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 32))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-8)


def test_fid_closed_form_two_gaussians():
    # N(mu1, a^2 I) vs N(mu2, b^2 I) in d dims: |mu1-mu2|^2 + d (a - b)^2
    d = 8
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = 4.0 * np.eye(d), 1.0 * np.eye(d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(d * 0.25 + d * 1.0, rel=1e-12)
    # non-commuting covariances vs scipy's sqrtm
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    c1, c2 = a @ a.T + np.eye(d), b @ b.T + np.eye(d)
    ref = np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(mu1, c1, mu1, c2) == pytest.approx(ref, rel=1e-9)


def test_fid_agrees_with_pytorch_fid_and_torchmetrics():
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(2)
    r, f = rng.normal(size=(400, 64)), rng.normal(0.2, 1.1, size=(400, 64))
    (m1, s1), (m2, s2) = mean_cov(r), mean_cov(f)
    ours = frechet_distance(m1, s1, m2, s2)
    assert ours == pytest.approx(calculate_frechet_distance(m1, s1, m2, s2), rel=1e-6)
    tm = _compute_fid(*(torch.from_numpy(x) for x in (m1, s1, m2, s2))).item()
    assert ours == pytest.approx(tm, rel=1e-6)


def test_kid_unbiased_for_same_distribution():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    m, s = kid(x, y, subsets=30, subset_size=200)
    assert abs(m) < 3 * s + 1e-3  # centred on 0: unbiased (a biased MMD would be clearly > 0)
    m_far, _ = kid(x, y + 1.0, subsets=10, subset_size=200)
    assert m_far > 10 * abs(m) + 1e-3
    m_same, _ = kid(x, x.copy(), subsets=10, subset_size=200)
    assert abs(m_same) < 0.05


def test_precision_recall_of_set_with_itself_is_one():
    f = np.random.default_rng(4).normal(size=(300, 10))
    r = prdc(f, f, k=5)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    far = prdc(f, f + 50, k=5)
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_memorization_audit_flags_a_planted_copy():
    real = rand_u8(50, 32, seed=0)
    fake = rand_u8(20, 32, seed=1)
    fake[7] = real[13]  # planted exact copy
    rf = real.reshape(50, -1).astype(float)
    ff = fake.reshape(20, -1).astype(float)
    audit = memorization_audit(real, fake, rf, ff)
    flagged = {(x["fake"], x["real_pixel_nn"]) for x in audit["flagged"]}
    assert (7, 13) in flagged and audit["n_flagged"] == 1
    assert audit["closest_pairs"][0][:2] == (7, 13)


def test_pretrained_extractors_fail_offline_with_one_clear_sentence(monkeypatch, tmp_path):
    from cxraug.metrics.features import get_extractor

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    import urllib.request

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    import requests

    monkeypatch.setattr(requests, "get", offline)
    monkeypatch.setenv("HOME", str(tmp_path))
    for spec in ("inception", "xrv"):
        with pytest.raises(OfflineWeightsError) as ei:
            get_extractor(spec)
        assert "\n" not in str(ei.value) and "offline" in str(ei.value)


def test_xrv_extractor_loads_a_weights_file(tmp_path):
    """The xrv loading path, on a weights file we can make here (random init of the same network)."""
    import torchxrayvision as xrv

    from cxraug.metrics.features import extract, get_extractor

    torch.save(xrv.models.DenseNet(weights=None).state_dict(), tmp_path / "w.pt")
    ext = get_extractor(f"xrv:{tmp_path / 'w.pt'}")
    f = extract(ext, rand_u8(3, 64), progress=False)
    assert f.shape == (3, 1024) and np.isfinite(f).all()


def test_xrv_weights_file_of_the_wrong_network_is_refused_in_one_line(tmp_path):
    """Loaded with strict=False, a wrong file silently gave randomly initialised features (issue 12)."""
    import torchxrayvision as xrv

    from cxraug.errors import CheckpointError
    from cxraug.metrics.features import get_extractor

    state = xrv.models.DenseNet(weights=None).state_dict()
    cases = {
        "other.pt": torch.nn.Conv2d(1, 4, 3).state_dict(),  # another network's weights
        "partial.pt": {k: v for i, (k, v) in enumerate(state.items()) if i % 7},  # keys missing
        "list.pt": [torch.zeros(3)],  # not a state dict
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    for name in [*cases, "junk.pt", "absent.pt"]:
        with pytest.raises(CheckpointError) as ei:
            get_extractor(f"xrv:{tmp_path / name}")
        msg = str(ei.value)
        assert "\n" not in msg and name in msg, msg


# --- bias-aware numbers (issue 13): cross-checks against torch-fidelity and independent computations ---


def test_kid_matches_torch_fidelity_on_the_same_features():
    from torch_fidelity.metric_kid import kid_features_to_metric

    from cxraug.metrics.fid import kid_subset_size

    rng = np.random.default_rng(7)
    r, f = rng.normal(size=(240, 24)), rng.normal(0.1, 1.2, size=(180, 24))
    m = kid_subset_size(len(r), len(f))
    assert m == 90  # adapted to n: half the smaller set
    ours = kid(r, f, subsets=20, seed=3)
    ref = kid_features_to_metric(
        torch.from_numpy(r),
        torch.from_numpy(f),
        kid_subsets=20,
        kid_subset_size=m,
        rng_seed=3,
        verbose=False,
        kid_degree=3,
        kid_gamma=None,
        kid_coef0=1,
        kid_kernel="poly",
    )
    assert ours[0] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9)
    assert ours[1] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9)


def test_kid_single_subset_equals_a_hand_written_unbiased_mmd():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
    d, m = 5, 12

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    from cxraug.metrics.fid import mmd2_unbiased

    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def _prdc_brute_force(real, fake, k):
    """Naeem et al. (2020), eqs. for precision/recall/density/coverage, with plain loops."""

    def dist(a, b):
        return float(np.sqrt(((a - b) ** 2).sum()))

    def radius(s, i):
        return sorted(dist(s[i], s[j]) for j in range(len(s)) if j != i)[k - 1]  # k-th neighbour, self excluded

    rr = [radius(real, i) for i in range(len(real))]
    fr = [radius(fake, j) for j in range(len(fake))]
    inside = [[dist(real[i], fake[j]) <= rr[i] for j in range(len(fake))] for i in range(len(real))]
    precision = np.mean([any(inside[i][j] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(dist(real[i], fake[j]) <= fr[j] for j in range(len(fake))) for i in range(len(real))])
    density = sum(inside[i][j] for i in range(len(real)) for j in range(len(fake))) / (k * len(fake))
    coverage = np.mean([min(dist(real[i], fake[j]) for j in range(len(fake))) <= rr[i] for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_matches_naeem_formulas_computed_by_brute_force(k):
    rng = np.random.default_rng(10 + k)
    real, fake = rng.normal(size=(40, 3)), rng.normal(0.4, 1.3, size=(30, 3))
    ours, ref = prdc(real, fake, k=k), _prdc_brute_force(real, fake, k)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1  # a non-trivial case


def test_prdc_with_feature_groups_requires_every_group_brute_force():
    """Two groups on different scales: group 1 (wide) where fakes sit among the reals, group 2 (narrow) where
    half of them are far off. One ball over both columns calls them all realistic; with ``parts`` each group's
    balls are checked apart (the reference: the brute-force estimator per group, combined by hand)."""
    rng = np.random.default_rng(3)
    real = np.concatenate([rng.normal(0, 10, (60, 2)), rng.normal(0, 0.1, (60, 2))], 1)
    fake = np.concatenate([rng.normal(0, 10, (40, 2)), rng.normal(0, 0.1, (40, 2))], 1)
    fake[20:, 2:] += 3.0  # 30 SDs off in group 2 only: 0.3 % of group 1's spread
    assert prdc(real, fake, k=5)["precision"] > 0.9  # hidden by group 1's scale
    ours = prdc(real, fake, k=5, parts=[2])
    g1, g2 = _prdc_brute_force(real[:, :2], fake[:, :2], 5), _prdc_brute_force(real[:, 2:], fake[:, 2:], 5)
    d_rr = np.linalg.norm(real[:, None, 2:] - real[None, :, 2:], axis=-1)
    radius = np.sort(d_rr, 1)[:, 5]  # each real's 5th neighbour in group 2 (index 0: itself)
    d_rf = np.linalg.norm(real[:, None, 2:] - fake[None, 20:, 2:], axis=-1)
    assert not (d_rf <= radius[:, None]).any()  # the shifted fakes are in no real's group-2 ball
    assert ours["precision"] <= 0.5 and ours["precision"] <= min(g1["precision"], g2["precision"]) + 1e-12
    assert ours["density"] == pytest.approx(min(g1["density"], g2["density"]), abs=1e-12)
    assert prdc(real, fake, k=5, parts=[]) == prdc(real, fake, k=5)  # one group: the published estimator


def test_fid_infinity_removes_the_small_sample_bias():
    """Gaussians with a closed-form FID (d=16): over 8 independent fake samples of n=100, FID at n is
    biased up by ~0.6; Chong & Forsyth's extrapolation removes most of it."""
    from cxraug.metrics.fid import fid_infinity

    d, mu, sig = 16, 0.3, 0.8
    truth = d * mu**2 + d * (1 - sig) ** 2
    rng = np.random.default_rng(11)
    real = rng.normal(size=(20000, d))  # the reference: its statistics are ~exact
    at_n, inf = [], []
    for _ in range(8):
        fake = rng.normal(mu, sig, size=(100, d))
        at_n.append(fid_from_features(real, fake) - truth)
        fit = fid_infinity(real, fake, points=8, reps=5)
        inf.append(fit["fid_inf"] - truth)
        assert fit["slope"] > 0 and fit["ns"][-1] == 100
    assert np.mean(at_n) > 0.4  # the bias being removed
    assert abs(np.mean(inf)) < 0.5 * np.mean(at_n)


def test_fid_bootstrap_ci_width_matches_monte_carlo_spread():
    from cxraug.metrics.fid import fid_bootstrap

    d, n = 6, 150
    rng = np.random.default_rng(12)
    draws = [fid_from_features(rng.normal(size=(n, d)), rng.normal(0.5, 1.0, size=(n, d))) for _ in range(60)]
    mc_width = np.quantile(draws, 0.975) - np.quantile(draws, 0.025)
    r, f = rng.normal(size=(n, d)), rng.normal(0.5, 1.0, size=(n, d))
    lo, hi = fid_bootstrap(r, f, reps=60, seed=0)
    assert lo <= fid_from_features(r, f) <= hi
    assert 0.5 < (hi - lo) / mc_width < 2.0


# --- held-out encoder, copy-aware audit, diversity (issue 13) ---


def test_encoder_refuses_a_reference_it_was_trained_on(tmp_path):
    from cxraug.errors import CXRAugError
    from cxraug.metrics.encoder import image_fingerprints, load_encoder, save_encoder, train_encoder

    seen, unseen, fake = rand_u8(12, 32, seed=1), rand_u8(12, 32, seed=2), rand_u8(12, 32, seed=3)
    enc = train_encoder(seen, steps=2, batch_size=4, width=8, progress=False)
    path = save_encoder(enc, tmp_path / "enc.safetensors")
    assert load_encoder(path).trained_on == image_fingerprints(seen)  # recorded in the file
    spec = f"encoder:{path}"
    mixed = np.concatenate([unseen, seen[:3]])
    with pytest.raises(CXRAugError, match="3 of the 15 reference images were used to train"):
        evaluate_images(mixed, fake, features=spec, k=2, progress=False, audit=False, fid_reps=2)
    ok = evaluate_images(mixed, fake, features=spec, k=2, progress=False, audit=False, fid_reps=2,
                         allow_encoder_overlap=True)
    assert ok["encoder_reference_overlap"] == 3
    assert evaluate_images(unseen, fake, features=spec, k=2, progress=False, audit=False, fid_reps=2)["n_real"] == 12


def test_trained_encoder_is_trained_on_patients_disjoint_from_the_reference(monkeypatch):
    import cxraug.metrics.encoder as encoder_mod
    from cxraug.metrics import encoder_split

    real = rand_u8(20, 32, seed=4)
    pids = [f"p{i // 2}" for i in range(20)]  # two images per patient
    real[2:20:4] = real[1:20:4]  # and one image repeated under the next patient (the same study published twice)
    trained = {}
    orig = encoder_mod.train_encoder

    def small(images, **kw):
        trained["fp"] = encoder_mod.image_fingerprints(images)
        return orig(images, steps=2, batch_size=4, width=8, progress=False)

    monkeypatch.setattr(encoder_mod, "train_encoder", small)
    res = evaluate_images(real, rand_u8(10, 32, seed=5), features="trained", k=2, progress=False, audit=False,
                          patient_ids=pids, fid_reps=2)  # fmt: skip
    enc_idx, ref_idx = encoder_split(20, pids, 0)
    assert res["n_real"] == len(ref_idx) == 10 and res["encoder_reference_overlap"] == 0
    ref_fp = set(encoder_mod.image_fingerprints(real[ref_idx]))
    assert set(trained["fp"]) == set(encoder_mod.image_fingerprints(real[enc_idx])) - ref_fp  # repeats dropped
    assert len(trained["fp"]) < len(enc_idx)  # (this split does put repeats on both sides)
    assert not {pids[i] for i in enc_idx} & {pids[i] for i in ref_idx}  # patient-level


def test_memorization_audit_flags_a_shifted_flipped_copy_the_old_rules_missed():
    real = rand_u8(30, 32, seed=6)
    fake = rand_u8(10, 32, seed=7)
    fake[4] = np.roll(real[11][:, ::-1], (2, -3), (0, 1))  # flipped and shifted: pixel RMSE is large
    flat = lambda a: a.reshape(len(a), -1).astype(float)  # noqa: E731
    audit = memorization_audit(real, fake, flat(real), flat(fake))
    assert [(x["fake"], x["real_ncc_nn"]) for x in audit["flagged"]] == [(4, 11)]
    assert audit["flagged"][0]["pixel_rmse"] > 0.04  # the old pixel rule alone would have passed it


def test_ms_ssim_diversity_separates_a_collapsed_set():
    from cxraug.data.phantom import phantom
    from cxraug.data.preprocess import Preprocess
    from cxraug.metrics.diversity import ms_ssim_config, ms_ssim_diversity

    # 11-px window at every size (torchmetrics ignored the 7 px asked for before: its Gaussian window is set by sigma)
    assert ms_ssim_config(64) == (11, pytest.approx((0.0448 / 0.6305, 0.2856 / 0.6305, 0.3001 / 0.6305)))
    assert ms_ssim_config(256)[1] == pytest.approx((0.0448, 0.2856, 0.3001, 0.2363, 0.1333), rel=1e-3)  # standard 5
    pp = Preprocess(64)
    varied = np.stack([pp(phantom("covid", 64, s)) for s in range(12)])
    collapsed = np.repeat(varied[:1], 12, 0)
    assert ms_ssim_diversity(collapsed)["ms_ssim"] == pytest.approx(1.0, abs=1e-6)  # identical images: exactly 1
    d = ms_ssim_diversity(varied)
    assert d["ms_ssim"] < 0.9 and d["scales"] == 3
    assert ms_ssim_diversity(rand_u8(12, 64))["ms_ssim"] < 0.1  # independent noise: ~0


def _ms_ssim_pairs_64():
    """Pairs with every case MS-SSIM meets: identical, noisy copy, distinct, contrast-inverted (cs < 0)."""
    from cxraug.data.phantom import phantom
    from cxraug.data.preprocess import Preprocess

    pp = Preprocess(64)
    a = np.stack([pp(phantom("covid", 64, s)) for s in range(6)])
    b = np.stack([pp(phantom("normal", 64, s + 10)) for s in range(6)])
    b[0] = a[0]
    b[1] = np.clip(a[1] + np.random.default_rng(0).integers(-20, 21, a[1].shape), 0, 255)
    b[2] = 255 - a[2]
    return a, b


def test_ms_ssim_matches_torchmetrics_in_its_reflect_padding_convention():
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms_ssim

    from cxraug.metrics.diversity import STANDARD_BETAS, ms_ssim, ms_ssim_config

    a, b = _ms_ssim_pairs_64()
    big = [np.kron(x, np.ones((3, 3), np.uint8)) for x in (a, b)]  # 192 px: all 5 standard scales fit
    for (x, y), betas in (((a, b), ms_ssim_config(64)[1]), (big, STANDARD_BETAS)):
        ref = tm_ms_ssim(torch.tensor(x, dtype=torch.float64)[:, None], torch.tensor(y, dtype=torch.float64)[:, None],
                         data_range=255.0, betas=betas, reduction="none", normalize="relu")  # fmt: skip
        ours = ms_ssim(x, y, betas=betas, padding="reflect")
        np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-6)
    assert ours[0] == pytest.approx(1.0) and ours[2] == 0.0  # identical; inverted (negative cs clamped)


def test_ms_ssim_valid_convention_is_torchmetrics_cs_times_skimage_ssim_at_the_coarsest_scale():
    """Wang et al.'s definition, composed from two other libraries: the contrast-structure term of each
    finer scale from torchmetrics (averaged over the valid region), the coarsest scale's SSIM from
    scikit-image (Gaussian window, population statistics, valid region), 2x2 average pooling between."""
    import torch.nn.functional as F
    from skimage.metrics import structural_similarity
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    from cxraug.metrics.diversity import ms_ssim, ms_ssim_config, ms_ssim_pairs

    a, b = _ms_ssim_pairs_64()
    betas = ms_ssim_config(64)[1]
    x, y = (torch.tensor(v, dtype=torch.float64)[:, None] for v in (a, b))
    ref = np.ones(len(a))
    for j, beta in enumerate(betas):
        if j < len(betas) - 1:
            _, cs = tm_ssim(x, y, data_range=255.0, reduction="none", return_contrast_sensitivity=True)
            term = cs.numpy()
        else:
            term = np.array([structural_similarity(u[0], v[0], data_range=255, gaussian_weights=True, sigma=1.5,
                                                   use_sample_covariance=False) for u, v in zip(x.numpy(), y.numpy())])  # fmt: skip
        ref = ref * np.clip(term, 0, None) ** beta
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    np.testing.assert_allclose(ms_ssim(a, b), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ms_ssim_pairs(a, b), ref, rtol=0, atol=1e-10)  # what the diversity score uses
    # the two conventions differ only in the coarsest SSIM's border: measurably at 64 px
    assert np.abs(ms_ssim(a, b) - ms_ssim(a, b, padding="reflect")).max() > 1e-3


def test_evaluate_takes_a_random_n_of_a_generated_folder_not_its_first_files(tmp_path):
    """`cxraug evaluate --fake FOLDER --n N` compared the first N files (by name) with a random N of the real set:
    a folder written in generation order (one class, one seed after another) gave a biased set (the spectral check's
    real-vs-real rose from 0.18 to 1.21 dB at n = 200, issue 27). Now a seeded random N, the same for the same seed."""
    from PIL import Image

    from cxraug.cli.evaluate import _fake_images

    d = tmp_path / "fake"
    d.mkdir()
    for i in range(40):  # the first 20 files dark, the last 20 bright
        Image.fromarray(np.full((32, 32), 20 if i < 20 else 230, np.uint8)).save(d / f"{i:03d}.png")
    a, _ = _fake_images(str(d), 10, 32, seed=0, progress=False)
    b, _ = _fake_images(str(d), 10, 32, seed=0, progress=False)
    c, _ = _fake_images(str(d), 10, 32, seed=1, progress=False)
    bright = (a.reshape(10, -1).mean(1) > 128).sum()
    assert len(a) == 10 and 0 < bright < 10  # both halves of the folder, not its first ten files
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    full, _ = _fake_images(str(d), 100, 32, seed=0, progress=False)
    assert len(full) == 40  # fewer than n: all of them


def test_closest_pairs_grid_shows_the_real_images_the_audit_compared(monkeypatch):
    """With more real images than ``n``, the audit's indices are into the n drawn: the grid (``cxraug evaluate``,
    the study report) must show those images, not the rows with the same numbers in the full set."""
    import cxraug.plotting as plotting
    from cxraug.metrics.memorization import closest_pairs_grid

    real = rand_u8(40, 32, seed=8)
    fake = real[[3, 17, 29]].copy()  # copies: their nearest real image is themselves
    res = evaluate_images(real, fake, features="cxr", n=20, k=2, progress=False, fid_reps=2)
    assert res["real_indices"] is not None and len(res["real_indices"]) == 20
    shown = {}
    monkeypatch.setattr(plotting, "save_grid", lambda imgs, dest, nrow: shown.update(imgs=np.asarray(imgs)))
    closest_pairs_grid(real, fake, res["memorization"], "unused.png", real_indices=res["real_indices"])
    pairs = res["memorization"]["closest_pairs"][:8]
    exact = [(k, img) for (k, _, rmse), img in zip(pairs, shown["imgs"][len(pairs) :]) if rmse == 0]
    assert exact  # (this draw keeps some originals) a copy's original among the n drawn is what the grid shows
    assert all(np.array_equal(img, fake[k]) for k, img in exact)
