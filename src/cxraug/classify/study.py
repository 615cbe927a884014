"""The benchmark: does GAN augmentation help? {real, standard-aug, gan-aug, synthetic-only} x
data regimes x seeds, on one fixed, real-only, patient-level test split. Resumable: each finished
run is a ``runs/<key>/result.json`` and is not redone."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxraug.classify.metrics import binary_metrics, mean_ci, multiclass_metrics, multilabel_auc, paired_comparison
from cxraug.classify.models import build_classifier
from cxraug.classify.train import fit_classifier, predict_proba
from cxraug.config import load_config, save_config, to_dict
from cxraug.data.cache import CachedDataset, build_cache
from cxraug.data.preprocess import Preprocess
from cxraug.data.sample import Collection
from cxraug.data.source import open_source
from cxraug.data.splits import (
    NEAR_DUPLICATE_BITS,
    check_no_synthetic,
    check_patient_disjoint,
    near_duplicates_in_test,
    patient_split,
    regime_subset,
)
from cxraug.errors import CXRAugError, LeakageError, show_path
from cxraug.io import crash_hook, load_checkpoint, save_checkpoint, write_json
from cxraug.train.config import TrainConfig, preset
from cxraug.train.engine import Trainer

PROTOCOLS = ("real", "standard-aug", "gan-aug", "synthetic-only")


@dataclass
class Source:
    path: str
    label: str | None = None  # class name for a flat folder (e.g. covid-cxnet -> covid)


@dataclass
class GanSpec:
    """A generator the study trains itself, once per distinct minority training set (each regime,
    and each seed's subset below 100 %), on exactly that run's minority training images: the GAN
    never sees a validation or test image, and the 10 % regime's GAN sees only that 10 %."""

    preset: str = "dcgan-64"
    steps: int = 1000
    width: int = 32
    batch_size: int = 64
    diffaug: str = "translation,cutout"  # limited data (Zhao et al., DiffAugment)
    seed: int = 0
    overrides: list[str] = field(default_factory=list)  # more TrainConfig fields, "key=value"


@dataclass
class StudyConfig:
    sources: list[Source] = field(default_factory=lambda: [Source("phantom:normal=240,covid=48")])
    size: int = 64
    minority: str = "covid"
    generator: str | None = None  # a checkpoint trained on the minority class, used for every run ...
    gan: GanSpec | None = None  # ... or let the study train its own generators (leak-free by construction)
    model: str = "lightweight"
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    regimes: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.5, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    split_seed: int = 0
    # Simulate the rare-disease case: keep only enough minority training patients for the minority to be
    # this share of the training split (e.g. 0.2); val/test keep their natural balance. None = as is.
    minority_share: float | None = None
    features: str = "auto"  # feature extractor for the report's FID/KID/PR and memorization audit
    dedupe: bool = True  # drop test images that (near-)duplicate a training image
    device: str = "cpu"


def load_study_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> StudyConfig:
    return load_config(StudyConfig, path, overrides)


def load_sources(cfg: StudyConfig, progress: bool = True) -> CachedDataset:
    """One dataset from the study's sources: folders/phantoms (one class each, or folder-per-class) or
    one multi-label CSV manifest (CheXpert style; its label vectors are kept as they are)."""
    samples, names = [], []
    colls: list[tuple[Collection, str | None]] = []
    for s in cfg.sources:
        c = open_source(s.path, size=max(cfg.size, 64))
        colls.append((c, s.label))
        names += [s.label] if s.label else c.class_names
    if any(c.multilabel for c, _ in colls):
        if len(colls) != 1:
            raise CXRAugError("a multi-label study takes exactly one source (a CSV manifest with label columns)")
        return build_cache(colls[0][0], Preprocess(cfg.size), progress=progress)
    names = sorted(set(names))
    for c, label in colls:
        for smp in c.samples:
            lab = np.zeros(len(names), np.float32)
            lab[names.index(label or c.class_names[smp.label_index])] = 1
            smp.labels = lab
            samples.append(smp)
    merged = Collection(samples, names, root="+".join(s.path for s in cfg.sources))
    return build_cache(merged, Preprocess(cfg.size), progress=progress)


def check_generator_unseen(checkpoint: str | os.PathLike, test_fp: np.ndarray) -> int:
    """Raise :class:`LeakageError` if the generator was trained on (near-duplicates of) test images.

    Returns how many training images the checkpoint records (0 if it records none: older checkpoints).
    """
    from cxraug.data.stats import min_hamming

    st = load_checkpoint(checkpoint)
    seen = st.get("train_phash")
    if seen is None:
        return 0
    d = min_hamming(test_fp, seen.numpy())
    n = int((d <= NEAR_DUPLICATE_BITS).sum())
    if n:
        raise LeakageError(
            f"the generator {show_path(checkpoint)} was trained on {n} image(s) of this study's test split; "
            "its synthetic images would leak the test set into training. Train it on the study's training "
            "split only, or replace `generator:` by a `gan:` block so the study trains its own"
        )
    return len(seen)


class Study:
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
            sp["train"], n_unused = self._reduce_minority(sp["train"], cfg.minority_share)
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

    def _reduce_minority(self, train: np.ndarray, share: float) -> tuple[np.ndarray, int]:
        """Drop minority training patients (seeded) until the minority is ``share`` of the training split."""
        if not 0 < share < 1:
            raise CXRAugError(f"minority_share must be in (0, 1), got {share}")
        is_min = self.pos[train]
        n_other = int((~is_min).sum())
        target = max(1, round(share * n_other / (1 - share)))
        if is_min.sum() <= target:
            return train, 0
        pids = sorted({self.ds.patient_ids[i] for i in train[is_min]})
        order = np.random.default_rng(self.cfg.split_seed).permutation(len(pids))
        keep_p, n = set(), 0
        count = {p: 0 for p in pids}
        for i in train[is_min]:
            count[self.ds.patient_ids[i]] += 1
        for j in order:
            if n >= target:
                break
            keep_p.add(pids[j])
            n += count[pids[j]]
        keep = ~is_min | np.array([self.ds.patient_ids[i] in keep_p for i in train])
        return train[keep], int((~keep).sum())

    def _minority_train(self, regime: float, seed: int) -> np.ndarray:
        idx = regime_subset(self.split["train"], self.ds.labels, self.ds.patient_ids, regime, seed)
        return idx[self.pos[idx]]

    def generator_for(self, regime: float, seed: int) -> str:
        """The checkpoint whose samples augment the (regime, seed) run; trains it first if needed."""
        if self.cfg.generator:
            return self.cfg.generator
        mins = self._minority_train(regime, seed)
        key = hashlib.sha1(mins.astype(np.int64).tobytes()).hexdigest()[:12]
        gdir = self.dir / "gans" / f"{self.cfg.minority}-{len(mins)}-{key}"
        ckpt = gdir / "checkpoints" / "last.pt"
        spec = self.cfg.gan
        assert spec is not None
        tcfg = load_config(TrainConfig, None, [f"width={spec.width}", f"steps={spec.steps}",
                                               f"batch_size={min(spec.batch_size, len(mins))}",
                                               f"diffaug={spec.diffaug}", f"seed={spec.seed}",
                                               f"data.size={self.cfg.size}", f"data.path=study:{len(mins)} "
                                               f"{self.cfg.minority} training images", *spec.overrides],
                           base=preset(spec.preset))  # fmt: skip
        if str(ckpt) in self._syn_cache or (ckpt.is_file() and load_checkpoint(ckpt)["step"] >= tcfg.steps):
            return str(ckpt)  # trained (checked once per study: the step check loads the whole checkpoint)
        if self.progress:
            tqdm.write(f"training {spec.preset} on {len(mins)} {self.cfg.minority} training images -> {gdir}")
        tr = Trainer(tcfg, self.ds.subset(mins), gdir, progress=self.progress)
        if ckpt.is_file():  # interrupted: continue exactly where it stopped
            tr.load_state_dict(load_checkpoint(ckpt))
        tr.fit()
        return str(ckpt)

    def synthetic_for(self, regime: float, seed: int) -> np.ndarray:
        """Enough synthetic minority images for any protocol of this (regime, seed), uint8 [N,S,S]."""
        from cxraug.data.preprocess import resize
        from cxraug.report.figures import save_grid
        from cxraug.synth.generate import generate

        ckpt = self.generator_for(regime, seed)
        if ckpt in self._syn_cache:
            return self._syn_cache[ckpt]
        need = max(self._n_to_add(self.split["train"]), int(self.pos[self.split["train"]].sum()), 1)
        path = Path(ckpt).parent.parent / "synthetic.npy" if self.cfg.gan else self.dir / "synthetic.npy"
        if path.is_file() and len(np.load(path, mmap_mode="r")) >= need:
            imgs = np.load(path)
        else:
            imgs, _, _ = generate(ckpt, need, seed=1234)
            if imgs.shape[-1] != self.cfg.size:
                imgs = np.stack([resize(i, self.cfg.size, "direct") for i in imgs])
            np.save(path, imgs)
            if self.cfg.generator or not (self.dir / "synthetic_samples.png").is_file():
                save_grid(imgs[:64], self.dir / "synthetic_samples.png")
        self._syn_cache[ckpt] = imgs
        return imgs

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


def load_config_dict(d: Path) -> dict:
    from cxraug.config import load_yaml

    return load_yaml((d / "config.yaml").read_text())


METRIC_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "auc", "false_negatives")


