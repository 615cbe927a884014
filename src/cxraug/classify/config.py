"""The study's configuration: what it trains, on which data, with which generator."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxraug.config import load_config
from cxraug.data.manifests import ManifestSpec

# real: the training split as it is; standard-aug: with the standard augmentation (flips). The controls that
# isolate the generator: oversample repeats the real minority images up to the class balance gan-aug reaches;
# class-weighted weighs the loss by inverse class frequency instead. gan-aug adds synthetic minority images to that
# balance; synthetic-only replaces the real minority by as many synthetic images, synthetic-only-full by as many as
# the largest class (Zunair & Hamza train on synthetic images at full volume). "standard-aug+X" is X with the
# standard augmentation. Every protocol of a (regime, seed) takes the same number of optimiser steps.
PROTOCOLS = ("real", "standard-aug", "oversample", "class-weighted", "standard-aug+oversample", "gan-aug",
             "standard-aug+gan-aug", "synthetic-only", "synthetic-only-full")  # fmt: skip
SYNTHETIC_PROTOCOLS = ("gan-aug", "standard-aug+gan-aug", "synthetic-only", "synthetic-only-full")
# the non-generative protocols: the strongest of them (on validation) is what gan-aug must beat
CONTROL_PROTOCOLS = ("real", "standard-aug", "oversample", "class-weighted", "standard-aug+oversample")
DEFAULT_PROTOCOLS = ("real", "standard-aug", "oversample", "class-weighted", "gan-aug", "synthetic-only")
# the protocols that add minority images, synthetic or repeated: with ``synthetic_ratios`` each runs once per ratio
RATIO_PROTOCOLS = ("gan-aug", "standard-aug+gan-aug", "oversample", "standard-aug+oversample")
MAX_RATIO = 20.0


def arm_name(protocol: str, ratio: float | None) -> str:
    """A study arm: the protocol, with the dose when the study has a ratio axis: ``gan-aug@2x`` adds two
    synthetic minority images per real minority training image, ``oversample@2x`` two repeats of them."""
    return protocol if ratio is None else f"{protocol}@{float(ratio):g}x"


def split_arm(arm: str) -> tuple[str, float | None]:
    """``"gan-aug@2x"`` -> ("gan-aug", 2.0); a plain protocol -> (protocol, None)."""
    p, sep, r = arm.partition("@")
    if not sep:
        return arm, None
    try:
        return p, float(r.removesuffix("x"))
    except ValueError:
        raise ValueError(f"not a study arm: {arm!r}") from None


def study_arms(protocols: list[str], ratios: list[float]) -> list[str]:
    """Every arm a study runs: each protocol, and each of :data:`RATIO_PROTOCOLS` once per ratio when the study
    has a ratio axis (ascending)."""
    out = []
    for p in protocols:
        out += [arm_name(p, r) for r in sorted(ratios)] if ratios and p in RATIO_PROTOCOLS else [p]
    return out


def base_protocol(protocol: str) -> tuple[str, bool]:
    """("oversample", True) for "standard-aug+oversample": the training set's protocol and whether the standard
    augmentation is applied on top ("standard-aug" alone is ("real", True))."""
    if protocol == "standard-aug":
        return "real", True
    if protocol.startswith("standard-aug+"):
        return protocol.removeprefix("standard-aug+"), True
    return protocol, False


@dataclass
class Source:
    path: str
    label: str | None = None  # class name for a flat folder (e.g. covid-cxnet -> covid)
    name: str | None = None  # how tables and the report name this source (default: from the path)
    # How a CSV/TSV source is read: the fields of `cxraug train`'s data.manifest (format, path_column,
    # path_template, patient_column, label_column(s), label, view, uncertain, root, ...); default auto-detected.
    manifest: ManifestSpec | None = None

    def data_config(self, size: int = 64):
        """This source as a :class:`~cxraug.data.source.DataConfig` (what the output guard and readers take)."""
        from cxraug.data.source import DataConfig

        return DataConfig(path=self.path, size=size, manifest=self.manifest or ManifestSpec())


def source_names(sources: list[Source]) -> list[str]:
    """A short, unique name per source: ``name``, else the path's last folder (or file) name."""
    out: list[str] = []
    for s in sources:
        n = s.name or (s.path if s.path.startswith("phantom") else Path(s.path.rstrip("/")).name or s.path)
        base, k = n, 2
        while n in out:
            n, k = f"{base}#{k}", k + 1
        out.append(n)
    return out


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
    # a family's own section, as in a training config (stylegan2: {w_dim: 128}); a key both here and in overrides is refused
    stylegan2: dict[str, Any] = field(default_factory=dict)
    ddpm: dict[str, Any] = field(default_factory=dict)


