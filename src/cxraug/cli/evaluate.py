"""``cxraug evaluate`` and ``cxraug encoder train``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxraug.cli.args import add_source_args, require, source_config


def _dataset(src, size: int, progress: bool, left_out: list[str] | None = None):
    """The cached dataset of one input: a path (auto-detected) or a ``DataConfig`` from the source flags.
    ``left_out`` collects the files it skipped (for the run folder's skipped.csv)."""
    from dataclasses import replace

    from cxraug.data.source import DataConfig, load_dataset, skipped_lines

    cfg = replace(src, size=size) if isinstance(src, DataConfig) else DataConfig(path=str(src), size=size)
    ds = load_dataset(cfg, progress=progress)
    if left_out is not None:
        left_out += [x for x in skipped_lines(ds) if x not in left_out]
    return ds


def _real_images(src, size: int, cls: str | None, progress: bool, left_out: list[str] | None = None) -> np.ndarray:
    ds = _dataset(src, size, progress, left_out)
    return np.asarray((ds.only_class(cls) if cls else ds).images)


def _real_with_patients(src, size: int, cls: str | None, progress: bool,
                        left_out: list[str] | None = None) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    ds = _dataset(src, size, progress, left_out)
    ds = ds.only_class(cls) if cls else ds
    return np.asarray(ds.images), list(ds.patient_ids)


def _fake_images(fake: str, n: int, size: int, seed: int, progress: bool, source=None,
                 left_out: list[str] | None = None) -> tuple[np.ndarray, str]:  # fmt: skip
    """``n`` generated images: from a checkpoint (a translating one translates each ``source`` image once;
    ``source`` is a path or a ``DataConfig``), or a seeded random ``n`` of a folder/CSV of generated images."""
    p = Path(fake)
    if p.is_file() and p.suffix in (".pt", ".pth"):
        from cxraug.synth.generate import generate

        # a translating generator: each source image once
        imgs, _, info = generate(p, n, seed=seed, source=source, left_out=left_out)
        if imgs.shape[-1] != size:
            from cxraug.data.preprocess import resize

            imgs = np.stack([resize(i, size, "direct") for i in imgs])
        return imgs, f"checkpoint {p} ({info['preset']})"
    imgs = _real_images(fake, size, None, progress, left_out)
    if len(imgs) > n:  # a seeded random n, as for the real set: a folder's first files are one corner of it
        imgs = imgs[np.sort(np.random.default_rng(seed).choice(len(imgs), n, replace=False))]
    return imgs, f"folder {p}"


#: The most images per set ``evaluate`` compares (each set is held in memory with its features).
MAX_EVAL_N = 200_000


def cmd_evaluate(a: argparse.Namespace) -> int:
    from cxraug.config import save_config
    from cxraug.data import skipped
    from cxraug.data.source import check_outputs
    from cxraug.io import check_device, new_run_dir, write_json
    from cxraug.metrics import evaluate_images
    from cxraug.metrics.memorization import closest_pairs_grid

    require(a.n >= 2, f"--n must be >= 2 images per set, got {a.n}")
    require(a.n <= MAX_EVAL_N, f"--n must be <= {MAX_EVAL_N:,} images per set, got {a.n:,}")
    require(1 <= a.k < a.n, f"--k must be within 1..n-1 ({a.n - 1}), got {a.k}")
    require(16 <= a.size <= 1024, f"--size must be within 16..1024, got {a.size}")
    require(a.seed >= 0, f"--seed must be >= 0, got {a.seed}")
    check_device(a.device)
    real_src, source, held = (source_config(a, x, a.size) for x in (a.real, a.source, a.heldout))
    check_outputs([x for x in (real_src, a.fake, source, held) if x], a.out)  # before any work: none in an input

    left_out: list[str] = []  # every input's skipped files, for the run folder's skipped.csv
    real, pids = _real_with_patients(real_src, a.size, a.cls, not a.quiet, left_out)
    heldout = _real_images(held, a.size, a.cls, not a.quiet, left_out) if held else None
    fake, fake_desc = _fake_images(a.fake, a.n, a.size, a.seed, not a.quiet, source, left_out)
    res = evaluate_images(real, fake, features=a.features, n=a.n, k=a.k, seed=a.seed, progress=not a.quiet,
                          device=a.device, heldout_u8=heldout, patient_ids=pids,
                          allow_encoder_overlap=a.allow_encoder_overlap)  # fmt: skip
    res.update({"real": a.real, "real_class": a.cls, "fake": fake_desc, "size": a.size, "heldout": a.heldout})
    run = new_run_dir(a.out, "evaluate")
    save_config(vars(a) | {"func": None}, run / "config.yaml")
    write_json(run / "metrics.json", res)
    closest_pairs_grid(real, fake, res["memorization"], run / "closest_pairs.png", heldout_u8=heldout,
                       real_indices=res["real_indices"])  # fmt: skip
    print(format_table(res))
    skipped.save(run, left_out)
    print(f"run folder: {run}")
    return 0


def _floor_line(f: dict | None) -> str:
    if not f:
        return "  floor      n/a (fewer than 2 real images in a half of the reference)"
    r, g = f["real"], f["generated"]
    return (f"  floor      real vs real FID {r['fid']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], generated "
            f"{g['fid']:.3f} [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] at the same n ({f['n_a']} vs {f['n']}; "
            f"{f['split']})")  # fmt: skip


def format_table(res: dict) -> str:
    """Every number with its backbone and n."""
    m = res.get("memorization", {})
    tag = f"[{res['features']}, n_real={res['n_real']}, n_fake={res['n_fake']}]"
    ci = res.get("fid_ci95") or [float("nan")] * 2
    inf = res.get("fid_inf")
    lines = [
        f"features: {res['features']} ({res['feature_dim']}-d)   n_real={res['n_real']}  n_fake={res['n_fake']}",
        f"  FID        {res['fid']:.3f}  95% CI [{ci[0]:.3f}, {ci[1]:.3f}]  {tag}",
        f"  FID-inf    {inf:.3f}  (Chong & Forsyth: FID at n = "
        f"{', '.join(str(x) for x in res['fid_inf_fit']['ns'])}, extrapolated to n -> inf)  {tag}"
        if inf is not None
        else "  FID-inf    n/a (too few images)",
        _floor_line(res.get("floor")),
        f"  KID        {res['kid_mean']:.5f} ± {res['kid_std']:.5f}  ({res.get('kid_subsets')} subsets of "
        f"{res.get('kid_subset_size')})  {tag}",
        f"  precision  {res['precision']:.3f}    recall   {res['recall']:.3f}    (k={res.get('k')})  {tag}",
        f"  density    {res['density']:.3f}    coverage {res['coverage']:.3f}    (k={res.get('k')})  {tag}",
    ]
    if res.get("encoder"):
        lines.append(f"  encoder: {res['encoder']}")
    div = res.get("diversity")
    if div and div["synthetic"]["ms_ssim"] is not None and div["real"]["ms_ssim"] is not None:
        sy, re_ = div["synthetic"], div["real"]
        lines.append(
            f"  diversity  MS-SSIM synthetic {sy['ms_ssim']:.3f} ± {sy['se']:.3f}, real {re_['ms_ssim']:.3f} ± "
            f"{re_['se']:.3f}  ({sy['pairs']} random pairs, {sy['scales']} scales; higher = less diverse)"
        )
    if res.get("spectral"):
        from cxraug.metrics.spectral import format_spectral

        lines += format_spectral(res["spectral"])
    if m:
        th = m["thresholds"]
        lines.append(
            f"memorization: {m['n_flagged']} of {m['n_fake']} flagged as near-copies of the {m['n_real']} real images "
            f"(pixel RMSE < {th['pixel_rmse']}, feature distance < {th['feature_ratio']}x the real-to-real median, "
            f"or NCC >= {th.get('ncc')} over ±8 px shifts and flips); median pixel RMSE to nearest real "
            f"{m['pixel_rmse'].get('p50', float('nan')):.3f}"
        )
        near = m.get("nearest_anywhere")
        if near:
            counts = ", ".join(f"{v} nearest a {k} image" for k, v in near["nearest_set_counts"].items())
            lines.append(f"nearest real image across every real set given [{m.get('copy_features')}]: {counts}")
        t3 = m.get("three_sample")
        if t3:
            ct = (f"C_T {t3['c_t']:.2f} (p={t3['c_t_p_copying']:.3g}, {t3['cells_used']} of {t3['cells']} cells)"
                  if t3["c_t"] is not None else "C_T n/a (no cell with enough samples)")  # fmt: skip
            lines.append(
                f"data-copying test (Meehan et al. 2020) [{res['features']}, n_train={t3['n_train']}, "
                f"n_heldout={t3['n_heldout']}, n_generated={t3['n_generated']}]: Z_U {t3['z_u']:.2f} "
                f"(p={t3['p_copying']:.3g}), {ct}; Z << 0: copying, Z >> 0: under-fitting"
            )
        elif "three_sample" in m:
            lines.append("data-copying test: not run (give --heldout: real images the generator never saw)")
    lines.append("(numbers are comparable only within one feature extractor; spectral ones only at one image size)")
    return "\n".join(lines)


def cmd_encoder_train(a: argparse.Namespace) -> int:
    from cxraug.data import skipped
    from cxraug.data.source import check_outputs
    from cxraug.io import new_run_dir
    from cxraug.metrics.encoder import save_encoder, train_encoder

    require(a.steps is None or a.steps >= 1, f"--steps must be >= 1, got {a.steps}")
    require(16 <= a.size <= 1024, f"--size must be within 16..1024, got {a.size}")
    require(a.seed >= 0, f"--seed must be >= 0, got {a.seed}")
    data = source_config(a, a.data, a.size)
    check_outputs([data], a.out)

    left_out: list[str] = []
    real = _real_images(data, a.size, a.cls, not a.quiet, left_out)
    length = {"steps": a.steps} if a.steps is not None else {}  # else train_encoder's default
    enc = train_encoder(real, seed=a.seed, progress=not a.quiet, **length)
    run = new_run_dir(a.out, "encoder")
    path = save_encoder(enc, run / "encoder.safetensors")
    print(f"encoder: {path}  (use --features encoder:{path})")
    skipped.save(run, left_out)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug evaluate`` and ``cxraug encoder train``."""
    p = sub.add_parser(
        "evaluate",
        help="FID / KID / precision-recall / density-coverage, spectral check + memorization audit",
        description="Compare generated images (a folder or a checkpoint) with real ones. Writes metrics.json and "
        "closest_pairs.png to a new run folder. Numbers are comparable only within one feature extractor; the "
        "spectral check (the sets' radial power spectra, training-free) only at one --size.",
    )
    p.add_argument("--real", required=True, help="real images: folder, CSV, cache or phantom spec")
    p.add_argument("--fake", required=True, help="generated images: folder, or a training checkpoint (.pt)")
    p.add_argument("--source", help="with a CycleGAN checkpoint as --fake: the images it translates (each once)")
    p.add_argument("--class", dest="cls", help="use only this class of the real set")
    p.add_argument(
        "--features",
        default="auto",
        help="cxr (the chest-X-ray feature space shipped with cxraug, the same for everyone; docs/cxr-features.md) "
        "| inception | inception-768 | xrv | xrv:PATH | encoder:PATH | trained (an encoder trained on a "
        "patient-level half of the real set, the other half being the reference) | auto (inception if its "
        "weights are on disk, else cxr); default %(default)s",
    )
    p.add_argument(
        "--heldout", help="real images the generator never saw (e.g. its test split): runs the data-copying test"
    )
    p.add_argument(
        "--allow-encoder-overlap",
        action="store_true",
        help="evaluate against reference images the encoder:PATH was trained on (refused otherwise)",
    )
    p.add_argument("--n", type=int, default=5000, help="max images per set; default %(default)s")
    p.add_argument("--k", type=int, default=5, help="k for precision/recall/density/coverage; default %(default)s")
    p.add_argument("--size", type=int, default=64, help="image size for comparison; default %(default)s")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, subsets and bootstrap; default %(default)s")
    p.add_argument(
        "--device", default="auto", help="where features are computed: auto (CUDA, MPS, else CPU) | cpu | cuda:N"
    )
    add_source_args(p, "each real-image input (--real, --heldout, --source; --fake is read as written)")
    p.set_defaults(func=cmd_evaluate)

    e = sub.add_parser("encoder", help="train the offline feature encoder for the metrics")
    esub = e.add_subparsers(dest="encoder_command", metavar="ACTION")
    et = esub.add_parser(
        "train", help="train an encoder on real images", description="Train the offline metric encoder on real CXRs."
    )
    et.add_argument("--data", required=True, help="real training images (folder, CSV, cache, phantom)")
    et.add_argument("--class", dest="cls", help="use only this class")
    et.add_argument("--size", type=int, default=64, help="image size it is trained at (evaluate --size must match); default %(default)s")
    et.add_argument("--steps", type=int, default=None,
                    help="training steps (default: the offline encoder's own length, the one `--features auto` "
                         "trains with)")  # fmt: skip
    et.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches; default %(default)s")
    add_source_args(et, "--data")
    et.set_defaults(func=cmd_encoder_train)
