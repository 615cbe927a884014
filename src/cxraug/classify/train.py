"""Train one classifier; keep the epoch with the lowest validation loss; predict."""

from __future__ import annotations

import ast
import copy
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from cxraug.errors import CXRAugError

RECIPES = {
    # Sundaram & Hulkund (2021): random horizontal and vertical flips, each with p = 0.5
    "flips": lambda: [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)],
    # the earlier cxraug baseline: flip, small rotations, brightness/contrast
    "mild": lambda: [v2.RandomHorizontalFlip(), v2.RandomRotation(10), v2.ColorJitter(brightness=0.2, contrast=0.2)],
}


def _transform(spec: str) -> list[v2.Transform]:
    """A recipe name, or one torchvision v2 transform written as a call: ``RandomRotation(degrees=10)``."""
    if spec in RECIPES:
        return RECIPES[spec]()
    try:
        call = ast.parse(spec.strip(), mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            raise ValueError("not a call")
        cls = getattr(v2, call.func.id, None)
        if not (isinstance(cls, type) and issubclass(cls, v2.Transform)):
            raise ValueError(f"{call.func.id} is not a torchvision.transforms.v2 transform")
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
        return [cls(*args, **kwargs)]
    except (SyntaxError, ValueError, TypeError) as e:
        raise CXRAugError(
            f"standard_aug {spec!r}: {e}; use {' or '.join(RECIPES)} or a torchvision v2 transform such as "
            "'RandomRotation(degrees=10)'"
        ) from e


def standard_augmentation(specs: list[str] | str = "flips") -> v2.Compose:
    """The standard-augmentation baseline named by ``specs`` (recipes and transforms, applied in order)."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    return v2.Compose([t for sp in specs for t in _transform(sp)])


STANDARD_AUG = standard_augmentation("flips")


def to_float(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(u8)).float().div(255.0).unsqueeze(1)  # [N,1,S,S] in [0,1]


def _flip_probs(aug: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float] | None:
    """(p of a horizontal flip, p of a vertical flip) when ``aug`` is nothing but flips, else None."""
    ts = aug.transforms if isinstance(aug, v2.Compose) else [aug]
    ph, pv = 0.0, 0.0
    for t in ts:
        if type(t) is v2.RandomHorizontalFlip and ph == 0.0:
            ph = float(t.p)
        elif type(t) is v2.RandomVerticalFlip and pv == 0.0:
            pv = float(t.p)
        else:
            return None
    return ph, pv


def batch_augment(x: torch.Tensor, aug: Callable[[torch.Tensor], torch.Tensor] = STANDARD_AUG) -> torch.Tensor:
    """``aug`` applied to each image of the batch [B,1,S,S] independently. Flips (the ``flips`` recipe) are drawn
    per image from torch's RNG and applied to the whole batch at once, the same distribution as torchvision's
    per-image ``RandomHorizontalFlip``/``RandomVerticalFlip`` without a Python loop over the images; any other
    transform runs image by image."""
    probs = _flip_probs(aug)
    if probs is None:
        return torch.stack([aug(img) for img in x])
    for p, dim in zip(probs, (-1, -2)):
        if p > 0:
            pick = (torch.rand(len(x)) < p).view(-1, 1, 1, 1)
            x = torch.where(pick, x.flip(dim), x)
    return x


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The classifier's autocast precision: the GAN engine's choice (bf16 on CUDA and on CPUs with native bf16,
    float32 elsewhere; ``$CXRAUG_AMP`` overrides), so a study's networks all train in one precision. Predictions
    and the validation loss that picks the epoch stay float32."""
    from cxraug.train.engine import AMP_DTYPES, default_amp

    return AMP_DTYPES[default_amp(device)]


def fit_classifier(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    augment: bool | Callable[[torch.Tensor], torch.Tensor] = False,
    seed: int = 0,
    device: str = "cpu",
    steps_per_epoch: int | None = None,
    class_weight: np.ndarray | None = None,
) -> tuple[nn.Module, dict]:
    """Returns the best-validation model and per-epoch train/val loss curves (with ``seconds``: the wall time of
    the training steps and of the validation passes).

    Targets: class indices [N] (binary / multi-class head, cross-entropy) or multi-hot float vectors
    [N,K] (multi-label head, one sigmoid per label; NaN = unknown label, masked out of the loss).
    ``augment``: True for the default standard augmentation (flips), or a transform of one [1,S,S] image.
    ``steps_per_epoch``: an "epoch" is this many full batches drawn from consecutive seeded permutations of the
    training set (a pass may end inside one epoch and the next start there), so that runs on training sets of
    different sizes take the same number of optimiser steps; None: one pass over the data (the last, partial
    batch kept when it holds at least 2 images). ``class_weight``: loss weights, one per class (cross-entropy's
    ``weight``) or, multi-label, one per label for its positives (BCE's ``pos_weight``)."""
    dev = torch.device(device)
    # dropout and torchvision's random transforms draw from torch's global RNG: seed them inside a fork, so
    # the run is reproducible and the caller's RNG state (a notebook's, the next study run's) is left alone
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        return _fit(model, x_train, y_train, x_val, y_val, epochs, batch_size, lr, augment, seed, device,
                    steps_per_epoch, class_weight)  # fmt: skip


def _epoch_batches(n: int, batch_size: int, steps: int | None, gen: torch.Generator) -> Iterator[list[torch.Tensor]]:
    """Index batches per epoch: one pass over a seeded permutation (``steps`` None), or ``steps`` batches of
    exactly ``batch_size`` cut from a stream of consecutive seeded permutations of range(n)."""
    if steps is None:
        while True:
            perm = torch.randperm(n, generator=gen)
            yield [perm[i : i + batch_size] for i in range(0, n, batch_size) if len(perm[i : i + batch_size]) >= 2]
    buf = torch.empty(0, dtype=torch.long)
    while True:
        need = steps * batch_size
        while len(buf) < need:
            buf = torch.cat([buf, torch.randperm(n, generator=gen)])
        yield list(buf[:need].split(batch_size))
        buf = buf[need:]


def _fit(model, x_train, y_train, x_val, y_val, epochs, batch_size, lr, augment, seed, device, steps_per_epoch=None,
         class_weight=None):  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    # channels_last: oneDNN's (and cuDNN's) fast layout for convolutions; measured in benchmarks/classifier_speed.py
    model = model.to(dev, memory_format=torch.channels_last)
    dtype = amp_dtype(dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    multilabel = np.ndim(y_train) == 2
    ydtype = torch.float32 if multilabel else torch.long
    w = None if class_weight is None else torch.as_tensor(np.asarray(class_weight), dtype=torch.float32).to(dev)
    if multilabel:
        loss_fn = (lambda z, t: masked_bce(z, t, pos_weight=w)) if w is not None else masked_bce
    else:
        loss_fn = (lambda z, t: F.cross_entropy(z, t, weight=w)) if w is not None else F.cross_entropy
    xt, yt = to_float(x_train), torch.as_tensor(y_train, dtype=ydtype)
    xv, yv = to_float(x_val).to(dev), torch.as_tensor(y_val, dtype=ydtype).to(dev)
    aug = STANDARD_AUG if augment is True else augment
    best, best_loss = None, float("inf")
    curves: dict = {"train_loss": [], "val_loss": [], "seconds": {"training": 0.0, "validation": 0.0}}
    batches = _epoch_batches(len(xt), batch_size, steps_per_epoch, gen)
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        tot = torch.zeros((), device=dev)  # summed on the device: no host sync per step
        seen = 0
        for idx in next(batches):
            xb = batch_augment(xt[idx], aug) if aug else xt[idx]
            xb = (xb * 2 - 1).to(dev).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(model(xb).float(), yt[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            tot += loss.detach() * len(idx)
            seen += len(idx)
        t1 = time.perf_counter()
        # the validation loss is unweighted in every protocol: the checkpoint is chosen on the same criterion
        # (in the training precision: it only ranks the epochs; predictions for the metrics are float32)
        val_loss = (masked_bce if multilabel else F.cross_entropy)(predict_logits(model, xv, dtype=dtype), yv).item()
        curves["train_loss"].append(tot.item() / (seen if steps_per_epoch else len(xt)))
        curves["val_loss"].append(val_loss)
        curves["seconds"]["training"] += t1 - t0
        curves["seconds"]["validation"] += time.perf_counter() - t1
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    return model.eval(), curves


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, *, batch: int = 256, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Logits [N,K] of images x [N,1,S,S] in [0,1]; ``dtype``: autocast to it (None: float32)."""
    model.eval()
    dev = next(model.parameters()).device
    cl = torch.channels_last
    with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return torch.cat([model((x[i : i + batch] * 2 - 1).to(dev).contiguous(memory_format=cl)).float()
                          for i in range(0, len(x), batch)])  # fmt: skip


def masked_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label BCE over the known labels only (NaN = not recorded / uncertain-ignored); ``pos_weight`` [K]:
    each label's positives weighted as BCE's ``pos_weight`` does."""
    known = ~torch.isnan(target)
    if pos_weight is None:
        return F.binary_cross_entropy_with_logits(logits[known], target[known])
    pw = pos_weight.to(logits.dtype).expand_as(logits)[known]
    return F.binary_cross_entropy_with_logits(logits[known], target[known], pos_weight=pw)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency loss weights: N / (K n_k) per class present (scikit-learn's ``class_weight="balanced"``;
    a class absent from ``y`` gets 1), or for multi-label targets [N,K] (NaN = unknown) each label's negatives
    over its positives (BCE's ``pos_weight``; 1 for a label without positives)."""
    y = np.asarray(y)
    if y.ndim == 2:
        pos, neg = (np.nan_to_num(y, nan=-1) == 1).sum(0), (np.nan_to_num(y, nan=-1) == 0).sum(0)
        return np.where(pos > 0, neg / np.maximum(pos, 1), 1.0).astype(np.float32)
    counts = np.bincount(y.astype(np.int64), minlength=n_classes)
    present = counts > 0
    return np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 1.0).astype(np.float32)


def predict_proba(model: nn.Module, u8: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Softmax class probabilities [N,K], or independent per-label probabilities with ``multilabel``."""
    logits = predict_logits(model, to_float(u8))
    return (torch.sigmoid(logits) if multilabel else F.softmax(logits, 1)).cpu().numpy()
