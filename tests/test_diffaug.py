"""DiffAugment against the reference algorithm's distributions (Zhao et al. 2020), by closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxraug.families.diffaug import DiffAugment, brightness, contrast, cutout, saturation, translation


def _cutout_closed_form(n: int, cut: int) -> tuple[np.ndarray, float]:
    """Per-index probability of being covered and the mean covered length, for an offset o uniform on
    0 .. n - (cut % 2) and the box o - cut//2 .. o - cut//2 + cut - 1 clipped to 0 .. n-1."""
    offsets = np.arange(0, n + 1 - cut % 2)
    idx = np.arange(n)
    covered = (idx[None] >= offsets[:, None] - cut // 2) & (idx[None] < offsets[:, None] - cut // 2 + cut)
    return covered.mean(0), covered.sum(1).mean()


def test_cutout_matches_the_reference_distribution():
    n, draws = 64, 10_000
    p_row, mean_len = _cutout_closed_form(n, 32)
    area = mean_len**2 / n**2  # rows and columns independent
    assert area == pytest.approx(0.189, abs=5e-4) and p_row[-1] == pytest.approx(17 / 65)  # the figures
    g = torch.Generator().manual_seed(0)
    cut_rows = torch.zeros(n, dtype=torch.float64)
    cut_cols = torch.zeros(n, dtype=torch.float64)
    cut_area = 0.0
    for _ in range(draws // 2000):
        m = cutout(torch.ones(2000, 1, n, n), 0.5, generator=g)[:, 0] == 0  # [B, H, W] cut pixels
        cut_area += m.double().mean((1, 2)).sum().item()
        cut_rows += m.any(2).double().sum(0)
        cut_cols += m.any(1).double().sum(0)
    assert cut_area / draws == pytest.approx(area, abs=0.004)  # sd of the mean ~0.0012
    # each row/column: a binomial over 10k draws, sd <= 0.005
    assert np.abs(cut_rows.numpy() / draws - p_row).max() < 0.02
    assert np.abs(cut_cols.numpy() / draws - p_row).max() < 0.02
    assert cut_rows[-1].item() / draws == pytest.approx(0.2615, abs=0.02)


def test_cutout_odd_box_and_fill():
    # 30 px, ratio 0.5 -> c = 15 (odd): offsets 0..29, box o-7 .. o+7
    p_row, _ = _cutout_closed_form(30, 15)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6000, 1, 30, 30) + 1  # never 0 before the cut
    m = cutout(x, 0.5, generator=g)[:, 0] == 0
    assert np.abs(m.any(2).double().mean(0).numpy() - p_row).max() < 0.025
    box_h, box_w = m.any(2).sum(1), m.any(1).sum(1)
    assert (m.sum((1, 2)) == box_h * box_w).all()  # one rectangle per image
    assert box_h.max() == 15 and box_h.min() == 8  # full box, or clipped to c - c//2 at the edge


def test_translation_shift_distribution_and_zero_fill():
    n, draws = 32, 6000
    s = int(n * 0.125 + 0.5)  # 4
    x = (torch.arange(n * n, dtype=torch.float32) + 1).view(1, 1, n, n).expand(draws, 1, n, n)
    out = translation(x, 0.125, generator=torch.Generator().manual_seed(2))[:, 0]
    v = out[:, n // 2, n // 2].long() - 1  # pixel (16,16) shows source (16 + ty, 16 + tx)
    ty, tx = v // n - n // 2, v % n - n // 2
    for t in (ty, tx):
        freq = torch.bincount(t + s, minlength=2 * s + 1).double() / draws
        assert len(freq) == 2 * s + 1 and (freq - 1 / (2 * s + 1)).abs().max() < 0.03  # U{-4..4}
    # every output pixel is the shifted source pixel, or 0 where the source lies outside the frame
    i = torch.arange(n).view(1, n, 1)
    j = torch.arange(n).view(1, 1, n)
    si, sj = i + ty.view(-1, 1, 1), j + tx.view(-1, 1, 1)
    inside = (si >= 0) & (si < n) & (sj >= 0) & (sj < n)
    expected = torch.where(inside, si.clamp(0, n - 1) * n + sj.clamp(0, n - 1) + 1, 0).float()
    assert torch.equal(out, expected)


def test_color_distributions():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(20_000, 1, 4, 4) * 2 - 1
    d = (brightness(x, generator=g) - x)[:, 0, 0, 0]  # u - 0.5, u ~ U[0,1)
    assert d.min() >= -0.5 and d.max() < 0.5
    assert d.mean().item() == pytest.approx(0.0, abs=0.01) and d.var().item() == pytest.approx(1 / 12, abs=0.003)
    m = x.mean((1, 2, 3), keepdim=True)
    f = ((contrast(x, generator=g) - m) / (x - m))[:, 0, 0, 0]  # u + 0.5
    assert f.min() >= 0.5 - 1e-4 and f.max() < 1.5 + 1e-4 and f.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(saturation(x, generator=g), x)  # one channel: the channel mean is the pixel itself
    rgb = torch.rand(20_000, 3, 2, 2)
    mc = rgb.mean(1, keepdim=True)
    k = ((saturation(rgb, generator=g) - mc) / (rgb - mc))[:, 0, 0, 0]  # 2u
    assert k.mean().item() == pytest.approx(1.0, abs=0.02) and k.max() < 2 + 1e-3


def test_diffaugment_is_seeded_and_differentiable():
    x = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    aug = DiffAugment("color,translation,cutout")
    a = aug(x, generator=torch.Generator().manual_seed(5))
    b = aug(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        DiffAugment("rotate")
