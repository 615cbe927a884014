"""What a training run shows while it runs: losses synced every ``log_every`` steps (checked for divergence, on
the progress bar with images/s), the fixed-input preview grids, ``losses.csv``/``losses.png``/TensorBoard, and the
FID hook that keeps ``best.pt``. A mixin of :class:`cxraug.train.engine.Trainer`."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from cxraug.config import to_dict
from cxraug.errors import CXRAugError
from cxraug.families.base import Family
from cxraug.io import atomic_path
from cxraug.plotting import plot_curves, save_grid
from cxraug.train.setup import FIXED_SEED

log = logging.getLogger("cxraug.train")


class TrainingDiverged(CXRAugError):
    pass


class TrainingOutputs:
    """Logs, previews, curves and the FID hook."""

    def _log(self, pending: list[dict[str, torch.Tensor]], bar, rate: float) -> None:
        keys = sorted({k for p in pending for k in p})
        stacked = {k: torch.stack([p[k].float() for p in pending if k in p]).mean() for k in keys}
        vals = {k: float(v) for k, v in zip(keys, torch.stack(list(stacked.values())).cpu().tolist())}
        for k, v in vals.items():
            if not np.isfinite(v) or abs(v) > 1e7:
                raise TrainingDiverged(
                    f"{k} became {v} at step {self.step}: training diverged. The last good checkpoint is "
                    f"{self.run_dir / 'checkpoints' / 'last.pt'}; lower the learning rates or use another preset."
                )
            self.history.setdefault(k, []).append([self.step, v])
        self.history.setdefault("images_per_s", []).append([self.step, rate])
        bar.set_postfix({**{k: f"{v:.3f}" for k, v in vals.items()}, "img/s": f"{rate:.0f}"})

    def generator_family(self, use_ema: bool = True) -> Family:
        """The models-level sampler around the current EMA (or live) generator, as synthesis would load it."""
        g = self.ema.module if use_ema and self.ema is not None else self.acc.unwrap_model(self.main_generator)
        real = torch.from_numpy(np.nan_to_num(np.asarray(self.data_a.labels, np.float32)))
        return self.spec(g, to_dict(self.cfg), self.class_names, real)

    @torch.no_grad()
    def sample(self, n: int = 64, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Preview images from the EMA generator (or the live one): [n,1,S,S] in [-1,1] on CPU, the same
        noise (or source images) at every call. Translating generators give one per fixed source image."""
        fixed = torch.Generator().manual_seed(FIXED_SEED)
        imgs, _ = self.generator_family().preview(n, labels=labels, source=self.fixed_source, generator=fixed)
        return imgs

    def save_samples(self) -> Path:
        dest = self.run_dir / "samples" / f"step-{self.step:06d}.png"
        imgs = self.sample()
        if self.spec.takes_source:  # row of inputs above their translations
            imgs = torch.cat([self.fixed_source, imgs])
        save_grid(imgs, dest, nrow=8)
        save_grid(imgs, self.run_dir / "samples.png", nrow=8)
        return dest

    def save_curves(self) -> None:
        rows = [(s, k, v) for k, pts in self.history.items() for s, v in pts]
        with atomic_path(self.run_dir / "losses.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "metric", "value"])
            w.writerows(sorted(rows))
        series = {k: [tuple(p) for p in v] for k, v in self.history.items() if k not in ("images_per_s", "fid")}
        plot_curves(series, self.run_dir / "losses.png", title=f"{self.cfg.preset} losses")
        try:  # TensorBoard as well, when it is installed
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        with SummaryWriter(str(self.run_dir / "tb")) as tb:
            for s, k, v in rows:
                tb.add_scalar(k, v, s)

    def _evaluate(self) -> None:
        fid = float(self.eval_hook(self))
        self.history.setdefault("fid", []).append([self.step, fid])
        if self.best_fid is None or fid < self.best_fid:
            self.best_fid = fid
            self.save_checkpoint(self.run_dir / "checkpoints" / "best.pt")
        log.info("step %d: FID %.2f (best %.2f)", self.step, fid, self.best_fid)

