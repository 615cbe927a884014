"""Data-copying tests: does a generator reproduce its training images?

1. The three-sample test of Meehan, Chaudhuri & Dasgupta, "A Non-Parametric Test to Detect
   Data-Copying in Generative Models" (AISTATS 2020). With T the generator's training set, P_n a
   held-out real sample and Q_m the generated sample, let L(x) be the distance from x to its nearest
   neighbour in T. Under "no copying" L(Q) and L(P) have the same distribution; copying makes L(Q)
   smaller. The Mann-Whitney statistic U = #{(i, j): L(Q_j) > L(P_i)} (+ 1/2 per tie), z-scored,

       Z_U = (U - mn/2) / sqrt(mn (m + n + 1) / 12),

   is ~N(0, 1) without copying and strongly negative with it (positive: the generator stays farther
   from the training data than new real data does, i.e. under-fitting). Because a model can copy in
   one region and under-fit in another, the paper partitions space into cells (k-means on T), computes
   Z_U(pi) in each cell with enough samples and averages them weighted by the held-out fraction
   P_n(pi): C_T = sum_pi P_n(pi) Z_U(pi) / sum_pi P_n(pi). Its p-value here uses that the per-cell
   Z_U are independent N(0, 1) under the null, so C_T ~ N(0, sum w^2 / (sum w)^2).

2. Per-image copy flags that survive small shifts, flips and contrast changes: the maximum
   normalized cross-correlation (NCC) between a generated image and every training image over
   integer shifts of up to ``max_shift`` pixels and a horizontal flip, on downsampled images with
   their low frequencies removed (so that the shared chest outline does not make every pair look
   alike). NCC is invariant to any affine intensity change, hence to contrast stretching.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def nn_distance(x: np.ndarray, ref: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from every row of ``x`` [N,D] to its nearest row of ``ref`` [M,D]."""
    r = torch.as_tensor(np.asarray(ref), dtype=torch.float64)
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    out = [torch.cdist(a[i : i + chunk], r).min(1).values for i in range(0, len(a), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def mann_whitney_z(q: np.ndarray, p: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of samples ``q`` (m) against ``p`` (n); U counts q > p, ties 1/2.
    The variance is the no-ties normal approximation the paper uses."""
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    m, n = len(q), len(p)
    ps = np.sort(p)
    below = np.searchsorted(ps, q, side="left")  # p < q_j
    equal = np.searchsorted(ps, q, side="right") - below
    u = float(below.sum() + 0.5 * equal.sum())
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 30) -> np.ndarray:
    """k-means on ``x`` [N,D]: k-means++ seeding (Arthur & Vassilvitskii 2007), then Lloyd iterations.
    Returns the centroids [k,D]."""
    x = np.asarray(x, np.float64)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    c = [x[rng.integers(len(x))]]
    d2 = ((x - c[0]) ** 2).sum(1)
    for _ in range(1, k):
        c.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(len(x))])
        d2 = np.minimum(d2, ((x - c[-1]) ** 2).sum(1))
    cen = np.stack(c)
    for _ in range(iters):
        lab = nn_index(x, cen)
        new = np.stack([x[lab == j].mean(0) if (lab == j).any() else cen[j] for j in range(k)])
        if np.allclose(new, cen):
            break
        cen = new
    return cen


def three_sample_test(
    train: np.ndarray,
    heldout: np.ndarray,
    generated: np.ndarray,
    *,
    cells: int | None = None,
    min_cell: int = 5,
    seed: int = 0,
) -> dict:
    """Meehan et al.'s data-copying test on feature vectors [N,D] of T, P_n and Q_m.

    ``cells``: number of k-means cells on T (default: about one per 10 held-out samples, at most 20).
    A cell enters C_T only with at least ``min_cell`` held-out and ``min_cell`` generated samples.
    Returns the global Z_U with its one-sided p-value for copying (P[Z <= z]), C_T with its p-value,
    the per-cell table and the sample sizes."""
    t, p, q = (np.asarray(a, np.float64) for a in (train, heldout, generated))
    lp, lq = nn_distance(p, t), nn_distance(q, t)
    z_global = mann_whitney_z(lq, lp)
    k = cells if cells is not None else int(np.clip(len(p) // 10, 1, 20))
    centres = kmeans(t, k, seed=seed)
    cell_p = nn_index(p, centres)
    cell_q = nn_index(q, centres)
    rows, ws, zs = [], [], []
    for c in range(len(centres)):
        ip, iq = cell_p == c, cell_q == c
        row = {"cell": c, "n_heldout": int(ip.sum()), "n_generated": int(iq.sum()), "z_u": None}
        if ip.sum() >= min_cell and iq.sum() >= min_cell:
            row["z_u"] = mann_whitney_z(lq[iq], lp[ip])
            ws.append(ip.mean())
            zs.append(row["z_u"])
        rows.append(row)
    if ws:
        w = np.asarray(ws)
        c_t = float((w * np.asarray(zs)).sum() / w.sum())
        sd = float(np.sqrt((w**2).sum()) / w.sum())
        c_t_p = _phi(c_t / sd)
        used_frac = float(w.sum())
    else:
        c_t = c_t_p = None
        used_frac = 0.0
    return {
        "z_u": float(z_global),
        "p_copying": _phi(z_global),
        "c_t": c_t,
        "c_t_p_copying": c_t_p,
        "cells": len(centres),
        "cells_used": len(ws),
        "heldout_fraction_in_used_cells": used_frac,
        "min_cell": min_cell,
        "n_train": len(t),
        "n_heldout": len(p),
        "n_generated": len(q),
        "median_nn_distance": {"heldout": float(np.median(lp)), "generated": float(np.median(lq))},
        "per_cell": rows,
    }


def nn_index(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (
        torch.cdist(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64))
        .argmin(1)
        .numpy()
    )


# --- per-image flags: shift/flip/contrast-invariant normalized cross-correlation ---


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N,1,H,W] with replicated borders."""
    r = math.ceil(3 * sigma)
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))


def _detail(u8: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N,S,S] -> [N,1,size,size] float band-pass image: downsampled, a difference of Gaussians
    (sigma 0.7 px minus sigma size/16 px), so that neither the chest outline shared by all images nor
    the finest pixels (which a sub-pixel shift decorrelates) dominate the comparison."""
    x = torch.from_numpy(np.array(u8, dtype=np.float32))[:, None] / 255.0  # a copy: inputs may be read-only
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return _gauss_blur(x, 0.7) - _gauss_blur(x, size / 16)


class _Windows:
    """Training detail images [T,1,S,S] prepared for NCC search over shifts 0..2s of an (S-2s)^2 crop:
    their 2-D FFTs and the norms of their mean-centred windows [T,2s+1,2s+1]."""

    def __init__(self, tr: torch.Tensor, s: int):
        self.size, self.s, self.h = tr.shape[-1], s, tr.shape[-1] - 2 * s
        ones = torch.ones(1, 1, self.h, self.h)
        win_sum, win_sq = F.conv2d(tr, ones)[:, 0], F.conv2d(tr * tr, ones)[:, 0]
        self.norm = (win_sq - win_sum**2 / self.h**2).clamp_min(1e-12).sqrt()
        self.fft = torch.fft.rfft2(tr[:, 0])  # [T,S,S/2+1]

    def templates(self, gen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-mean centre crops of gen [G,1,S,S], zero-padded to S x S: (conj FFT [G,S,S/2+1], norms [G])."""
        s, h = self.s, self.h
        t = gen[:, 0, s : s + h, s : s + h]
        t = t - t.mean((1, 2), keepdim=True)  # zero mean: sum(t * w) = sum(t * (w - mean w))
        norm = t.flatten(1).norm(dim=1).clamp_min(1e-12)
        return torch.fft.rfft2(F.pad(t, (0, 2 * s, 0, 2 * s))).conj(), norm

    def ncc(self, t_fft: torch.Tensor, t_norm: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Best NCC over shifts of templates [G] against training images idx [G,K] (all when None):
        [G,K]. Cross-correlation by FFT; shifts 0..2s never wrap around (the crop is S-2s wide)."""
        n = 2 * self.s + 1
        if idx is None:
            prod = t_fft[:, None] * self.fft[None]  # [G,T,S,S/2+1]
            norm = self.norm[None]
        else:
            prod = t_fft[:, None] * self.fft[idx]  # [G,K,S,S/2+1]
            norm = self.norm[idx]
        num = torch.fft.irfft2(prod, s=(self.size, self.size))[..., :n, :n]
        return (num / (norm * t_norm.view(-1, 1, 1, 1))).flatten(2).amax(2)


def _ncc_search(w: _Windows, tr: torch.Tensor, gen: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """All-pairs best NCC over shifts (both flips of gen [G,1,S,S] vs tr [T,1,S,S]) -> [G,T]; direct
    convolution, which on CPU beats the FFT when every pair is needed."""
    s, h = w.s, w.h
    out = []
    for g in (gen, gen.flip(-1)):
        t = g[:, :, s : s + h, s : s + h]
        t = t - t.mean((2, 3), keepdim=True)
        tn = t.flatten(1).norm(dim=1).clamp_min(1e-12)
        best = [
            (F.conv2d(tr, t[i : i + chunk]) / (w.norm[:, None] * tn[i : i + chunk].view(1, -1, 1, 1)))
            .flatten(2).amax(2).T
            for i in range(0, len(g), chunk)
        ]  # fmt: skip
        out.append(torch.cat(best) if best else torch.zeros(0, len(tr)))
    return torch.maximum(*out)


def _best_over_flips(w: _Windows, gen: torch.Tensor, idx: torch.Tensor | None = None, chunk: int = 0) -> torch.Tensor:
    """max over {image, horizontally flipped image} of _Windows.ncc, in chunks of generated images."""
    n_ref = w.fft.shape[0] if idx is None else idx.shape[1]
    chunk = chunk or max(1, 4_000_000 // (n_ref * w.size * w.size))
    out = []
    for i in range(0, len(gen), chunk):
        g = gen[i : i + chunk]
        sub = None if idx is None else idx[i : i + chunk]
        v = torch.maximum(w.ncc(*w.templates(g), sub), w.ncc(*w.templates(g.flip(-1)), sub))
        out.append(v)
    return torch.cat(out) if out else torch.zeros(0, n_ref)


def max_ncc(
    gen_u8: np.ndarray, train_u8: np.ndarray, *, max_shift: int = 8, coarse: int | None = None, candidates: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """For every generated image: the highest NCC with any training image over integer shifts of up to
    ``max_shift`` pixels and a horizontal flip, and which training image it is.

    Template matching on band-pass images: the generated image's centre crop (border of width
    max_shift dropped) slides over each training image; the NCC of the crop with the window under it
    is the Pearson correlation of the two pixel sets. Coarse to fine: a full search at ``coarse`` px
    (default 32, or 16 beyond a million pairs, where the all-pairs search would take minutes on a CPU)
    picks each generated image's ``candidates`` best training images (either flip), which are then
    searched at the images' own resolution (at most 64 px). Returns (ncc [G], index [G])."""
    size_in = np.asarray(train_u8).shape[-1]
    fine = min(size_in, 64)
    k = min(candidates, len(train_u8))
    s_f = max(1, min(round(max_shift * fine / size_in), fine // 4))  # the crop keeps at least half the image
    if coarse is None:
        coarse = 32 if len(gen_u8) * len(train_u8) <= 1_000_000 else 16
    if fine > coarse and len(train_u8) > k:
        s_c = max(1, min(round(max_shift * coarse / size_in), coarse // 4))
        tr_c = _detail(train_u8, coarse)
        cand = _ncc_search(_Windows(tr_c, s_c), tr_c, _detail(gen_u8, coarse)).topk(k, dim=1).indices  # [G,K]
    else:
        cand = torch.arange(len(train_u8)).expand(len(gen_u8), -1)
    w_f = _Windows(_detail(train_u8, fine), s_f)
    v = _best_over_flips(w_f, _detail(gen_u8, fine), cand)  # [G,K]
    top, j = v.max(1)
    return top.numpy().astype(np.float64), cand.gather(1, j[:, None])[:, 0].numpy()


def copy_flags(
    gen_u8: np.ndarray,
    train_u8: np.ndarray,
    *,
    threshold: float = 0.95,
    max_shift: int = 8,
) -> dict:
    """Flag generated images whose shift/flip/contrast-invariant NCC with a training image is at
    least ``threshold``. Returns the flags and the NCC distribution. On 64 px CXRs, held-out real
    images reach NCC 0.88 at the 95th percentile (covid-cxnet); pairs above 0.95 there are the same
    study published twice."""
    ncc, idx = max_ncc(gen_u8, train_u8, max_shift=max_shift)
    flagged = np.nonzero(ncc >= threshold)[0]
    return {
        "method": f"max NCC over ±{max_shift} px shifts and a horizontal flip (band-pass images, up to 64 px)",
        "threshold": threshold,
        "n_flagged": len(flagged),
        "flagged": [{"fake": int(k), "real": int(idx[k]), "ncc": float(ncc[k])} for k in flagged],
        "ncc": {f"p{q}": float(np.percentile(ncc, q)) for q in (50, 95, 100)} if len(ncc) else {},
        "max_ncc": ncc,
        "nearest": idx,
    }