@dataclass
class Primary:
    """The one pre-specified comparison that decides the study's headline verdict; every other comparison is
    exploratory (reported with Holm-adjusted p-values). ``comparison``: "A vs B" with protocols, or B =
    ``best-control`` (the non-generative protocol with the best mean validation AUC in that regime); ``regime``:
    None = the smallest regime of the study (the scarce-data question); ``metric``: auc."""

    comparison: str = "gan-aug vs best-control"
    regime: float | None = None
    metric: str = "auc"


@dataclass
class PowerSpec:
    """What the power line assumes before anything trains: the AUC expected of the comparator (from a pilot or
    the literature) and the correlation of two protocols' AUC estimates on the same test images (Hanley &
    McNeil 1983; classifiers trained on the same data correlate strongly, 0.5 is a cautious default)."""

    auc: float = 0.85
    correlation: float = 0.5
    alpha: float = 0.05
    power: float = 0.8


@dataclass
class RaySpec:
    """Where and how a study's runs execute with ``executor: ray`` (docs/ray.md). ``address``: None starts a Ray
    instance on this machine for the study; "auto" joins the cluster this machine is part of (``ray start``);
    "HOST:PORT" a cluster's head. Each GAN training and each classifier run is one Ray task that asks for
    ``cpus_per_run`` CPUs (also its torch threads) and ``gpus_per_run`` GPUs (fractions share a GPU); a task whose
    worker process dies is retried up to ``max_retries`` times."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3


@dataclass
class StudyConfig:
    sources: list[Source] = field(default_factory=lambda: [Source("phantom:normal=240,covid=48")])
    size: int = 64
    minority: str = "covid"
    generator: str | None = None  # a checkpoint trained on the minority class, used for every run ...
    gan: GanSpec | None = None  # ... or let the study train its own generators (leak-free by construction)
    model: str = "lightweight"
    protocols: list[str] = field(default_factory=lambda: list(DEFAULT_PROTOCOLS))
    regimes: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.5, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
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
    # Images never trained on, never used for early stopping or the threshold: tested per source and pooled.
    # Each image that shares a patient id with, or (near-)duplicates, a training/validation image is dropped.
    external_test: list[Source] = field(default_factory=list)
    # Images of known label, scored by every run and reported per source with the fraction called positive
    # (e.g. normal images from the positive class's hospital: a direct test of a source shortcut).
    probe: list[Source] = field(default_factory=list)
    operating_point: str = "youden"  # youden | sensitivity:0.9 | fixed:0.5, chosen on the validation split
    # X: the smallest AUC difference that matters, for the verdict's words: a number (0.02), or relative to the
    # comparator's headroom, "10%-of-headroom" = 0.1 x (1 - the comparator's mean AUC in that regime)
    margin: float | str = 0.02
    primary: Primary = field(default_factory=Primary)
    power: PowerSpec = field(default_factory=PowerSpec)
    # per-run: one generator per (regime, seed), its seed derived from the run, so the CIs hold the generator's
    # own training variance; shared: one per distinct training set (at 100 % every seed shares one)
    generator_seeds: str = "per-run"
    bootstrap: int = 1000  # patient-clustered bootstrap resamples for the pooled CIs
    # The standard-augmentation baseline: flips (Sundaram & Hulkund: horizontal and vertical flips, p = 0.5),
    # mild (flip + 10 degree rotation + brightness/contrast 0.2), or torchvision v2 transforms such as
    # "RandomRotation(degrees=10)".
    standard_aug: list[str] = field(default_factory=lambda: ["flips"])
    # Which labels synthetic images are added for (default: the minority) and how many: equalize (the minority
    # up to the largest class, or its positives up to its negatives in a multi-label study) or min-fraction:F
    # (Sundaram & Hulkund's 15 % rule, F = 0.15: the fewest images so that every label in augment_labels is
    # positive in at least F of the augmented training set, several labels at once; needs a conditional
    # generator when augment_labels holds more than the minority).
    augment_labels: list[str] = field(default_factory=list)
    augment_rule: str = "equalize"
    # How much synthetic data (a dose-response axis): synthetic minority images per real minority training image,
    # e.g. [0.5, 1, 2, 4]. Each of gan-aug, standard-aug+gan-aug and their controls oversample and
    # standard-aug+oversample (the same number of repeated real images) then runs once per ratio, as arms
    # "gan-aug@2x", "oversample@2x"; the gan-aug ratio compared with the controls is the one with the best mean
    # validation AUC. Empty: the augment rule decides the count. Every arm takes the same optimiser steps.
    synthetic_ratios: list[float] = field(default_factory=list)
    # local: the runs one after another in this process; ray: every GAN training and classifier run a Ray task,
    # on this machine or a cluster (`ray:` below, docs/ray.md; pip install cxraug[ray]). Results are the same.
    executor: str = "local"
    ray: RaySpec = field(default_factory=RaySpec)


def load_study_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> StudyConfig:
    return load_config(StudyConfig, path, overrides=overrides)


def load_config_dict(d: Path) -> dict:
    from cxraug.config import load_yaml

    return load_yaml((d / "config.yaml").read_text())
