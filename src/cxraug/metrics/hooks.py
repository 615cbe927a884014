"""FID during training: every ``fid_every`` steps, encoder FID of ``fid_n`` EMA samples vs the
training images; the engine keeps ``checkpoints/best.pt`` at the lowest value."""

from __future__ import annotations

import numpy as np
import torch

from cxraug.data.preprocess import tensor_to_u8
from cxraug.metrics.features import cached_features, extract, get_extractor
from cxraug.metrics.fid import fid_from_features


class EncoderFIDHook:
    def __init__(self, features: str = "auto", seed: int = 0):
        self.features, self.seed = features, seed
        self._ext = None

    @torch.no_grad()
    def __call__(self, trainer) -> float:
        real = np.asarray(trainer.data_a.images)
        if self._ext is None:
            spec = self.features if ":" in self.features or self.features != "auto" else "auto"
            self._ext = get_extractor(spec, real_images=real, progress=False, device=trainer.device)
        fr = cached_features(self._ext, real, progress=False)
        n = trainer.cfg.fid_n
        g = trainer.ema.module if trainer.ema is not None else trainer.acc.unwrap_model(trainer.main_generator)
        g.eval()
        gen = torch.Generator().manual_seed(self.seed)  # the same fixed sample every time
        z = torch.randn(n, trainer.cfg.z_dim, generator=gen).to(trainer.device)
        lab = np.nan_to_num(trainer.data_a.labels)
        y = torch.from_numpy(lab[torch.randint(len(lab), (n,), generator=gen).numpy()]).to(trainer.device)
        fake = np.concatenate([tensor_to_u8(g(z[i : i + 128], y[i : i + 128])) for i in range(0, n, 128)])
        return fid_from_features(fr, extract(self._ext, fake, progress=False))
