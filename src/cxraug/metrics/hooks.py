"""FID during training: every ``fid_every`` steps, encoder FID of ``fid_n`` EMA samples vs the images the
generator learns to make; the engine keeps ``checkpoints/best.pt`` at the lowest value.

The hook samples through the models-level generator family (``trainer.generator_family()``), as
synthesis does, so it works for every family: translating generators translate a fixed set of source
images. It reads a few trainer attributes and imports nothing from ``cxraug.train``."""

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
        real = trainer.real_images  # uint8 [N,S,S]
        if self._ext is None:
            self._ext = get_extractor(self.features, real_images=real, progress=False, device=trainer.device)
        fr = cached_features(self._ext, real, progress=False)
        g = trainer.generator_family()
        source = trainer.source_images  # None for noise generators
        n = trainer.cfg.fid_n if source is None else min(trainer.cfg.fid_n, len(source))
        gen = torch.Generator().manual_seed(self.seed)  # the same fixed sample every time
        fake = []
        for i in range(0, n, 128):
            b = min(128, n - i)
            imgs, _ = g.sample(b, source=None if source is None else source[i : i + b], generator=gen)
            fake.append(tensor_to_u8(imgs))
        return fid_from_features(fr, extract(self._ext, np.concatenate(fake), progress=False))
