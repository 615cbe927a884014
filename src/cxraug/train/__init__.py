"""Training: one engine (:class:`Trainer`), GAN losses as strategy objects, named presets."""

from __future__ import annotations

import os
from pathlib import Path

from cxraug.config import load_config, to_dict
from cxraug.errors import CheckpointError, CXRAugError, show_path
from cxraug.io import load_checkpoint, new_run_dir
from cxraug.models.common import pick_device
from cxraug.train.checks import check_resumable, check_train_config, fit_to_data
from cxraug.train.config import PRESETS, TrainConfig, preset, resolve_steps, steps_over_epochs
from cxraug.train.engine import Trainer, changed_settings

__all__ = ["PRESETS", "TrainConfig", "Trainer", "preset", "resume", "train"]


def train(
    preset_name: str = "wgan-gp-64",
    data: str = "phantom",
    out: str | os.PathLike = "runs",
    *,
    config: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    eval_hook=None,
    **kwargs,
) -> Path:
    """Train a GAN; returns the run folder. ``kwargs`` are TrainConfig fields (``steps=500``)."""
    from cxraug.data import skipped
    from cxraug.data.source import check_outputs, load_dataset, skipped_lines

    ov = [f"data.path={data}"] + [f"{k}={v}" for k, v in kwargs.items()] + list(overrides or [])
    ov = steps_over_epochs(ov)  # --steps beats a preset's epochs
    cfg = load_config(TrainConfig, config, overrides=ov, base=preset(preset_name))
    check_train_config(cfg)  # one clear line per bad value, before any work
    check_outputs([cfg.data], out)  # no run folder or cache inside an input
    ds = load_dataset(cfg.data, progress=progress)
    fit_to_data(cfg, ds)  # an empty --class is refused; the batch is capped at the training images
    resolve_steps(cfg, ds.counts(), len(ds), processes=int(os.environ.get("WORLD_SIZE", "1")))  # epochs -> steps, once
    run = _shared_run_dir(out, f"train-{cfg.preset}", cpu=pick_device(cfg.device).type == "cpu")
    skipped.save(run, skipped_lines(ds))  # the files left out of the training set, named when loaded
    _finish(Trainer(cfg, ds, run, progress=progress, eval_hook=eval_hook))
    return run


def _check_config_not_edited(path: Path, cfg: TrainConfig) -> None:
    """The run's config.yaml is what the checkpoint was trained with; one edited since (to change the run on
    resume) would be silently overwritten by the checkpoint's settings: refused instead, saying how to use it."""
    if not path.is_file():
        return
    try:
        on_disk = to_dict(load_config(TrainConfig, path, overrides=[]))
    except CXRAugError as e:
        raise CheckpointError(f"{show_path(path)} no longer reads as the run's config ({e})") from e
    diff = changed_settings(to_dict(cfg), on_disk)
    if diff:
        raise CheckpointError(f"{show_path(path)} was edited since the checkpoint ({', '.join(diff)}): a resume "
                              f"continues the checkpoint's settings; to train with the edited ones, start a new run: "
                              f"cxraug train --config {show_path(path)}")  # fmt: skip


def _finish(tr: Trainer) -> None:
    """Train, then (under `accelerate launch`/torchrun) take the process group down before the interpreter
    exits (:meth:`Trainer.close`), also when training stops with an error (divergence, Ctrl-C; then without
    the closing barrier, which a failed peer would never reach): a group left to interpreter finalisation
    aborts a rank (SIGABRT) now and then, more often under CPU load."""
    ok = False
    try:
        tr.fit()
        ok = True
    finally:
        tr.close(clean=ok)


def _shared_run_dir(out: str | os.PathLike, name: str, cpu: bool = False) -> Path:
    """A new run folder; under ``accelerate launch``/``torchrun`` the main process makes it and tells the others."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return new_run_dir(out, name)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=cpu)
    box = [str(new_run_dir(out, name)) if state.is_main_process else None]
    broadcast_object_list(box)
    return Path(box[0])


def resume(run_dir: str | os.PathLike, *, steps: int | None = None, progress: bool = True, eval_hook=None) -> Path:
    """Continue a run from ``run_dir/checkpoints/last.pt`` (same folder, same RNG streams)."""
    from cxraug.config import from_dict
    from cxraug.data.source import check_outputs, load_dataset

    run = Path(run_dir)
    ckpt = run / "checkpoints" / "last.pt" if run.is_dir() else run
    run = ckpt.parent.parent
    st = load_checkpoint(ckpt)
    check_resumable(st, ckpt)
    cfg = from_dict(TrainConfig, st["config"])
    _check_config_not_edited(run / "config.yaml", cfg)
    if steps is not None:
        cfg.steps = steps
    check_train_config(cfg)
    check_outputs([cfg.data], run)
    ds = load_dataset(cfg.data, progress=progress)
    fit_to_data(cfg, ds)
    tr = Trainer(cfg, ds, run, progress=progress, eval_hook=eval_hook)
    tr.load_state_dict(st)
    _finish(tr)
    return run
