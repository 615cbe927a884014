"""The benchmark: does GAN augmentation help? {real, standard-aug, gan-aug, synthetic-only} x
data regimes x seeds, on one fixed, real-only, patient-level test split. Resumable: each finished
run is a ``runs/<key>/result.json`` and is not redone.

This module runs the study; its parts live beside it: :mod:`~cxraug.classify.config` (the
dataclasses), :mod:`~cxraug.classify.assemble` (data assembly and leakage checks),
:mod:`~cxraug.classify.generators` (generators and their synthetic images) and
:mod:`~cxraug.classify.aggregate` (summaries across seeds)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxraug.classify.aggregate import METRIC_KEYS, aggregate, parse_primary
from cxraug.classify.assemble import (
    check_generator_unseen,
    class_source_table,
    confounding,
    load_labelled,
    load_sources,
    min_fraction_pool_size,
    parse_augment_rule,
    plan_min_fraction,
    reduce_minority,
    screen_against_training,
)
from cxraug.classify.config import (
    MAX_RATIO,
    PROTOCOLS,
    RATIO_PROTOCOLS,
    SYNTHETIC_PROTOCOLS,
    GanSpec,
    Source,
    StudyConfig,
    base_protocol,
    load_config_dict,
    load_study_config,
    source_names,
    split_arm,
    study_arms,
)
from cxraug.classify.executor import run_grid
from cxraug.classify.generators import StudyGenerators, gan_train_config
from cxraug.classify.metrics import binary_metrics, multiclass_metrics, multilabel_auc
from cxraug.classify.models import build_classifier
from cxraug.classify.stats import auc_of, choose_threshold, parse_margin, parse_operating_point
from cxraug.classify.train import balanced_class_weight, fit_classifier, predict_proba, standard_augmentation
from cxraug.config import save_config, to_dict
from cxraug.data.splits import (
    check_no_synthetic,
    check_patient_disjoint,
    copies_in_test,
    patient_split,
    regime_subset,
)
from cxraug.errors import CXRAugError
from cxraug.families import family_of
from cxraug.io import load_checkpoint, save_checkpoint, write_json
from cxraug.train.config import SECTIONS

# per-image, kept in runs/*/result.json
RAW_KEYS = ("test_prob", "test_true", "external_prob", "external_true", "test_prob_labels", "test_true_labels")

__all__ = ["METRIC_KEYS", "PROTOCOLS", "GanSpec", "Source", "Study", "StudyConfig", "aggregate",
           "check_generator_unseen", "load_config_dict", "load_sources", "load_study_config"]  # fmt: skip


class Study(StudyGenerators):
    @staticmethod
    def check(cfg: StudyConfig) -> float | None:
        """Every refusal the config alone decides, before any folder or work (the CLI calls it before it makes
        the study folder); returns the min-fraction rule's F (None for equalize)."""
        if cfg.generator is None and cfg.gan is None and set(SYNTHETIC_PROTOCOLS) & set(cfg.protocols):
            raise CXRAugError(
                "protocols gan-aug/synthetic-only(-full) need `generator: CHECKPOINT` or a `gan:` block in the study config"
            )
        if cfg.generator and cfg.gan:
            raise CXRAugError("give either `generator:` or `gan:` in the study config, not both")
        bad = set(cfg.protocols) - set(PROTOCOLS)
        if bad:
            raise CXRAugError(f"unknown protocols {sorted(bad)}; choose from {PROTOCOLS}")
        fraction = parse_augment_rule(cfg.augment_rule)
        ratios = [float(r) for r in cfg.synthetic_ratios]
        if ratios:
            if not all(np.isfinite(r) and 0 < r <= MAX_RATIO for r in ratios) or len(set(ratios)) < len(ratios):
                raise CXRAugError(f"synthetic_ratios {cfg.synthetic_ratios}: distinct numbers within (0, {MAX_RATIO:g}]"
                                  " (synthetic minority images per real minority training image)")  # fmt: skip
            if fraction is not None:
                raise CXRAugError("synthetic_ratios set the number of synthetic images; augment_rule min-fraction:F "
                                  "sets it too: give one of them")  # fmt: skip
            if not set(RATIO_PROTOCOLS) & set(cfg.protocols):
                raise CXRAugError(f"synthetic_ratios need at least one of the protocols {', '.join(RATIO_PROTOCOLS)}")
        several = bool(set(cfg.augment_labels) - {cfg.minority})
        if several and fraction is None:
            raise CXRAugError("several augment_labels need augment_rule: min-fraction:F (e.g. 0.15, Sundaram & "
                              "Hulkund); equalize balances the minority only")  # fmt: skip
        if several and {"synthetic-only", "synthetic-only-full"} & set(cfg.protocols):
            raise CXRAugError("synthetic-only protocols replace one minority; with several augment_labels run "
                              "real, standard-aug and gan-aug")  # fmt: skip
        if several and cfg.gan:
            tcfg = gan_train_config(cfg.gan, cfg.size)
            if not family_of(tcfg.family).conditional_for(to_dict(tcfg)):
                raise CXRAugError(f"several augment_labels need a conditional generator (a cgan preset, or "
                                  f"stylegan2 / ddpm with class_cond=true in gan.overrides); {cfg.gan.preset} "
                                  "makes only the minority")  # fmt: skip
        parse_operating_point(cfg.operating_point)
        standard_augmentation(cfg.standard_aug)
        parse_margin(cfg.margin)
        parse_primary(cfg.primary.comparison)
        if cfg.primary.regime is not None and cfg.primary.regime not in cfg.regimes:
            raise CXRAugError(f"primary.regime {cfg.primary.regime:g} is not one of the study's regimes {cfg.regimes}")
        if cfg.primary.metric != "auc":
            raise CXRAugError(f"primary.metric {cfg.primary.metric!r}: only auc (ROC-AUC; macro AUC for several "
                              "classes) decides a verdict")  # fmt: skip
        pw = cfg.power
        if not (0.5 < pw.auc < 1 and 0 <= pw.correlation < 1 and 0 < pw.alpha < 1 and 0 < pw.power < 1):
            raise CXRAugError(f"power: auc must be within (0.5, 1), correlation within [0, 1), alpha and power within "
                              f"(0, 1); got {to_dict(pw)}")  # fmt: skip
        if cfg.executor not in ("local", "ray"):
            raise CXRAugError(f"executor {cfg.executor!r}: expected local (one run after another here) or ray")
        rs = cfg.ray
        if not (rs.cpus_per_run > 0 and rs.gpus_per_run >= 0 and int(rs.max_retries) >= 0):
            raise CXRAugError(f"ray: cpus_per_run must be > 0, gpus_per_run >= 0, max_retries >= 0; got {to_dict(rs)}")
        if cfg.executor == "ray":
            from cxraug.classify.executor import _ray

            _ray()  # installed? one line if not, before any work
        if cfg.generator_seeds not in ("per-run", "shared"):
            raise CXRAugError(f"generator_seeds {cfg.generator_seeds!r}: expected per-run (one generator per regime "
                              "and seed, the default) or shared")  # fmt: skip
        return fraction

    def __init__(self, cfg: StudyConfig, out: str | os.PathLike, *, progress: bool = True):
        self.cfg, self.dir, self.progress = cfg, Path(out), progress
        self.fraction = self.check(cfg)

    def prepare(self) -> None:
        cfg = self.cfg
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.dir / "config.yaml")
        info: dict = {}
        ds, self.origin = load_labelled(cfg.sources, cfg.size, progress=self.progress, info=info)
        # patient ids that came from the data (a column, DICOM tags, NIH file names, the phantoms' own): only then
        # are the splits patient-level and DeLong's variance patient-clustered
        self.patients_known = info["unknown_patients"] == 0
        self._skipped = [*getattr(ds, "listing_skipped", []), *ds.errors]  # named on stderr as they were loaded
        if cfg.minority not in ds.class_names:
            raise CXRAugError(f"minority class {cfg.minority!r} not in {ds.class_names}")
        self.ds, self.names = ds, ds.class_names
        self.k_min = ds.class_names.index(cfg.minority)
        unknown = [c for c in cfg.augment_labels if c not in ds.class_names]
        if unknown:
            raise CXRAugError(f"augment_labels {unknown} not among the study's labels {ds.class_names}")
        # the labels synthetic images are added for, the minority first
        self.aug_k = [self.k_min] + [ds.class_names.index(c) for c in cfg.augment_labels if c != cfg.minority]
        self.multilabel = ds.multilabel
        self.y = ds.label_index  # class index (single-label); for multi-label the targets are ds.labels
        lab_k = np.nan_to_num(ds.labels[:, self.k_min], nan=-1.0)
        self.pos = lab_k == 1 if self.multilabel else self.y == self.k_min  # minority-positive images
        self.known = lab_k >= 0 if self.multilabel else np.ones(len(ds), bool)  # minority label recorded
        sp = patient_split(ds.labels, ds.patient_ids, fractions=tuple(cfg.split), seed=cfg.split_seed,
                           sources=ds.sources, paths=ds.paths)  # fmt: skip
        check_patient_disjoint(ds.patient_ids, sp)
        n_unused = 0
        if cfg.minority_share is not None:
            sp["train"], n_unused = reduce_minority(
                sp["train"], self.pos, ds.patient_ids, cfg.minority_share, cfg.split_seed
            )
        n_dupes = 0
        from cxraug.data.dedupe import dataset_signatures
        from cxraug.data.stats import fingerprints

        self.images = np.asarray(ds.images)
        self.fp = fingerprints(self.images)
        # the duplicate detector's view of every image, read from its file: finds cropped, padded, rescaled copies
        self.sig = dataset_signatures(ds.paths, self.images)
        if cfg.dedupe:  # drop test images that are copies of a training or validation image
            dup = copies_in_test(self.fp, self.sig, sp)
            sp["test"], n_dupes = sp["test"][~dup], int(dup.sum())
        check_no_synthetic([ds.sources[i] for i in sp["test"]], [ds.paths[i] for i in sp["test"]])
        self.split = sp
        self.table = class_source_table(ds.labels, self.names, self.origin)
        self.confounding = confounding(self.table) if not self.multilabel else {"confounded": False, "text": ""}
        fit_idx = np.concatenate([sp["train"], sp["val"]])  # every image a run fits on or picks its threshold on
        self.external = self._held_out_sets(cfg.external_test, fit_idx, "external")
        self.probe = self._held_out_sets(cfg.probe, fit_idx, "probe")
        te = sp["test"][self.known[sp["test"]]]
        h = hashlib.sha256()
        for a in (self.images, ds.labels, *(sp[k] for k in ("train", "val", "test"))):
            h.update(np.ascontiguousarray(a).tobytes())
        for e in (*self.external.values(), *self.probe.values()):
            h.update(np.ascontiguousarray(e["images"]).tobytes())
        self.data_hash = h.hexdigest()
        from cxraug.data import skipped

        skipped.save(self.dir, self._skipped)  # every file the study left out, in STUDY/skipped.csv
        self.power = self._power_line(te)
        self.acquisition = self._acquisition_check()
        if self.progress:
            tqdm.write(self.power["text"])
            if self.acquisition.get("flagged"):
                tqdm.write(self.acquisition["text"])
        gen_seen = None
        if cfg.generator:  # trained on none of the images any run is evaluated on: test, external and probe sets
            held_out = {"the test split": self.fp[sp["test"]]}
            held_sig = {"the test split": self.sig.subset(sp["test"])}
            for kind, sets in (("external", self.external), ("probe", self.probe)):
                held_out |= {f"the {kind} set {n}": e["fp"] for n, e in sets.items()}
                held_sig |= {f"the {kind} set {n}": e["sig"] for n, e in sets.items()}
            gen_seen = check_generator_unseen(cfg.generator, held_out, held_sig)
        self.sig = None  # the working images: not needed past the screens
        for e in (*self.external.values(), *self.probe.values()):
            e.pop("sig", None)
        self._syn_cache: dict[str, np.ndarray] = {}
        self._syn_labels: dict[str, np.ndarray | None] = {}
        self._ckpt_hash: dict[tuple, str] = {}
        # the top regime's synthetic images (report and quality); on Ray a task trains that generator, so later
        self.syn = None
        if cfg.generator or (cfg.gan and cfg.executor == "local"):
            self.syn = self.synthetic_for(max(cfg.regimes), cfg.seeds[0])
        write_json(self.dir / "data.json", {
            "classes": self.names, "minority": cfg.minority, "counts": ds.counts(),
            "multilabel": self.multilabel,
            "split_counts": {k: {c: int((np.nan_to_num(ds.labels[v, i]) > 0.5).sum()) for i, c in enumerate(self.names)}
                             for k, v in sp.items()},
            "test_duplicates_removed": n_dupes, "minority_train_unused": n_unused, "sources": [to_dict(s) for s in cfg.sources],
            "patients": len(set(ds.patient_ids)), "errors": ds.errors,
            "class_source_table": self.table, "confounding": self.confounding,
            "test_patients": [ds.patient_ids[i] for i in te],
            "test_patients_by_label": {self.names[k]: [ds.patient_ids[i] for i in sp["test"]
                                                       if not np.isnan(ds.labels[i, k])]
                                       for k in self.aug_k[1:]} if self.multilabel else {},
            "patient_ids": {"from_data": self.patients_known, "unknown": info["unknown_patients"],
                            "listed": info["listed"]},
            "power": self.power, "acquisition": self.acquisition,
            "external": {n: {k: v for k, v in e.items() if k not in ("images", "fp")} for n, e in self.external.items()},
            "probe": {n: {k: v for k, v in e.items() if k not in ("images", "fp")} for n, e in self.probe.items()},
            "generator": ({"checkpoint": cfg.generator, "training_images_checked": gen_seen} if cfg.generator
                          else {"trained_by_study": to_dict(cfg.gan)} if cfg.gan else None),
        })  # fmt: skip

    def _power_line(self, te: np.ndarray) -> dict:
        """Before any training: the smallest AUC difference the internal test split can detect (Hanley & McNeil;
        the patient clustering as a design effect, Obuchowski 1997), next to the margin that matters."""
        from cxraug.classify.power import design_effect_from_clusters, power_line
        from cxraug.classify.stats import parse_margin

        pw = self.cfg.power
        kind, x = parse_margin(self.cfg.margin)
        margin = x if kind == "absolute" else x * (1 - pw.auc)
        n_pos = int(self.pos[te].sum())
        de = design_effect_from_clusters([self.ds.patient_ids[i] for i in te]) if self.patients_known else 1.0
        return power_line(pw.auc, n_pos, len(te) - n_pos, correlation=pw.correlation, alpha=pw.alpha, power=pw.power,
                          design_effect=de, margin=margin)  # fmt: skip

    def _acquisition_check(self) -> dict:
        """Do image properties that are not anatomy (native size, bit depth, format, borders, sharpness, noise)
        alone tell the minority from the rest? (DeGrave et al. 2021.) Works on a single folder-per-class source,
        where the class x source table cannot see anything."""
        from cxraug.classify.acquisition import acquisition_cue_check
        from cxraug.data.acquisition import acquisition_features

        known = self.known
        feats, names = acquisition_features([self.ds.paths[i] for i in np.flatnonzero(known)], self.images[known])
        return acquisition_cue_check(feats, names, self.pos[known],
                                     [self.ds.patient_ids[i] for i in np.flatnonzero(known)], seed=self.cfg.split_seed,
                                     positive_name=self.cfg.minority)  # fmt: skip

    def generator_note(self) -> str:
        """How the study's generators were seeded: whether the CIs hold the generator's own training variance."""
        if not (self.cfg.generator or self.cfg.gan):
            return ""
        if self.cfg.generator:
            return "One given generator (`generator:`) for every run: its own training variance is not in the CI."
        if self.cfg.generator_seeds == "shared":
            return ("One generator per distinct training set (generator_seeds: shared): at 100 % every seed shares "
                    "one generator, whose training variance is not in the CI.")  # fmt: skip
        return ("One generator per (regime, seed), its seed derived from the run (generator_seeds: per-run): the "
                "CIs hold the generator's training variance as well as the classifier's.")  # fmt: skip

    def _held_out_sets(self, sources: list[Source], fit_idx: np.ndarray, kind: str) -> dict[str, dict]:
        """External-test or probe sets, one per source, with every image of a training/validation patient
        or a copy of a training/validation image (cropped, padded, rescaled...: cxraug.data.dedupe) dropped and
        counted."""
        from cxraug.data.dedupe import dataset_signatures
        from cxraug.data.stats import fingerprints

        out: dict[str, dict] = {}
        train_patients = {self.ds.patient_ids[i] for i in fit_idx}
        fit_sig = self.sig.subset(fit_idx)
        for s, name in zip(sources, source_names(sources)):
            e, _ = load_labelled([s], self.cfg.size, class_names=self.names, progress=self.progress)
            self._skipped += [*getattr(e, "listing_skipped", []), *e.errors]
            imgs = np.asarray(e.images)
            check_no_synthetic(e.sources, e.paths, where=f"the {kind} set {name}")
            fp, sig = fingerprints(imgs), dataset_signatures(e.paths, imgs)
            keep, n_pat, n_dup = screen_against_training(fp, e.patient_ids, self.fp[fit_idx], train_patients, sig=sig,
                                                         train_sig=fit_sig)  # fmt: skip
            lab = e.label_index[keep]
            out[name] = {"path": s.path, "images": imgs[keep], "fp": fp[keep], "sig": sig.subset(np.flatnonzero(keep)),
                         "y": lab.tolist(),
                         "pos": (lab == self.k_min).tolist(),
                         "patients": [p for p, k in zip(e.patient_ids, keep) if k], "n_loaded": len(imgs),
                         "n": int(keep.sum()), "dropped_same_patient": n_pat, "dropped_near_duplicate": n_dup,
                         "counts": {c: int((lab == k).sum()) for k, c in enumerate(self.names)}}  # fmt: skip
        return out

    # ------------------------------------------------------------------ runs
    def _n_to_add(self, idx: np.ndarray, ratio: float | None = None) -> int:
        """Synthetic minority images the rule asks for: ``equalize``: to the largest class (single-label), or
        its positives to its negatives (multi-label); ``min-fraction:F`` for the minority alone: the closed
        form ceil((F N - c) / (1 - F)) (synthetic-only-full's volume; gan-aug uses :meth:`_min_fraction_set`).
        ``ratio`` (an arm of the ratio axis): that many per real minority training image, rounded."""
        if ratio is not None:
            return round(ratio * int(self.pos[idx].sum()))  # half to even
        if self.fraction is not None:
            f, c = self.fraction, int(self.pos[idx].sum())
            return int(max(np.ceil((f * len(idx) - c) / (1 - f) - 1e-9), 0))
        if self.multilabel:
            return int(max((self.known[idx] & ~self.pos[idx]).sum() - self.pos[idx].sum(), 0))
        counts = np.bincount(self.y[idx], minlength=len(self.names))
        return int(max(counts.max() - counts[self.k_min], 0))

    def targets(self, idx: np.ndarray) -> np.ndarray:
        """Class indices [N] (single-label) or multi-hot vectors [N,K] with NaN = unknown (multi-label)."""
        return self.ds.labels[idx].astype(np.float32) if self.multilabel else self.y[idx]

    def steps_per_epoch(self, regime: float, seed: int) -> int:
        """Optimiser steps per epoch for every protocol of the (regime, seed): the batches of the class-balanced
        training set (the real training images plus the images the augment rule adds), so that real, the controls
        and GAN-aug differ in what they train on, not in how long they train."""
        idx = regime_subset(self.split["train"], self.ds.labels, self.ds.patient_ids, regime, seed=seed)
        return max(1, int(np.ceil((len(idx) + self._n_to_add(idx)) / self.cfg.batch_size)))

    def train_set(self, protocol: str, regime: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, targets, is_synthetic) for one run. ``standard-aug+X`` trains on X's set (the augmentation is
        applied per batch); oversample's repeated real images are not synthetic. An arm of the ratio axis
        (``gan-aug@2x``, ``oversample@2x``) adds that many images per real minority training image."""
        protocol, ratio = split_arm(base_protocol(protocol)[0])
        idx = regime_subset(self.split["train"], self.ds.labels, self.ds.patient_ids, regime, seed=seed)
        x, y = self.images[idx], self.targets(idx)
        syn_flag = np.zeros(len(y), bool)
        if protocol == "oversample":
            xs, ys = self._oversample_set(idx, seed, ratio)
            return np.concatenate([x, xs]), np.concatenate([y, ys]), np.zeros(len(y) + len(ys), bool)
        if protocol == "gan-aug" and self.fraction is not None:
            xs, ys = self._min_fraction_set(idx, regime, seed)
            return (np.concatenate([x, xs]), np.concatenate([y, ys]),
                    np.concatenate([syn_flag, np.ones(len(xs), bool)]))  # fmt: skip
        if protocol in SYNTHETIC_PROTOCOLS:
            if protocol == "gan-aug":
                n_add = self._n_to_add(idx, ratio)
            else:  # replace the real minority: by as many synthetic images, or (full) as many as the largest class
                n_add = int(self.pos[idx].sum()) + (self._n_to_add(idx) if protocol == "synthetic-only-full" else 0)
                keep = ~self.pos[idx]
                x, y, syn_flag = x[keep], y[keep], syn_flag[keep]
            syn = self.synthetic_for(regime, seed)
            syn_lab = self.synthetic_labels(regime, seed)
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(syn), min(n_add, len(syn)), replace=False)
            x = np.concatenate([x, syn[pick]])
            if self.multilabel and syn_lab is not None:  # a conditional generator's own label vectors
                y_syn = syn_lab[pick].astype(np.float32)
            elif self.multilabel:  # positive for the minority label; the other labels of a synthetic image are unknown
                y_syn = np.full((len(pick), len(self.names)), np.nan, np.float32)
                y_syn[:, self.k_min] = 1
            else:
                y_syn = np.full(len(pick), self.k_min)
            y = np.concatenate([y, y_syn])
            syn_flag = np.concatenate([syn_flag, np.ones(len(pick), bool)])
        return x, y, syn_flag

    def _real_pool(self, idx: np.ndarray, k: int, n: int, seed: int) -> np.ndarray:
        """``n`` training rows (indices into the dataset) positive for label k, repeated as evenly as possible:
        consecutive seeded permutations of those rows, so no row is used twice before every row is used once."""
        rows = idx[(np.nan_to_num(self.ds.labels[idx, k]) > 0.5)]
        if n <= 0 or len(rows) == 0:
            return np.zeros(0, np.int64)
        rng = np.random.default_rng([seed, k, 7919])  # its own stream: not the synthetic pools' order
        reps = -(-n // len(rows))
        return np.concatenate([rows[rng.permutation(len(rows))] for _ in range(reps)])[:n]

    def _oversample_set(self, idx: np.ndarray, seed: int, ratio: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The oversample control: real minority training images repeated to exactly the balance gan-aug reaches
        with synthetic ones (``equalize`` or a ratio: as many copies as gan-aug adds; ``min-fraction:F``: the same
        greedy plan, drawing copies of real rows positive for each short label). Returns (images, targets)."""
        if self.fraction is None:
            rows = self._real_pool(idx, self.k_min, self._n_to_add(idx, ratio), seed)
        else:
            bound = min_fraction_pool_size(len(idx), len(self.aug_k), self.fraction)
            pools = {k: self._real_pool(idx, k, bound, seed) for k in self.aug_k}
            for k, r in pools.items():
                if len(r) == 0:
                    raise CXRAugError(f"oversample: no real training image is positive for {self.names[k]!r} to repeat")
            picks = plan_min_fraction(self.ds.labels[idx], self.aug_k, float(self.fraction),
                                      {k: self.ds.labels[r] for k, r in pools.items()})  # fmt: skip
            rows = np.array([pools[k][j] for k, j in picks], np.int64)
        return self.images[rows], self.targets(rows)

    def _pool(self, k: int, regime: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Synthetic candidates for label k: images [M,S,S] and label vectors [M,K] (a conditional
        generator's own; else positive for k, the rest unknown (multi-label) or one-hot k (single-label)),
        in a seeded order."""
        imgs = self.synthetic_for(regime, seed, label=k)
        lab = self.synthetic_labels(regime, seed, label=k)
        if lab is None:
            lab = np.full((len(imgs), len(self.names)), np.nan if self.multilabel else 0, np.float32)
            lab[:, k] = 1
        order = np.random.default_rng([seed, k]).permutation(len(imgs))
        return imgs[order], np.asarray(lab, np.float32)[order]

    def _min_fraction_set(self, idx: np.ndarray, regime: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """gan-aug's synthetic images under ``min-fraction:F`` (Sundaram & Hulkund): the fewest that bring every
        augment label to F of the augmented set, each drawn for one short label and counted for every label
        its vector carries (:func:`~cxraug.classify.assemble.plan_min_fraction`). Returns (images, targets)."""
        pools = {k: self._pool(k, regime, seed) for k in self.aug_k}
        picks = plan_min_fraction(self.ds.labels[idx], self.aug_k, float(self.fraction),
                                  {k: lab for k, (_, lab) in pools.items()})  # fmt: skip
        size = self.images.shape[1:]
        xs = np.stack([pools[k][0][j] for k, j in picks]) if picks else np.zeros((0, *size), self.images.dtype)
        if self.multilabel:
            ys = np.stack([pools[k][1][j] for k, j in picks]) if picks else np.zeros((0, len(self.names)), np.float32)
        else:
            ys = np.array([k for k, _ in picks], dtype=self.y.dtype)
        return xs, ys.astype(np.float32) if self.multilabel else ys

    def _augment_summary(self, y: np.ndarray, syn: np.ndarray) -> dict:
        """The rule, and per augment label: synthetic positives added and its share of the training set."""
        pos = np.nan_to_num(y) > 0.5 if self.multilabel else np.eye(len(self.names), dtype=bool)[y]  # [N,K]
        return {"rule": self.cfg.augment_rule, "labels": [self.names[k] for k in self.aug_k],
                "synthetic_positives": {self.names[k]: int(pos[syn, k].sum()) for k in self.aug_k},
                "train_share": {self.names[k]: float(pos[:, k].mean()) if len(pos) else 0.0 for k in self.aug_k}}  # fmt: skip

    @staticmethod
    def key(protocol: str, regime: float, seed: int) -> str:
        return f"{protocol}-r{regime:g}-s{seed}"

    def fingerprint(self, protocol: str, regime: float, seed: int) -> str:
        """A hash of everything that affects one run: the config fields (less the lists of runs), the
        data and splits, the held-out sets, and the generator checkpoint's bytes for synthetic protocols.
        A finished run whose fingerprint differs is not reused."""
        c = to_dict(self.cfg)
        for k in ("protocols", "regimes", "seeds", "synthetic_ratios", "device", "features", "bootstrap", "margin",
                  "executor", "ray"):
            c.pop(k, None)
        if not c.get("augment_labels") and c.get("augment_rule") == "equalize":  # defaults: older runs' keys stand
            c.pop("augment_labels"), c.pop("augment_rule")
        for section in SECTIONS:  # the gan: block's family sections, when empty: older runs' keys stand
            if isinstance(c.get("gan"), dict) and not c["gan"].get(section):
                c["gan"].pop(section, None)
        synthetic = split_arm(protocol)[0] in SYNTHETIC_PROTOCOLS
        gen = self.generator_hash(regime, seed) if synthetic else None
        blob = json.dumps({"config": c, "run": [protocol, regime, seed], "data": self.data_hash, "generator": gen},
                          sort_keys=True, default=str)  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def _scores(self, prob: np.ndarray) -> np.ndarray:
        # P(minority) [N], in float64: compared with a threshold exactly as result.json's copy is
        return prob[:, self.k_min].astype(np.float64)

    def _evaluate(self, prob: np.ndarray, y: np.ndarray, pos: np.ndarray, thr: float | None) -> dict:
        """Metrics of one set at the run's operating point (binary/multi-label) or by argmax (multi-class)."""
        if thr is None:
            return multiclass_metrics(y, prob, self.names)
        return binary_metrics(pos, self._scores(prob), thr)

    def finished(self, protocol: str, regime: float, seed: int) -> dict | None:
        """The run's stored result if it exists and was made with this run's fingerprint, else None."""
        done = self.dir / "runs" / self.key(protocol, regime, seed) / "result.json"
        if not done.is_file():
            return None
        old = json.loads(done.read_text())
        return old if old.get("fingerprint") == self.fingerprint(protocol, regime, seed) else None

    def run_one(self, protocol: str, regime: float, seed: int) -> dict:
        key = self.key(protocol, regime, seed)
        rdir = self.dir / "runs" / key
        done = rdir / "result.json"
        fp = self.fingerprint(protocol, regime, seed)
        old = self.finished(protocol, regime, seed)
        if old is not None:
            return old
        if done.is_file() and self.progress:
            tqdm.write(f"{key}: its config, data or generator changed since it ran; running it again")
        cfg = self.cfg
        x, y, syn = self.train_set(protocol, regime, seed)
        augment = self._augment_summary(y, syn)
        with torch.random.fork_rng(devices=[]):  # the head's initialisation from the run's seed, not from run order
            torch.manual_seed(seed)
            model, weights = build_classifier(cfg.model, len(self.names))
        v = self.split["val"]
        base, with_aug = base_protocol(protocol)
        aug = standard_augmentation(cfg.standard_aug) if with_aug else False
        cw = balanced_class_weight(y, len(self.names)) if base == "class-weighted" else None
        steps = self.steps_per_epoch(regime, seed)
        t_run = time.perf_counter()
        model, curves = fit_classifier(model, x, y, self.images[v], self.targets(v), epochs=cfg.epochs,
                                       batch_size=cfg.batch_size, lr=cfg.lr, augment=aug, seed=seed, device=cfg.device,
                                       steps_per_epoch=steps, class_weight=cw)  # fmt: skip
        ml = self.multilabel
        # operating point: chosen on validation only, then applied unchanged to every test set
        binary = ml or len(self.names) == 2
        v_all = v
        v = v[self.known[v]]
        v_prob = predict_proba(model, self.images[v], multilabel=ml)
        thr = choose_threshold(self.pos[v], self._scores(v_prob), cfg.operating_point) if binary else None
        # the validation AUC: how the strongest control is chosen, never from the test split
        if binary:
            val_auc = auc_of(self.pos[v], self._scores(v_prob))
        else:
            val_auc = multiclass_metrics(self.y[v_all], predict_proba(model, self.images[v_all]), self.names)["macro_auc"]
        te = self.split["test"]
        te = te[self.known[te]]  # multi-label: where the minority label is recorded (single-label: all)
        prob = predict_proba(model, self.images[te], multilabel=ml)
        metrics = self._evaluate(prob, self.y[te], self.pos[te], thr)
        label_prob, label_true = {}, {}
        if ml:  # the minority label as a binary task + per-label AUC
            metrics.update(multilabel_auc(self.ds.labels[te], prob, self.names))
            for k in self.aug_k[1:]:  # every other augmented label: its own scores, for a verdict per label
                te_k = self.split["test"][~np.isnan(self.ds.labels[self.split["test"], k])]
                p_k = predict_proba(model, self.images[te_k], multilabel=True)[:, k].astype(np.float64)
                label_prob[self.names[k]] = p_k.tolist()
                label_true[self.names[k]] = (self.ds.labels[te_k, k] == 1).astype(int).tolist()
        ext, ext_prob, ext_true, parts = {}, {}, {}, []
        for name, e in self.external.items():
            p = predict_proba(model, e["images"], multilabel=ml) if e["n"] else np.zeros((0, len(self.names)))
            y_e, pos_e = np.asarray(e["y"], int), np.asarray(e["pos"], bool)
            ext[name] = self._evaluate(p, y_e, pos_e, thr) if e["n"] else {}
            ext_prob[name], ext_true[name] = self._scores(p).tolist(), pos_e.astype(int).tolist()
            parts.append((p, y_e, pos_e))
        if self.external:  # every external source together, at the same operating point
            p_all, y_all, pos_all = (np.concatenate(a) for a in zip(*parts))
            ext["pooled"] = self._evaluate(p_all, y_all, pos_all, thr) if len(y_all) else {}
        probe = {}
        for name, e in self.probe.items():
            p = predict_proba(model, e["images"], multilabel=ml) if e["n"] else np.zeros((0, len(self.names)))
            called = self._scores(p) >= thr if thr is not None else p.argmax(1) == self.k_min
            probe[name] = {"n": e["n"], "counts": e["counts"], "fraction_called_positive": float(called.mean()) if e["n"] else float("nan"),
                           "median_score": float(np.median(self._scores(p))) if e["n"] else float("nan")}  # fmt: skip
        res = {"key": key, "protocol": protocol, "ratio": split_arm(protocol)[1], "regime": regime, "seed": seed,
               "model": cfg.model,
               "weights": weights, "n_train": len(y), "n_synthetic": int(syn.sum()), "curves": curves,
               # where the run's time went (not part of any result: two executors compare everything else)
               "seconds": {**curves.pop("seconds"), "total": time.perf_counter() - t_run},
               "optimizer_steps": steps * cfg.epochs, "class_weight": None if cw is None else cw.tolist(),
               "validation": {"auc": val_auc},
               "operating_point": cfg.operating_point if binary else "argmax", "threshold": thr,
               "metrics": metrics, "external": ext, "probe": probe, "fingerprint": fp, "augment": augment,
               "test_prob": self._scores(prob).tolist(), "test_true": self.pos[te].astype(int).tolist(),
               "external_prob": ext_prob, "external_true": ext_true}  # fmt: skip
        if label_prob:
            res["test_prob_labels"], res["test_true_labels"] = label_prob, label_true
        rdir.mkdir(parents=True, exist_ok=True)
        if seed == cfg.seeds[0]:
            save_checkpoint({"state_dict": model.state_dict()}, rdir / "model.pt")
        write_json(done, res)  # written last: its presence marks the run complete
        return res

    def run(self) -> dict:
        self.prepare()
        cfg = self.cfg
        jobs = [(p, r, s) for r in cfg.regimes for p in study_arms(cfg.protocols, cfg.synthetic_ratios) for s in cfg.seeds]
        def stamp(j: tuple) -> int | None:
            f = self.dir / "runs" / self.key(*j) / "result.json"
            return f.stat().st_mtime_ns if f.is_file() else None

        before = {j: stamp(j) for j in jobs}
        results = run_grid(self, jobs, self.progress)
        n_new = sum(stamp(j) != t for j, t in before.items())  # runs made (or made again) now
        if self.syn is None and cfg.gan:
            self.syn = self.synthetic_for(max(cfg.regimes), cfg.seeds[0])
        data = json.loads((self.dir / "data.json").read_text())
        groups = {"internal": data["test_patients"]}
        for lab, pats in data.get("test_patients_by_label", {}).items():
            groups[f"internal:{lab}"] = pats
        for n, e in self.external.items():
            groups[f"external:{n}"] = [f"{n}/{p}" for p in e["patients"]]
        summary = aggregate(results, cfg, groups=groups, confounding=self.confounding,
                            patients_known=self.patients_known, power=data.get("power"),
                            generator_note=self.generator_note())  # fmt: skip
        write_json(self.dir / "results.json", {"config": load_config_dict(self.dir), "summary": summary,
                                               "runs": [{k: v for k, v in r.items() if k not in RAW_KEYS}
                                                        for r in results]})  # fmt: skip
        if n_new or not (self.dir / "report_inputs.npz").is_file():  # nothing rerun: the explanations stand
            self.save_report_inputs()
        return summary

    def save_report_inputs(self, cap: int = 2000) -> dict:
        """What the report shows besides the run results, computed here so that ``cxraug report`` reads only
        the study folder: Grad-CAM and UMAP of the top regime's first-seed model (GAN-aug if run), image
        quality and memorization of the synthetic images (see :mod:`cxraug.classify.explain`)."""
        from cxraug.classify.explain import save_explanations

        top, s0 = max(self.cfg.regimes), self.cfg.seeds[0]
        te, tr = self.split["test"], self.split["train"]
        arms = study_arms(self.cfg.protocols, self.cfg.synthetic_ratios)
        gan = [a for a in arms if split_arm(a)[0] == "gan-aug"]
        # the GAN-aug model (the arm nearest one synthetic image per real one on a ratio axis), else the first arm
        protocol = min(gan, key=lambda a: abs(np.log(split_arm(a)[1] or 1.0))) if gan else arms[0]
        x, y, syn = self.train_set((protocol if gan else "gan-aug") if self.syn is not None else "real", top, s0)
        if self.multilabel:  # colour by the minority label
            y = (np.nan_to_num(y[:, self.k_min]) == 1).astype(int)
        pick = np.sort(np.random.default_rng(0).permutation(len(x))[:cap])
        tr_min = tr[self.pos[tr]]
        return save_explanations(self.dir, self.model(self.key(protocol, top, s0)), self.k_min,
                                 test_minority=self.images[te][self.pos[te]], synthetic=self.syn,
                                 train_minority=self.images[tr_min], umap_x=x[pick],
                                 umap_y=y[pick].astype(np.int64), umap_synthetic=syn[pick],
                                 features=self.cfg.features, progress=self.progress,
                                 train_patients=[self.ds.patient_ids[i] for i in tr_min])  # fmt: skip

    def model(self, key: str) -> torch.nn.Module:
        m, _ = build_classifier(self.cfg.model, len(self.names), pretrained=False)
        m.load_state_dict(load_checkpoint(self.dir / "runs" / key / "model.pt")["state_dict"])
        return m.eval()
