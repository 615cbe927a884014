"""Generator handling for the study: which checkpoint augments a (regime, seed) run, training it
on exactly that run's minority training images when the study trains its own, and the cached
synthetic images drawn from it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxraug.classify.assemble import min_fraction_pool_size
from cxraug.classify.config import GanSpec
from cxraug.config import load_config, to_dict
from cxraug.data.splits import regime_subset
from cxraug.errors import CXRAugError
from cxraug.families import GeneratorArtifact
from cxraug.io import load_checkpoint
from cxraug.train.config import SECTIONS, TrainConfig, preset
from cxraug.train.engine import Trainer


def gan_seed(spec: GanSpec, regime: float, seed: int, *, per_run: bool = True) -> int:
    """The seed a study's generator for the (regime, seed) run trains with: ``per_run``, one derived from the run
    key and the `gan:` block's seed (BLAKE2b, so neighbouring runs get unrelated streams and the seed never
    depends on the order runs are scheduled in); else the block's seed for every run."""
    if not per_run:
        return spec.seed
    h = hashlib.blake2b(f"study-gan/{spec.seed}/{regime:g}/{seed}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") % (2**31 - 1)


def gan_train_config(spec: GanSpec, size: int, *, minority: str = "minority", n_images: int = 0,
                     seed: int | None = None) -> TrainConfig:  # fmt: skip
    """The training config of a study's `gan:` block for ``n_images`` minority training images (the batch
    is capped at that many; 0: not known yet, no cap); ``seed``: the generator's (default the block's)."""
    batch = min(spec.batch_size, n_images) if n_images else spec.batch_size
    seed = spec.seed if seed is None else seed
    return load_config(TrainConfig, overrides=[f"width={spec.width}", f"steps={spec.steps}", f"batch_size={batch}",
                                           f"diffaug={spec.diffaug}", f"seed={seed}", f"data.size={size}",
                                           f"data.path=study:{n_images} {minority} training images",
                                           "epochs=0",  # length in steps
                                           *[f"{name}={json.dumps(getattr(spec, name))}" for name in SECTIONS
                                             if getattr(spec, name, None)],  # a section as one value
                                           *spec.overrides],
                       base=preset(spec.preset))  # fmt: skip


