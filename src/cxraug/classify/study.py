"""The benchmark: does GAN augmentation help? {real, standard-aug, gan-aug, synthetic-only} x
data regimes x seeds, on one fixed, real-only, patient-level test split. Resumable: each finished
run is a ``runs/<key>/result.json`` and is not redone.

This module runs the study; its parts live beside it: :mod:`~cxraug.classify.config` (the
dataclasses), :mod:`~cxraug.classify.assemble` (data assembly and leakage checks),
:mod:`~cxraug.classify.generators` (generators and their synthetic images) and
:mod:`~cxraug.classify.aggregate` (summaries across seeds)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxraug.classify.aggregate import METRIC_KEYS, aggregate
from cxraug.classify.assemble import check_generator_unseen, load_sources, reduce_minority
from cxraug.classify.config import (
    PROTOCOLS,
    GanSpec,
    Source,
    StudyConfig,
    load_config_dict,
    load_study_config,
)
from cxraug.classify.generators import StudyGenerators
from cxraug.classify.metrics import binary_metrics, multiclass_metrics, multilabel_auc
from cxraug.classify.models import build_classifier
from cxraug.classify.train import fit_classifier, predict_proba
from cxraug.config import save_config, to_dict
from cxraug.data.splits import (
    check_no_synthetic,
    check_patient_disjoint,
    near_duplicates_in_test,
    patient_split,
    regime_subset,
)
from cxraug.errors import CXRAugError
from cxraug.io import crash_hook, load_checkpoint, save_checkpoint, write_json

__all__ = ["METRIC_KEYS", "PROTOCOLS", "GanSpec", "Source", "Study", "StudyConfig", "aggregate",
           "check_generator_unseen", "load_config_dict", "load_sources", "load_study_config"]  # fmt: skip


class Study(StudyGenerators):
    def __init__(self, cfg: StudyConfig, out: str | os.PathLike, progress: bool = True):
        self.cfg, self.dir, self.progress = cfg, Path(out), progress
        if cfg.generator is None and cfg.gan is None and {"gan-aug", "synthetic-only"} & set(cfg.protocols):
            raise CXRAugError(
                "protocols gan-aug/synthetic-only need `generator: CHECKPOINT` or a `gan:` block in the study config"
            )
        if cfg.generator and cfg.gan:
            raise CXRAugError("give either `generator:` or `gan:` in the study config, not both")
        bad = set(cfg.protocols) - set(PROTOCOLS)
        if bad:
            raise CXRAugError(f"unknown protocols {sorted(bad)}; choose from {PROTOCOLS}")

    def prepare(self) -> None:
        cfg = self.cfg
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.dir / "config.yaml")
        ds = load_sources(cfg, self.progress)
        if cfg.minority not in ds.class_names:
            raise CXRAugError(f"minority class {cfg.minority!r} not in {ds.class_names}")
        self.ds, self.names = ds, ds.class_names
        self.k_min = ds.class_names.index(cfg.minority)
        self.multilabel = ds.multilabel
        self.y = ds.label_index  # class index (single-label); for multi-label the targets are ds.labels
        lab_k = np.nan_to_num(ds.labels[:, self.k_min], nan=-1.0)
        self.pos = lab_k == 1 if self.multilabel else self.y == self.k_min  # minority-positive images
        self.known = lab_k >= 0 if self.multilabel else np.ones(len(ds), bool)  # minority label recorded
        sp = patient_split(ds.labels, ds.patient_ids, tuple(cfg.split), cfg.split_seed, ds.sources, ds.paths)
        check_patient_disjoint(ds.patient_ids, sp)
        n_unused = 0
        if cfg.minority_share is not None:
            sp["train"], n_unused = reduce_minority(
                sp["train"], self.pos, ds.patient_ids, cfg.minority_share, cfg.split_seed
            )
        n_dupes = 0
        from cxraug.data.stats import fingerprints

        self.images = np.asarray(ds.images)
        self.fp = fingerprints(self.images)
        if cfg.dedupe:  # drop test images that (near-)duplicate a training image
            dup = near_duplicates_in_test(self.fp, sp)
            sp["test"], n_dupes = sp["test"][~dup], int(dup.sum())
        check_no_synthetic([ds.sources[i] for i in sp["test"]], [ds.paths[i] for i in sp["test"]])
        self.split = sp
        gen_seen = check_generator_unseen(cfg.generator, self.fp[sp["test"]]) if cfg.generator else None
        self._syn_cache: dict[str, np.ndarray] = {}
        self.syn = self.synthetic_for(max(cfg.regimes), cfg.seeds[0]) if (cfg.generator or cfg.gan) else None
        write_json(self.dir / "data.json", {
            "classes": self.names, "minority": cfg.minority, "counts": ds.counts(),
            "multilabel": self.multilabel,
            "split_counts": {k: {c: int((np.nan_to_num(ds.labels[v, i]) > 0.5).sum()) for i, c in enumerate(self.names)}
                             for k, v in sp.items()},
            "test_duplicates_removed": n_dupes, "minority_train_unused": n_unused, "sources": [s.__dict__ for s in cfg.sources],
            "patients": len(set(ds.patient_ids)), "errors": ds.errors,
            "generator": ({"checkpoint": cfg.generator, "training_images_checked": gen_seen} if cfg.generator
                          else {"trained_by_study": to_dict(cfg.gan)} if cfg.gan else None),
        })  # fmt: skip

    # ------------------------------------------------------------------ runs
    def _n_to_add(self, idx: np.ndarray) -> int:
        """Synthetic images that equalize the minority: to the largest class (single-label), or its
        positives to its negatives (multi-label)."""
        if self.multilabel:
            return int(max((self.known[idx] & ~self.pos[idx]).sum() - self.pos[idx].sum(), 0))
        counts = np.bincount(self.y[idx], minlength=len(self.names))
        return int(max(counts.max() - counts[self.k_min], 0))

    def targets(self, idx: np.ndarray) -> np.ndarray:
        """Class indices [N] (single-label) or multi-hot vectors [N,K] with NaN = unknown (multi-label)."""
        return self.ds.labels[idx].astype(np.float32) if self.multilabel else self.y[idx]

    def train_set(self, protocol: str, regime: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, targets, is_synthetic) for one run."""
        idx = regime_subset(self.split["train"], self.ds.labels, self.ds.patient_ids, regime, seed)
        x, y = self.images[idx], self.targets(idx)
        syn_flag = np.zeros(len(y), bool)
        if protocol in ("gan-aug", "synthetic-only"):
            if protocol == "gan-aug":
                n_add = self._n_to_add(idx)
            else:  # replace the real minority by the same number of synthetic images
                keep = ~self.pos[idx]
                x, y, syn_flag = x[keep], y[keep], syn_flag[keep]
                n_add = int(self.pos[idx].sum())
            syn = self.synthetic_for(regime, seed)
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(syn), min(n_add, len(syn)), replace=False)
            x = np.concatenate([x, syn[pick]])
            if self.multilabel:  # positive for the minority label; the other labels of a synthetic image are unknown
                y_syn = np.full((len(pick), len(self.names)), np.nan, np.float32)
                y_syn[:, self.k_min] = 1
            else:
                y_syn = np.full(len(pick), self.k_min)
            y = np.concatenate([y, y_syn])
            syn_flag = np.concatenate([syn_flag, np.ones(len(pick), bool)])
        return x, y, syn_flag

    @staticmethod
    def key(protocol: str, regime: float, seed: int) -> str:
        return f"{protocol}-r{regime:g}-s{seed}"

    def run_one(self, protocol: str, regime: float, seed: int) -> dict:
        key = self.key(protocol, regime, seed)
        rdir = self.dir / "runs" / key
        done = rdir / "result.json"
        if done.is_file():
            import json

            return json.loads(done.read_text())
        x, y, syn = self.train_set(protocol, regime, seed)
        model, weights = build_classifier(self.cfg.model, len(self.names))
        v = self.split["val"]
        model, curves = fit_classifier(model, x, y, self.images[v], self.targets(v), self.cfg.epochs, self.cfg.batch_size,
                                       self.cfg.lr, augment=protocol == "standard-aug", seed=seed,
                                       device=self.cfg.device)  # fmt: skip
        te = self.split["test"]
        te = te[self.known[te]]  # multi-label: where the minority label is recorded (single-label: all)
        prob = predict_proba(model, self.images[te], multilabel=self.multilabel)
        if self.multilabel:  # the minority label as a binary task + per-label AUC
            metrics = {**binary_metrics(self.pos[te], prob[:, self.k_min]),
                       **multilabel_auc(self.ds.labels[te], prob, self.names)}  # fmt: skip
        elif len(self.names) == 2:
            metrics = binary_metrics(self.pos[te], prob[:, self.k_min])
        else:
            metrics = multiclass_metrics(self.y[te], prob, self.names)
        res = {"key": key, "protocol": protocol, "regime": regime, "seed": seed, "model": self.cfg.model,
               "weights": weights, "n_train": len(y), "n_synthetic": int(syn.sum()), "curves": curves,
               "metrics": metrics, "test_prob": prob[:, self.k_min].tolist(),
               "test_true": self.pos[te].astype(int).tolist()}  # fmt: skip
        rdir.mkdir(parents=True, exist_ok=True)
        if seed == self.cfg.seeds[0]:
            save_checkpoint({"state_dict": model.state_dict()}, rdir / "model.pt")
        write_json(done, res)  # written last: its presence marks the run complete
        return res

    def run(self) -> dict:
        self.prepare()
        cfg = self.cfg
        jobs = [(p, r, s) for r in cfg.regimes for p in cfg.protocols for s in cfg.seeds]
        results, n_new = [], 0
        for job in tqdm(jobs, desc="benchmark", unit="run", disable=not self.progress):
            done = (self.dir / "runs" / self.key(*job) / "result.json").is_file()
            results.append(self.run_one(*job))
            if not done:
                n_new += 1
                crash_hook("after-run", n_new)
        summary = aggregate(results, cfg)
        write_json(self.dir / "results.json", {"config": load_config_dict(self.dir), "summary": summary,
                                               "runs": [{k: v for k, v in r.items() if k not in ("test_prob", "test_true")}
                                                        for r in results]})  # fmt: skip
        return summary

    def model(self, key: str) -> torch.nn.Module:
        m, _ = build_classifier(self.cfg.model, len(self.names), pretrained=False)
        m.load_state_dict(load_checkpoint(self.dir / "runs" / key / "model.pt")["state_dict"])
        return m.eval()
