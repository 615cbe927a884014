"""Quality metrics: FID / KID / precision-recall / density-coverage, MS-SSIM diversity, the spectral
check (radial power spectra), memorization audit and Meehan et al.'s data-copying test."""

from __future__ import annotations

import numpy as np

from cxraug.errors import CXRAugError
from cxraug.metrics.features import Extractor, cached_features, extract, get_extractor
from cxraug.metrics.fid import all_metrics, fid_from_features, frechet_distance, kid, prdc
from cxraug.metrics.memorization import memorization_audit

__all__ = [
    "all_metrics",
    "evaluate_images",
    "fid_from_features",
    "frechet_distance",
    "kid",
    "memorization_audit",
    "prdc",
]


#: The fewest images per set the metrics can be computed on.
MIN_IMAGES = 2


def encoder_split(n: int, patient_ids: list[str] | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level halves of n images: (encoder-training indices, reference indices)."""
    pids = patient_ids if patient_ids is not None else [str(i) for i in range(n)]
    uniq = sorted(set(pids))
    rng = np.random.default_rng(seed)
    enc_p = set(np.asarray(uniq, dtype=object)[rng.permutation(len(uniq))[: len(uniq) // 2]].tolist())
    mask = np.array([p in enc_p for p in pids])
    return np.nonzero(mask)[0], np.nonzero(~mask)[0]


def fid_floor(
    real: np.ndarray, fake: np.ndarray, *, patient_ids: list[str] | None = None, seed: int = 0, reps: int = 50
) -> dict | None:
    """FID's real-vs-real floor at the same n, from features: the reference split into patient-level halves A and
    B; FID(A, B) beside FID(A, the first |B| generated images), each with its bootstrap CI. FID grows as n falls
    (and differs between feature spaces), so a generator's FID means something only next to what real images of
    the same collection score at the same n (at a few images both are large: that is the point). ``None`` with
    fewer than 2 images in a half."""
    from cxraug.metrics.fid import fid_bootstrap, fid_from_features

    a, b = encoder_split(len(real), patient_ids, seed)
    m = min(len(b), len(fake))
    if len(a) < MIN_IMAGES or m < MIN_IMAGES:
        return None
    ra, rb, fb = real[a], real[b][:m], fake[:m]
    out: dict = {"split": "patient-level halves of the reference" if patient_ids is not None else
                 "random halves of the reference (no patient ids)", "n_a": len(a), "n": m}  # fmt: skip
    for name, other in (("real", rb), ("generated", fb)):
        lo, hi = fid_bootstrap(ra, other, reps=reps, seed=seed)
        out[name] = {"fid": fid_from_features(ra, other), "ci95": [lo, hi]}
    return out


def check_encoder_reference(ext: Extractor, reference_u8: np.ndarray, allow: bool = False) -> int:
    """Refuse a reference set the feature encoder was trained on (its file records fingerprints);
    returns how many reference images it has seen (0 unless ``allow``)."""
    from cxraug.metrics.encoder import image_fingerprints

    seen = set(getattr(ext.net, "trained_on", None) or [])
    if not seen:
        return 0
    n = sum(f in seen for f in image_fingerprints(reference_u8))
    if n and not allow:
        raise CXRAugError(
            f"{n} of the {len(reference_u8)} reference images were used to train the feature encoder "
            f"{ext.name}, which rewards copying them; evaluate against real images it has not seen "
            "(or pass --allow-encoder-overlap)"
        )
    return n


def nearest_anywhere(pools: dict[str, np.ndarray], fake_feat: np.ndarray, scale: float, *, top: int = 16) -> dict:
    """Each generated image's nearest real image across every real set given (``pools``: name -> copy-space
    features), not only the generator's training set: a near-copy of a held-out image means that image (or a
    copy of it) was in training. Returns how many generated images are nearest to each set and the ``top``
    closest pairs (feature distance as a ratio of the real-to-real nearest-neighbour median ``scale``)."""
    from cxraug.metrics.memorization import _nn

    names = list(pools)
    best = np.full(len(fake_feat), np.inf)
    where = np.zeros((len(fake_feat), 2), dtype=int)
    for s, name in enumerate(names):
        d, i = _nn(fake_feat, pools[name])
        closer = d < best
        best[closer], where[closer, 0], where[closer, 1] = d[closer], s, i[closer]
    order = np.argsort(best)[:top]
    return {
        "sets": names,
        "nearest_set_counts": {n: int((where[:, 0] == s).sum()) for s, n in enumerate(names)},
        "closest": [
            {"fake": int(k), "set": names[where[k, 0]], "index": int(where[k, 1]),
             "feature_ratio": float(best[k] / max(scale, 1e-12))}
            for k in order
        ],
    }


def evaluate_images(
    real_u8: np.ndarray,
    fake_u8: np.ndarray,
    *,
    features: str = "auto",
    n: int = 5000,
    k: int = 5,
    seed: int = 0,
    progress: bool = True,
    audit: bool = True,
    device: str = "cpu",
    heldout_u8: np.ndarray | None = None,
    patient_ids: list[str] | None = None,
    encoder_images: np.ndarray | None = None,
    allow_encoder_overlap: bool = False,
    fid_reps: int = 50,
) -> dict:
    """All metrics for uint8 image sets [N,S,S]; the extractor and every n are reported.

    ``real_u8``: the generator's real training images (the memorization audit's reference).
    ``features``: see ``cxraug.metrics.features`` (``auto``: Inception if its weights are on disk, else the
    shipped CXR feature space ``cxr``). ``features="trained"`` trains an encoder on images disjoint from the
    FID reference: ``encoder_images`` if given, else a patient-level half of ``real_u8`` (the other half is then
    the reference). An ``encoder:PATH`` trained on reference images is
    refused unless ``allow_encoder_overlap``. The spectral check (``res["spectral"]``, training-free) compares
    all of ``real_u8`` with ``fake_u8``. The copy searches (memorization audit, data-copying test) use the
    extractor's copy features where it has them (``cxr``: its content embedding). ``heldout_u8``: real images
    the generator never saw, for Meehan et al.'s three-sample data-copying test."""
    from cxraug.metrics.copying import three_sample_test
    from cxraug.metrics.diversity import ms_ssim_diversity
    from cxraug.metrics.features import auto_encoder_path, encoder_extractor
    from cxraug.metrics.spectral import spectral_distance

    real_u8 = np.asarray(real_u8)
    rng = np.random.default_rng(seed)
    if len(real_u8) > n:
        keep = np.sort(rng.choice(len(real_u8), n, replace=False))
        real_u8 = real_u8[keep]
        real_indices = keep.tolist()
        patient_ids = [patient_ids[i] for i in keep] if patient_ids is not None else None
    else:
        real_indices = None
    fake_u8 = np.asarray(fake_u8[:n])
    if len(fake_u8) < MIN_IMAGES or len(real_u8) < MIN_IMAGES:
        raise CXRAugError(f"the metrics need at least {MIN_IMAGES} real and {MIN_IMAGES} generated images (KID "
                          f"compares subsets of 2, precision/recall a nearest neighbour); got {len(real_u8)} real "
                          f"and {len(fake_u8)} generated")  # fmt: skip
    reference, ref_pids = real_u8, patient_ids
    encoder_note = None
    if features == "trained":
        if encoder_images is None:
            enc_idx, ref_idx = encoder_split(len(real_u8), patient_ids, seed)
            if len(enc_idx) < 2 or len(ref_idx) < 2:
                raise CXRAugError(f"features=trained needs at least 4 real images (2 patients), got {len(real_u8)}")
            encoder_images, reference = real_u8[enc_idx], real_u8[ref_idx]
            ref_pids = [patient_ids[i] for i in ref_idx] if patient_ids is not None else None
            encoder_note = f"trained on a patient-level half of the real images ({len(enc_idx)}); reference: the rest"
        else:
            encoder_note = f"trained on {len(encoder_images)} separate real images"
        # byte-identical images across patients (the same study published twice) leave the encoder's set
        from cxraug.metrics.encoder import image_fingerprints

        ref_fp = set(image_fingerprints(reference))
        encoder_images = np.asarray(encoder_images)
        encoder_images = encoder_images[[f not in ref_fp for f in image_fingerprints(encoder_images)]]
        if len(encoder_images) < 2:
            raise CXRAugError("features=trained: fewer than 2 real images left to train the encoder on")
        ext = encoder_extractor(auto_encoder_path(encoder_images, progress)).to(device)
    else:
        ext = get_extractor(features, real_images=real_u8, progress=progress, device=device)
    overlap = check_encoder_reference(ext, reference, allow_encoder_overlap)
    fr = cached_features(ext, reference, progress=progress)
    ff = extract(ext, fake_u8, progress=progress)
    res = {
        "features": ext.name,
        "n_real": len(fr),
        "n_fake": len(ff),
        "feature_dim": int(fr.shape[1]),
        "encoder": encoder_note,
        "encoder_reference_overlap": overlap,
        "real_indices": real_indices,  # the real images compared when there were more than n (None: all)
        "prdc_feature_groups": list(ext.parts) if ext.parts else None,  # boundaries: a sample must be in all
    }
    res.update(all_metrics(fr, ff, k=k, seed=seed, fid_reps=fid_reps, parts=ext.parts))
    res["floor"] = fid_floor(fr, ff, patient_ids=ref_pids, seed=seed, reps=fid_reps)
    res["diversity"] = {
        "synthetic": ms_ssim_diversity(fake_u8, seed=seed),
        "real": ms_ssim_diversity(reference, seed=seed),
    }
    # training-free, so against every real image given (the encoder's half too)
    res["spectral"] = spectral_distance(real_u8, fake_u8, seed=seed)
    if audit:
        # the copy searches: in the extractor's copy space (a blurred or shifted copy stays near its original)
        copy = ext.copy_fn is not None
        same = reference is real_u8 and not copy
        f_train = fr if same else cached_features(ext, real_u8, progress=progress, copy=copy)
        f_fake = extract(ext, fake_u8, progress=progress, copy=True) if copy else ff
        mem = memorization_audit(real_u8, fake_u8, f_train, f_fake)
        mem["copy_features"] = f"{ext.name} (copy space)" if copy else ext.name
        if heldout_u8 is not None and len(heldout_u8) >= 2:
            fh = extract(ext, np.asarray(heldout_u8), progress=progress, copy=True)
            mem["three_sample"] = three_sample_test(f_train, fh, f_fake, seed=seed)
            mem["nearest_anywhere"] = nearest_anywhere({"training": f_train, "held-out": fh}, f_fake,
                                                       mem["real_to_real_nn_median"])  # fmt: skip
        else:
            mem["three_sample"] = None
        res["memorization"] = mem
    return res
