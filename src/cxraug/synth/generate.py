"""Generate images from a training checkpoint."""

from __future__ import annotations

import os

import numpy as np
import torch

from cxraug.data.preprocess import tensor_to_u8, u8_to_tensor
from cxraug.models.cgan import sample_label_vectors
from cxraug.train.engine import load_generator, pick_device


@torch.no_grad()
def generate(
    checkpoint: str | os.PathLike,
    n: int,
    seed: int = 0,
    label: str | None = None,
    batch: int = 256,
    source_images: np.ndarray | None = None,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``n`` images as uint8 [n,S,S], their label vectors [n,K], and info (class names, family).

    Conditional GANs draw label vectors from the real label distribution of ``label``'s rows;
    CycleGAN translates ``source_images`` (uint8, domain A) to domain B. Noise and labels are drawn on
    the CPU from ``seed`` whatever the ``device``, so a GPU gives the same images up to float rounding.
    """
    dev = pick_device(device)
    g, cfg, st = load_generator(checkpoint, dev)
    names = list(st["class_names"])
    k = names.index(label) if label is not None and label in names else None
    if label is not None and k is None and cfg.family == "cgan":
        raise ValueError(f"label {label!r} not in {names}")
    gen = torch.Generator().manual_seed(seed)
    out, labs = [], []
    real_labels = st["real_labels"].numpy()
    for i in range(0, n, batch):
        b = min(batch, n - i)
        if cfg.family == "cyclegan":
            if source_images is None:
                raise ValueError("CycleGAN synthesis translates source images: pass source_images (domain A)")
            idx = torch.randint(len(source_images), (b,), generator=gen).numpy()
            x = u8_to_tensor(source_images[idx])
            imgs = g(x.to(dev))
            y = torch.zeros(b, len(names))
            if cfg.domain_b in names:
                y[:, names.index(cfg.domain_b)] = 1
        else:
            z = torch.randn(b, cfg.z_dim, generator=gen)
            if cfg.family == "cgan":
                y = sample_label_vectors(real_labels, b, k, seed=seed + i)
            else:
                y = torch.from_numpy(real_labels[torch.randint(len(real_labels), (b,), generator=gen).numpy()])
            imgs = g(z.to(dev), y.to(dev))
        out.append(tensor_to_u8(imgs))
        labs.append(y.numpy())
    info = {"class_names": names, "family": cfg.family, "preset": cfg.preset, "size": cfg.data.size,
            "trained_on_class": cfg.cls or cfg.domain_b}  # fmt: skip
    return np.concatenate(out), np.concatenate(labs).astype(np.float32), info