class StudyGenerators:
    """Mixed into :class:`cxraug.classify.study.Study`; uses its ``cfg``, ``dir``, ``ds``, ``split``,
    ``pos`` and ``progress`` and its ``_n_to_add``."""

    def _minority_train(self, regime: float, seed: int) -> np.ndarray:
        """The (regime, seed) training images positive for the minority, or for any of several augment labels
        (a conditional generator then learns each label's rows)."""
        idx = regime_subset(self.split["train"], self.ds.labels, self.ds.patient_ids, regime, seed=seed)
        if len(self.aug_k) > 1:
            return idx[(np.nan_to_num(self.ds.labels[idx][:, self.aug_k]) > 0.5).any(1)]
        return idx[self.pos[idx]]

    def generator_for(self, regime: float, seed: int) -> str:
        """The checkpoint whose samples augment the (regime, seed) run; trains it first if needed. With
        ``generator_seeds: per-run`` (the default) every (regime, seed) has a generator of its own, so the seeds'
        spread holds the generator's training variance as well as the classifier's."""
        if self.cfg.generator:
            return self.cfg.generator
        spec = self.cfg.gan
        assert spec is not None
        gdir, tcfg, mins = self.gan_plan(regime, seed)
        ckpt = gdir / "checkpoints" / "last.pt"
        if self.generator_ready(regime, seed):
            return str(ckpt)
        if self.progress:
            tqdm.write(f"training {spec.preset} on {len(mins)} {self.cfg.minority} training images -> {gdir}")
        tr = Trainer(tcfg, self.ds.subset(mins), gdir, progress=self.progress)
        if ckpt.is_file():  # interrupted: continue exactly where it stopped
            tr.load_state_dict(load_checkpoint(ckpt))
        tr.fit()
        return str(ckpt)

    def gan_plan(self, regime: float, seed: int) -> tuple[Path, TrainConfig, np.ndarray]:
        """(its folder, its training config, its training rows) of the study's generator for the (regime, seed)
        run. The folder is keyed by the training images and the config (less the step count, so more steps
        continue it): runs that share a training set and a seed share a generator."""
        mins = self._minority_train(regime, seed)
        spec = self.cfg.gan
        assert spec is not None
        per_run = self.cfg.generator_seeds == "per-run"
        tcfg = gan_train_config(spec, self.cfg.size, minority=self.cfg.minority, n_images=len(mins),
                                seed=gan_seed(spec, regime, seed, per_run=per_run))  # fmt: skip
        h = hashlib.sha1(mins.astype(np.int64).tobytes())
        h.update(repr(sorted((k, str(v)) for k, v in to_dict(tcfg).items() if k != "steps")).encode())
        return self.dir / "gans" / f"{self.cfg.minority}-{len(mins)}-{h.hexdigest()[:12]}", tcfg, mins

    def generator_ready(self, regime: float, seed: int) -> bool:
        """Whether the (regime, seed) run's generator exists, trained to its steps (a `generator:` checkpoint
        always is); checked once per study: the step check loads the whole checkpoint."""
        if self.cfg.generator:
            return True
        gdir, tcfg, _ = self.gan_plan(regime, seed)
        ckpt = gdir / "checkpoints" / "last.pt"
        ready = self.__dict__.setdefault("_ready", set())
        if str(ckpt) in ready or str(ckpt) in self._syn_cache:
            return True
        if ckpt.is_file() and GeneratorArtifact.load(ckpt).step >= tcfg.steps:
            ready.add(str(ckpt))
            return True
        return False

    def _majority_train_images(self) -> np.ndarray:
        """What a translating generator (CycleGAN) turns into minority images, each once (Zunair & Hamza):
        the training split's largest other class (single-label), or its minority-negative images (multi-label)."""
        train = self.split["train"]
        if self.multilabel:
            return np.asarray(self.ds.images[np.sort(train[self.known[train] & ~self.pos[train]])])
        counts = np.bincount(self.y[train], minlength=len(self.names))
        counts[self.k_min] = -1
        return np.asarray(self.ds.images[np.sort(train[self.y[train] == int(counts.argmax())])])

    def synthetic_for(self, regime: float, seed: int, label: int | None = None) -> np.ndarray:
        """Enough synthetic minority images for any protocol of this (regime, seed), uint8 [N,S,S]: as many
        as the largest class has (synthetic-only at full volume), at least the real minority count, and
        under ``min-fraction:F`` as many as the rule can draw (:func:`min_fraction_pool_size`). ``label``: the
        index of another augment label, drawn from a conditional generator."""
        from cxraug.data.preprocess import resize
        from cxraug.plotting import save_grid
        from cxraug.synth.generate import describe, generate

        ckpt = self.generator_for(regime, seed)
        other = label is not None and label != self.k_min
        key = f"{ckpt}#label{label}" if other else ckpt
        if key in self._syn_cache:
            return self._syn_cache[key]
        train = self.split["train"]
        need = 1 if other else max(self._n_to_add(train) + int(self.pos[train].sum()), 1)
        if self.cfg.synthetic_ratios and not other:  # the largest dose of the ratio axis
            need = max(need, self._n_to_add(train, max(self.cfg.synthetic_ratios)))
        if self.fraction is not None:
            need = max(need, min_fraction_pool_size(len(train), len(self.aug_k), self.fraction))
        name = f"synthetic-{self.generator_hash(regime, seed)[:16]}"  # keyed by the checkpoint's bytes
        if other:
            if not describe(ckpt)["conditional"]:
                raise CXRAugError(f"augment label {self.names[label]!r}: the generator {ckpt} is not conditional "
                                  f"and makes only {self.cfg.minority!r} images")  # fmt: skip
            name += f"-label{label}"
        path = (Path(ckpt).parent.parent if self.cfg.gan else self.dir) / f"{name}.npy"
        lab_path = path.with_name(f"{name}.labels.npy")
        if path.is_file() and len(np.load(path, mmap_mode="r")) >= need:
            imgs = np.load(path)
        else:
            # a conditional generator: label vectors drawn from its real training rows positive for the label
            imgs, labs, info = generate(ckpt, need, seed=1234, label=self.names[label] if other else self.cfg.minority,
                                        source=self._majority_train_images())  # fmt: skip
            if imgs.shape[-1] != self.cfg.size:
                imgs = np.stack([resize(i, self.cfg.size, "direct") for i in imgs])
            np.save(path, imgs)
            if info["conditional"] and list(info["class_names"]) == list(self.names):
                np.save(lab_path, labs)
            if not other and (self.cfg.generator or not (self.dir / "synthetic_samples.png").is_file()):
                save_grid(imgs[:64], self.dir / "synthetic_samples.png")
        self._syn_cache[key] = imgs
        self._syn_labels[key] = np.load(lab_path) if lab_path.is_file() else None
        if other and self._syn_labels[key] is None:
            raise CXRAugError(f"augment label {self.names[label]!r}: the generator {ckpt} is not conditional on the "
                              f"study's labels {self.names}")  # fmt: skip
        return imgs

    def synthetic_labels(self, regime: float, seed: int, label: int | None = None) -> np.ndarray | None:
        """Label vectors [N,K] of :meth:`synthetic_for`'s images when a conditional generator over the study's
        classes made them (sampled from the training distribution of images positive for the minority, or
        for ``label``), else None."""
        self.synthetic_for(regime, seed, label)
        ckpt = self.generator_for(regime, seed)
        return self._syn_labels[f"{ckpt}#label{label}" if label is not None and label != self.k_min else ckpt]

    def generator_hash(self, regime: float, seed: int) -> str:
        """SHA-256 of the generator that augments the (regime, seed) run (trained first if needed): of what the
        checkpoint's artifact holds (:func:`artifact_hash`), not of its bytes, which also hold the training's wall
        times: the same generator trained twice, here or on a Ray worker, keys its runs alike."""
        ckpt = Path(self.generator_for(regime, seed))
        st = ckpt.stat()
        key = (str(ckpt), st.st_size, st.st_mtime_ns)
        if key not in self._ckpt_hash:
            self._ckpt_hash[key] = artifact_hash(ckpt)
        return self._ckpt_hash[key]


def artifact_hash(checkpoint: str | Path) -> str:
    """SHA-256 of a generator checkpoint's artifact (family, config, step, weights, EMA, training-image
    fingerprints, labels: :meth:`GeneratorArtifact.to_dict`), tensors by dtype, shape and bytes, in key order."""
    h = hashlib.sha256()

    def feed(o) -> None:
        if isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(f"<{k}>".encode())
                feed(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"[{len(o)}".encode())
            for v in o:
                feed(v)
        elif isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(o).encode())

    feed(GeneratorArtifact.load(checkpoint).to_dict())
    return h.hexdigest()
