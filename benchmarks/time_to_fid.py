"""Time-to-quality: wall time for a preset (default WGAN-GP-64) on covid-cxnet to reach a FID threshold.

    python benchmarks/time_to_fid.py [--preset wgan-gp-64] [--features cxr] [--threshold T] [--every 50]
                                     [--width 32] [--max-steps 1500] [--max-seconds 0]

FID of 256 EMA samples every ``--every`` steps against all real images, at the preset's image size, in
``--features``: ``cxr`` (default), the shipped CXR feature space, where the threshold defaults to twice the
real-vs-real floor at the same n (printed first: 256 of the real images drawn at random against all of them, the
comparison the samples get: what a generator that returned its training images would score); or ``trained``, cxraug's offline encoder trained first on the same real images
(its time reported separately; threshold 10, the first runs' setting, numbers not comparable across runs).
Evaluation time is included in the wall time: it is what a user waits for. ``--max-seconds`` stops a run that
has not reached the threshold (its trace is still written).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Reached(Exception):
    pass


class OutOfTime(Exception):
    pass


def subset_floor(real, n: int, seed: int = 0) -> float:
    """FID of ``n`` real images drawn at random against all of them (the hook's comparison: n images against every
    real one): what a generator that returned its training images would score at this n. Not
    :func:`cxraug.metrics.fid_floor` (two disjoint halves: what new images of the same collection score)."""
    import numpy as np

    from cxraug.metrics.features import cached_features, extract, get_extractor
    from cxraug.metrics.fid import fid_from_features

    real = np.asarray(real)
    ext = get_extractor("cxr", progress=False)
    pick = np.random.default_rng(seed).choice(len(real), n, replace=False)
    return fid_from_features(cached_features(ext, real, progress=False), extract(ext, real[pick], progress=False))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "covid-cxnet"))
    p.add_argument("--threshold", type=float, help="FID to reach (default: cxr 2x the floor, trained 10)")
    p.add_argument("--features", choices=["cxr", "trained"], default="cxr")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--preset", default="wgan-gp-64")
    p.add_argument("--width", type=int, default=32, help="0: the preset's own width")
    p.add_argument("--max-steps", type=int, default=1500)
    p.add_argument("--max-seconds", type=float, default=0, help="stop after this much training wall time (0: no limit)")
    p.add_argument("--encoder", help="encoder.safetensors (default: train one, 400 steps)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override, e.g. amp=bf16"
    )
    a = p.parse_args()

    from cxraug.config import load_config
    from cxraug.data.source import DataConfig, load_dataset
    from cxraug.metrics.encoder import save_encoder, train_encoder
    from cxraug.metrics.hooks import EncoderFIDHook
    from cxraug.train.config import TrainConfig, preset
    from cxraug.train.engine import Trainer

    work = Path(tempfile.mkdtemp(prefix="cxraug-ttq-"))
    base = preset(a.preset)
    ds = load_dataset(DataConfig(a.data, size=base["data"]["size"]), progress=False)
    t0 = time.perf_counter()
    floor = None
    if a.features == "cxr":
        features, t_enc = "cxr", 0.0
        floor = subset_floor(ds.images, 256)
        print(f"real-vs-real floor (256 random real vs all {len(ds)}): FID {floor:.2f}", file=sys.stderr)
        a.threshold = a.threshold if a.threshold is not None else round(2 * floor, 2)
    else:
        enc = a.encoder or str(save_encoder(train_encoder(ds.images, steps=400, progress=False), work / "enc.safetensors"))
        features, t_enc = f"encoder:{enc}", time.perf_counter() - t0
        a.threshold = a.threshold if a.threshold is not None else 10.0
    width = [f"width={a.width}"] if a.width else []
    cfg = load_config(TrainConfig, overrides=[*width, f"steps={a.max_steps}", f"fid_every={a.every}",
                                          "sample_every=100000", "ckpt_every=100000", *a.set], base=base)  # fmt: skip
    hook = EncoderFIDHook(features)
    trace: list[dict] = []
    start = time.perf_counter()

    def eval_hook(trainer) -> float:
        fid = hook(trainer)
        trace.append({"step": trainer.step, "seconds": round(time.perf_counter() - start, 1), "fid": round(fid, 3)})
        print(f"step {trainer.step:5d}  {trace[-1]['seconds']:8.1f} s  FID {fid:7.2f}", file=sys.stderr, flush=True)
        if fid <= a.threshold:
            raise Reached
        if a.max_seconds and trace[-1]["seconds"] >= a.max_seconds:
            raise OutOfTime
        return fid

    tr = Trainer(cfg, ds, work / "run", progress=False, eval_hook=eval_hook)
    reached = False
    try:
        tr.fit()
    except Reached:
        reached = True
    except OutOfTime:
        pass
    out = {"preset": a.preset, "device": str(tr.device), "amp": tr.amp, "cuda_graphs": tr._graph is not None,
           "overrides": a.set, "features": a.features, "floor": floor, "threshold": a.threshold, "reached": reached, "trace": trace, "encoder_train_s": round(t_enc, 1),
           "width": a.width, "images": len(ds)}  # fmt: skip
    if reached:
        print(f"{a.preset} {' '.join(a.set) or 'defaults'}: FID <= {a.threshold} after {trace[-1]['step']} steps, {trace[-1]['seconds']:.0f} s "
              f"(+ {t_enc:.0f} s to train the encoder)")  # fmt: skip
    else:
        last = trace[-1] if trace else {"fid": float("nan"), "step": 0, "seconds": 0}
        print(f"{a.preset} {' '.join(a.set) or 'defaults'}: FID {last['fid']:.2f} > {a.threshold} after {last['step']} steps, "
              f"{last['seconds']:.0f} s")  # fmt: skip
    dest = ROOT / "benchmarks" / "results" / f"time-to-fid-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
