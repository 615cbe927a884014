"""Generate images from a generator artifact (a training checkpoint), whatever its family."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from cxraug.data.preprocess import resize, tensor_to_u8
from cxraug.data.source import DataConfig
from cxraug.errors import CXRAugError
from cxraug.families import Family, load_generator
from cxraug.models.cgan import sample_label_vectors
from cxraug.models.common import pick_device

Source = np.ndarray | str | os.PathLike | DataConfig


def generator_info(g: Family) -> dict:
    return {"class_names": g.class_names, "family": g.name, "preset": g.preset, "size": g.size,
            "trained_on_class": g.target_class, "conditional": g.conditional,
            "takes_source": g.takes_source}  # fmt: skip


def describe(checkpoint: str | os.PathLike) -> dict:
    """What a checkpoint makes (class names, family, size, class, conditional, needs source images)."""
    return generator_info(load_generator(checkpoint))


def load_source(source: Source, size: int, left_out: list[str] | None = None) -> np.ndarray:
    """Source images as uint8 [N,size,size]: an array (resized if needed), any data path (folder, CSV, ...), or
    a ``DataConfig`` (a manifest read with its flags), decoded at the generator's ``size``. ``left_out`` collects
    the files skipped (each is also named on stderr)."""
    from dataclasses import replace

    from cxraug.data.source import load_dataset, skipped_lines

    if isinstance(source, str | os.PathLike | DataConfig):
        cfg = replace(source, size=size) if isinstance(source, DataConfig) else DataConfig(path=str(source), size=size)
        ds = load_dataset(cfg, progress=False)
        if left_out is not None:
            left_out += [x for x in skipped_lines(ds) if x not in left_out]
        imgs = np.asarray(ds.images)
        if len(imgs) == 0:
            raise CXRAugError(f"{cfg.path}: no source images found")
        return imgs
    imgs = np.asarray(source)
    if imgs.shape[-1] != size:
        imgs = np.stack([resize(i, size, "direct") for i in imgs])
    return imgs


#: The most images one ``synthesize`` / :func:`generate` call makes (a typo such as ``--n 100000000`` used to fill
#: the memory for 45 s before the allocator failed).
MAX_N = 1_000_000


def generate(
    checkpoint: str | os.PathLike,
    n: int | None,
    *,
    seed: int = 0,
    label: str | None = None,
    batch: int = 256,
    source: Source | None = None,
    device: str = "cpu",
    left_out: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``n`` images as uint8 [n,S,S], their label vectors [n,K], and :func:`generator_info`.

    Noise generators draw ``n`` images (``n`` required); conditional GANs draw label vectors from the real
    label distribution of ``label``'s rows. Translating generators (CycleGAN) translate each ``source``
    image exactly once (Zunair & Hamza translate every majority-class image): all of them, or ``n`` of
    them chosen at random without replacement; ``source`` is ignored by noise generators. Noise, labels
    and the choice of source images are drawn on the CPU from ``seed`` whatever the ``device``, so a GPU
    gives the same images up to float rounding. :func:`generate_batches` gives the same images batch by batch.
    """
    info, batches = generate_batches(checkpoint, n, seed=seed, label=label, batch=batch, source=source, device=device,
                                     left_out=left_out)  # fmt: skip
    out, labs = [], []
    for imgs, y in batches:
        out.append(imgs)
        labs.append(y)
    if not out:
        size, k = info["size"], len(info["class_names"])
        return np.zeros((0, size, size), np.uint8), np.zeros((0, k), np.float32), info
    return np.concatenate(out), np.concatenate(labs).astype(np.float32), info


def generate_batches(
    checkpoint: str | os.PathLike,
    n: int | None,
    *,
    seed: int = 0,
    label: str | None = None,
    batch: int = 256,
    source: Source | None = None,
    device: str = "cpu",
    left_out: list[str] | None = None,
) -> tuple[dict, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(:func:`generator_info`, an iterator of (uint8 [b,S,S], float32 [b,K]) batches): :func:`generate`'s images
    in the same order, ``batch`` at a time, so that a writer holds one batch in memory. The checkpoint, ``label``
    and ``n`` are checked before this returns. ``left_out`` collects the source files skipped (translating
    generators)."""
    if n is not None and not 0 <= n <= MAX_N:
        raise CXRAugError(f"--n {n}: at most {MAX_N:,} images per call (and >= 0)")
    g = load_generator(checkpoint, pick_device(device))
    names = g.class_names
    k = names.index(label) if label is not None and label in names else None
    if label is not None and k is None and g.conditional:
        raise CXRAugError(f"label {label!r} not in {names}")
    if label is not None and not g.conditional and label not in g.shared_labels:
        trained = (f"on {', '.join(map(repr, g.shared_labels))} images" if g.shared_labels
                   else "on several classes at once (its images have no class)")  # fmt: skip
        raise CXRAugError(f"--label {label}: this {g.name} generator is not conditional and was trained {trained}; "
                          "train one with --class to make images of one class")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    src = None
    if g.takes_source:
        if source is None:
            g.sample(0)  # raises the family's one-line explanation
        src = load_source(source, g.size, left_out)
        pick = torch.randperm(len(src), generator=gen)[: len(src) if n is None else n].numpy()
        src = src[pick]  # each source image at most once
        n = len(src)
    elif n is None:
        raise CXRAugError("say how many images to generate (--n)")
    real = g.real_labels.numpy()

    @torch.no_grad()
    def batches(total: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, total, batch):
            b = min(batch, total - i)
            y = sample_label_vectors(real, b, pathology=k, seed=seed + i) if g.conditional else None
            imgs, y = g.sample(b, labels=y, source=None if src is None else src[i : i + b], generator=gen)
            yield tensor_to_u8(imgs), y.numpy().astype(np.float32)

    return generator_info(g), batches(n)