def aggregate(results: list[dict], cfg: StudyConfig) -> dict:
    table: dict = {}
    for r in results:
        table.setdefault(str(r["regime"]), {}).setdefault(r["protocol"], []).append(r)
    out: dict = {"table": {}, "paired_gan_vs_standard": {}}
    for regime, by_p in table.items():
        out["table"][regime] = {}
        for p, runs in by_p.items():
            m = [r["metrics"] for r in sorted(runs, key=lambda r: r["seed"])]
            keys = METRIC_KEYS if "auc" in m[0] else ("accuracy", "macro_f1", "macro_auc")
            keys = (*keys, "macro_auc") if "auc" in m[0] and "macro_auc" in m[0] else keys  # multi-label
            out["table"][regime][p] = {k: mean_ci([x.get(k, float("nan")) for x in m]) for k in keys}
        if "gan-aug" in by_p and "standard-aug" in by_p:
            ga = sorted(by_p["gan-aug"], key=lambda r: r["seed"])
            sa = sorted(by_p["standard-aug"], key=lambda r: r["seed"])
            key = "auc" if "auc" in ga[0]["metrics"] else "macro_auc"
            out["paired_gan_vs_standard"][regime] = {
                k: paired_comparison([r["metrics"][k] for r in ga], [r["metrics"][k] for r in sa])
                for k in (key, "recall" if key == "auc" else "accuracy")
            }
    return out
