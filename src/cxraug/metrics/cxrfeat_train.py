"""How the shipped CXR feature extractor (``cxraug.metrics.cxrfeat``) is trained: the recipe of its model card.

``benchmarks/train_cxr_features.py`` runs it on ``../shared/data`` and writes the weights file; the tests run it
for a few steps on phantoms. Objective per batch of radiographs x with group labels y:

    two views v1, v2 = copy_view(x), copy_view(x)        # what a copy may differ by (crop, flip, contrast, blur...)
    e1, e2 = CXRNet(v1), CXRNet(v2)                      # [B, 256]
    loss = CE(head(e1), y) + CE(head(e2), y)             # source and class (class-balanced weights)
         + VICReg(proj(e1), proj(e2))                    # Bardes et al. 2022: invariance 25, variance 25, covariance 1

The network sees every image at 64 px (``CXRNet.SIZE``); ``bf16`` autocasts its training on CPUs that have it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from cxraug.data.preprocess import u8_to_tensor
from cxraug.metrics.cxrfeat import CONTENT_PCS, STAT_SIZES, CXRFeatures, CXRNet


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    from cxraug.metrics.encoder import _blur as blur

    return blur(x, sigma.clamp_min(1e-3))


def copy_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x [B,1,S,S] in [-1,1] -> what a republished copy of each image might look like: zoomed 0.8-1 (a crop),
    shifted up to 8 %, rotated up to 5 degrees, flipped (p 0.5), contrast 0.75-1.3, gamma 0.75-1.35, brightness
    +-0.1, blurred sigma 0-1.2 px (p 0.5), Gaussian noise SD 0-0.1 (p 0.7; [-1, 1] units)."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    zoom, ang = u(0.8, 1.0), u(-5, 5) * math.pi / 180
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = zoom * torch.cos(ang) * flip, -zoom * torch.sin(ang)
    theta[:, 1, 0], theta[:, 1, 1] = zoom * torch.sin(ang) * flip, zoom * torch.cos(ang)
    theta[:, 0, 2], theta[:, 1, 2] = u(-0.08, 0.08), u(-0.08, 0.08)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y01 = ((y + 1) / 2).clamp(0, 1)
    y01 = y01.pow(u(0.75, 1.35).view(b, 1, 1, 1))
    m = y01.mean((1, 2, 3), keepdim=True)
    y01 = (m + (y01 - m) * u(0.75, 1.3).view(b, 1, 1, 1) + u(-0.1, 0.1).view(b, 1, 1, 1)).clamp(0, 1)
    y = y01 * 2 - 1
    blur = torch.rand(b, generator=gen) < 0.5
    if blur.any():
        y[blur] = _blur(y[blur], u(0.0, 1.2)[blur])
    noisy = (torch.rand(b, generator=gen) < 0.7).float().view(b, 1, 1, 1)
    y = y + noisy * u(0.0, 0.1).view(b, 1, 1, 1) * torch.randn(y.shape, generator=gen)
    return y.clamp(-1, 1)


def vicreg(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """VICReg's loss (Bardes, Ponce & LeCun 2022, eq. 6 with lambda = mu = 25, nu = 1)."""
    inv = F.mse_loss(z1, z2)
    var = cov = 0.0
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        var = var + F.relu(1 - std).mean()
        c = (z.T @ z) / (len(z) - 1)
        off = c - torch.diag(torch.diag(c))
        cov = cov + off.pow(2).sum() / z.shape[1]
    return 25 * inv + 25 * var + cov


def train_cxr_features(
    images_u8: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    log_every: int = 100,
    bf16: bool = False,
) -> tuple[CXRFeatures, list[dict]]:
    """Train on uint8 images [N,128,128] with integer group labels [N]; returns the model with its standardising
    constants measured on the same images at each of ``STAT_SIZES``, and a log of the losses."""
    torch.manual_seed(seed)
    model = CXRFeatures()
    net = model.net
    head = nn.Linear(net.dim, n_groups)
    proj = nn.Sequential(nn.Linear(net.dim, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 512))
    params = [*net.parameters(), *head.parameters(), *proj.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    counts = np.bincount(groups, minlength=n_groups).astype(float)
    weight = torch.tensor((counts.sum() / np.maximum(counts, 1)) ** 0.5, dtype=torch.float32)
    weight = weight / weight.mean()
    gen = torch.Generator().manual_seed(seed)
    data, y_all = torch.from_numpy(np.ascontiguousarray(images_u8)), torch.from_numpy(groups.astype(np.int64))
    log, t0 = [], time.time()
    net.train()
    for step in tqdm(range(steps), desc="cxr features", disable=not progress):
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        x, y = u8_to_tensor(data[idx]), y_all[idx]
        x = F.interpolate(x, size=(CXRNet.SIZE, CXRNet.SIZE), mode="area")  # the scale the network sees
        v = torch.cat([copy_view(x, gen), copy_view(x, gen)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            e = net(v).float()
        ce = F.cross_entropy(head(e), torch.cat([y, y]), weight=weight)
        z = proj(e)
        vr = vicreg(z[:batch_size], z[batch_size:])
        loss = ce + 0.1 * vr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.append(
                {
                    "step": step,
                    "ce": float(ce.detach()),
                    "vicreg": float(vr.detach()),
                    "seconds": round(time.time() - t0, 1),
                }
            )
    net.eval()
    standardise(model, images_u8)
    return model, log


@torch.no_grad()
def standardise(model: CXRFeatures, images_u8: np.ndarray, batch: int = 256) -> None:
    """Set ``model.mean``/``std`` to the per-dimension mean and SD of the raw features of ``images_u8`` ([N,S,S],
    S >= max(STAT_SIZES)) at each of ``STAT_SIZES`` (area downsampling)."""
    for i, size in enumerate(STAT_SIZES):
        feats = []
        for a in range(0, len(images_u8), batch):
            x = u8_to_tensor(images_u8[a : a + batch])
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="area")
            feats.append(model.raw(x).double())
        f = torch.cat(feats)
        model.mean[i] = f.mean(0).float()
        model.std[i] = f.std(0).clamp_min(1e-6).float()
        if size == max(STAT_SIZES):  # the content's principal axes (the content part is the same at every size)
            c = model.net.dim
            zc = (f[:, :c] - f[:, :c].mean(0)) / f[:, :c].std(0).clamp_min(1e-6)
            _, _, vt = torch.linalg.svd(zc, full_matrices=False)
            k = min(CONTENT_PCS, vt.shape[0])  # (fewer images than axes only in tests: the rest stay 0)
            v = torch.zeros(c, CONTENT_PCS, dtype=vt.dtype)
            v[:, :k] = vt[:k].T  # [256, K]
            pivot = v[v.abs().argmax(0), torch.arange(CONTENT_PCS)]  # each axis's largest loading
            v = v * torch.where(pivot < 0, -1.0, 1.0).to(v.dtype)  # made positive: a fixed sign per axis
            model.pcs.copy_(v.float())
            model.pc_mean.copy_(zc.mean(0).float())
