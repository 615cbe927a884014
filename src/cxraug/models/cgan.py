"""Class-conditional GAN for label vectors (Sundaram & Hulkund: 14 CheXpert pathologies).

Generator: ``[z ; W_y y]`` -> DCGAN generator, where ``y`` is a multi-hot label vector of any
length (one-hot for single-label data). Discriminator: projection discriminator (Miyato & Koyama
2018) with spectral norm: ``D(x, y) = psi(phi(x)) + <V y, phi(x)>``. Trained with the hinge loss.
The DCGAN init (N(0, 0.02)) is applied to the plain layers *before* spectral norm wraps them: applied
afterwards it only overwrote the recomputed ``weight`` and left the trained ``original`` at torch's
default init (std 0.14 instead of 0.02).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cxraug.models.common import as_labels, dcgan_init, n_doublings
from cxraug.models.dcgan import DCGANGenerator


class ConditionalGenerator(nn.Module):
    def __init__(self, n_labels: int, z_dim: int = 100, size: int = 64, width: int = 64, emb_dim: int = 32):
        super().__init__()
        self.z_dim, self.size, self.n_labels = z_dim, size, n_labels
        self.embed = nn.Linear(n_labels, emb_dim, bias=False)  # multi-hot y [B, K] -> [B, emb]
        self.body = DCGANGenerator(z_dim + emb_dim, size, width)
        nn.init.normal_(self.embed.weight, 0, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = as_labels(y, z.size(0), self.n_labels, z.device)
        return self.body(torch.cat([z.flatten(1), self.embed(y)], 1))


class ProjectionDiscriminator(nn.Module):
    def __init__(self, n_labels: int, size: int = 64, width: int = 64, channels: int = 1):
        super().__init__()
        self.n_labels = n_labels
        k = n_doublings(size)
        ch = [width * 2 ** min(i, 4) for i in range(k)]
        convs: list[nn.Module] = []
        cin = channels
        for cout in ch:  # H -> H/2 each; no normalisation besides spectral norm
            convs.append(nn.Conv2d(cin, cout, 4, 2, 1))
            cin = cout
        psi, embed = nn.Linear(cin, 1), nn.Linear(n_labels, cin, bias=False)
        for m in (*convs, psi, embed):  # init first: spectral norm then keeps it as its `original`
            dcgan_init(m)
        self.phi = nn.Sequential(
            *[x for c in convs for x in (spectral_norm(c), nn.LeakyReLU(0.2, True))]
        )  # -> [B,C,4,4]
        self.psi = spectral_norm(psi)
        self.embed = spectral_norm(embed)  # V

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.phi(x).sum(dim=(2, 3))  # global sum pooling -> [B, C]
        y = as_labels(y, x.size(0), self.n_labels, x.device)
        return self.psi(h).flatten() + (self.embed(y) * h).sum(1)


def sample_label_vectors(real_labels: np.ndarray, n: int, *, pathology: int | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` label vectors drawn from the real label distribution, restricted to rows where
    ``pathology`` is positive (so co-occurring findings keep their real frequencies)."""
    lab = np.nan_to_num(np.asarray(real_labels, np.float32))
    rows = lab if pathology is None else lab[lab[:, pathology] > 0.5]
    if len(rows) == 0:
        raise ValueError(f"no real image has label index {pathology}")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rows[rng.integers(len(rows), size=n)])
