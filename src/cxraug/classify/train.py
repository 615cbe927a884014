"""Train one classifier; keep the epoch with the lowest validation loss; predict."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

STANDARD_AUG = v2.Compose(
    [v2.RandomHorizontalFlip(), v2.RandomRotation(10), v2.ColorJitter(brightness=0.2, contrast=0.2)]
)  # flips, small rotations, brightness/contrast: the "standard augmentation" baseline


def to_float(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(u8)).float().div(255.0).unsqueeze(1)  # [N,1,S,S] in [0,1]


def _augment(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([STANDARD_AUG(img) for img in x])


def fit_classifier(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    augment: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[nn.Module, dict]:
    """Class-index targets; returns the best-validation model and per-epoch train/val loss curves."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    xt, yt = to_float(x_train), torch.as_tensor(y_train, dtype=torch.long)
    xv, yv = to_float(x_val).to(device), torch.as_tensor(y_val, dtype=torch.long).to(device)
    best, best_loss, curves = None, float("inf"), {"train_loss": [], "val_loss": []}
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            xb = xt[idx]
            xb = _augment(xb) if augment else xb
            loss = F.cross_entropy(model((xb * 2 - 1).to(device)), yt[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        val_loss = F.cross_entropy(predict_logits(model, xv), yv).item()
        curves["train_loss"].append(tot / len(xt))
        curves["val_loss"].append(val_loss)
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    return model.eval(), curves


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model((x[i : i + batch] * 2 - 1).to(dev)) for i in range(0, len(x), batch)])


def predict_proba(model: nn.Module, u8: np.ndarray) -> np.ndarray:
    return F.softmax(predict_logits(model, to_float(u8)), 1).cpu().numpy()
