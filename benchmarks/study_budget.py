"""Where a study's time goes, and which settings fit a wall-time budget (issue 31: the headline study in <= 3 h).

    python benchmarks/study_budget.py [--config benchmarks/study-pneumonia.yaml] [--sizes 64 128] [--budget-h 3]

Measures, on the config's real images and through the study's own code, the unit cost of each stage as a study pays
it, at each size:

- ``prepare``: loading and caching the images, the patient split, the duplicate screen, the acquisition check
  (``Study.prepare``, once per study);
- one **GAN step** of the config's generator (``gan:``) and of StyleGAN2-ADA at that size (``--second``), through
  ``Study.generator_for`` at the 100 % regime (batch 64): trained for ``--gan-steps`` steps, then continued to three
  times that (the study's resume path), so cost = per-step x steps + a fixed part (networks, checkpoint);
- **synthesis**: ``Study.synthetic_for`` (every generator draws the same count: the top regime's need), images/s;
- one **classifier epoch** at the 100 % regime (``Study.run_one`` with ``epochs=1``: ``fit_classifier`` with the
  study's steps per epoch; ``result.json``'s ``seconds``: training, validation and the rest of the run);
- the **report's inputs** (``Study.save_report_inputs``: Grad-CAM, UMAP, the feature extractor's FID/KID/PR and the
  memorization audit of the synthetic images).

Then it multiplies by the grid: GANs and synthesis per (regime, seed), classifier runs per (arm, regime, seed), each
epoch the regime's steps (``Study.steps_per_epoch``) times the step cost plus one validation pass, and prints the
estimated total of the config at each size and the settings (epochs, GAN steps, seeds, ratio axis) that fit the
budget. Every stage is timed by the wall clock and by this process's CPU time: on a machine shared with other jobs
the wall clock is inflated, and CPU time / 2 cores is the estimate for the machine alone (the estimate the fit
uses; both are printed). Under heavy sharing (load average well above the core count) two torch threads also burn
CPU time spinning at their barriers, so CPU time overstates the work too: there, measure with ``--threads 1``. A
JSON record goes to ``--out`` after each size.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cxraug.classify.config import GanSpec, StudyConfig, load_study_config, study_arms
from cxraug.classify.study import Study

RATIOS = [0.5, 1.0, 2.0, 4.0]  # the issue's dose-response axis, priced whether or not the config enables it yet
SECOND = {64: ("stylegan2-ada-64", 16), 128: ("stylegan2-ada-128", 16)}  # BENCHMARKS.md §9's CPU setting: width 16


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def pair(c: Clock) -> dict[str, float]:
    return {"wall": round(c.wall, 3), "cpu": round(c.cpu, 3)}


def gan_cost(st: Study, spec: GanSpec, steps: int) -> dict:
    """Per-step and fixed cost of one study generator (regime 100 %, seed 0): ``steps`` steps, then continued to
    ``3 * steps`` (the resume path a longer ``gan.steps`` takes)."""
    st.cfg.gan = replace(spec, steps=steps)
    with Clock() as a:
        st.generator_for(1.0, st.cfg.seeds[0])
    st.cfg.gan = replace(spec, steps=3 * steps)
    with Clock() as b:
        st.generator_for(1.0, st.cfg.seeds[0])
    out = {}
    for k in ("wall", "cpu"):
        ta, tb = getattr(a, k), getattr(b, k)
        per = max(tb - ta, 1e-9) / steps  # tb - ta = (2 s - s) steps, the fixed parts cancel
        out[k] = {"per_step": round(per, 4), "fixed": round(max(ta - steps * per, 0.0), 3)}
    return out


def synth_cost(st: Study, n_ratio_max: int) -> dict:
    """Seconds per synthetic image through the study's synthesis (``synthetic_for``), and how many it draws."""
    st._syn_cache.clear()
    for f in (st.dir / "gans").rglob("synthetic-*.npy"):
        f.unlink()
    with Clock() as c:
        imgs = st.synthetic_for(1.0, st.cfg.seeds[0])
    n = len(imgs)
    return {"n": n, "n_with_ratios": max(n, n_ratio_max), "wall_per_image": c.wall / n, "cpu_per_image": c.cpu / n,
            "images_per_s_wall": n / c.wall, "images_per_s_cpu": n / max(c.cpu, 1e-9)}  # fmt: skip


def classifier_cost(st: Study, protocol: str) -> dict:
    """One epoch at the 100 % regime: the run's own record of its time, and the process CPU time of the run."""
    st.cfg.epochs = 1
    with Clock() as c:
        r = st.run_one(protocol, 1.0, st.cfg.seeds[0])
    s = r["seconds"]
    steps = st.steps_per_epoch(1.0, st.cfg.seeds[0])
    rest = max(s["total"] - s["training"] - s["validation"], 0.0)
    cpu_scale = c.cpu / max(c.wall, 1e-9)  # CPU seconds per wall second of this run: splits its CPU time alike
    return {"steps": steps, "n_train": r["n_train"], "training": s["training"], "validation": s["validation"],
            "rest": rest, "run_wall": c.wall, "run_cpu": c.cpu, "cpu_per_wall": cpu_scale,
            "images_per_s_wall": steps * st.cfg.batch_size / s["training"]}  # fmt: skip


def measure(cfg_path: str, size: int, gan_steps: int, second: bool, work: Path) -> dict:
    cfg: StudyConfig = load_study_config(cfg_path, [f"size={size}"])
    full = copy.deepcopy(cfg)
    spec = cfg.gan or GanSpec(preset=f"dcgan-{size}")
    if not spec.preset.endswith(f"-{size}"):
        spec = replace(spec, preset=spec.preset.rsplit("-", 1)[0] + f"-{size}")
    # prepare without a generator (prepare would train the top regime's in full); the GAN is priced below
    cfg.gan, cfg.protocols, cfg.primary.regime = None, ["real"], None
    st = Study(cfg, work / f"study-{size}", progress=False)
    out: dict = {"size": size, "generator": spec.preset, "threads": torch.get_num_threads()}
    with Clock() as c:
        st.prepare()
    out["prepare"] = pair(c)
    out["split"] = {k: len(v) for k, v in st.split.items()}
    out["train_minority"] = int(st.pos[st.split["train"]].sum())
    out["steps_per_epoch"] = {f"{r:g}": [st.steps_per_epoch(r, s) for s in full.seeds] for r in full.regimes}
    out["gan_images"] = {f"{r:g}": [len(st._minority_train(r, s)) for s in full.seeds] for r in full.regimes}
    print(f"[{size} px] prepare {c.wall:.0f} s wall / {c.cpu:.0f} s CPU; split {out['split']}", flush=True)
    out["classifier"] = {p: classifier_cost(st, p) for p in ("real", "standard-aug")}
    for p, v in out["classifier"].items():
        print(f"[{size} px] classifier {p}: {v['steps']} steps {v['training']:.1f} s ({v['images_per_s_wall']:.0f} "
              f"img/s wall), validation {v['validation']:.1f} s, rest {v['rest']:.1f} s; run CPU {v['run_cpu']:.1f} s "
              f"of {v['run_wall']:.1f} s wall", flush=True)  # fmt: skip
    cfg.gan = spec
    out["gan"] = {spec.preset: gan_cost(st, spec, gan_steps)}
    print(f"[{size} px] {spec.preset}: {out['gan'][spec.preset]}", flush=True)
    n_ratio_max = st._n_to_add(st.split["train"], max(RATIOS))
    out["synthesis"] = {spec.preset: synth_cost(st, n_ratio_max)}
    print(f"[{size} px] synthesis {spec.preset}: {out['synthesis'][spec.preset]['images_per_s_wall']:.0f} img/s wall",
          flush=True)  # fmt: skip
    # the report's inputs: the gan-aug model of the top regime (1 epoch) and the synthetic images
    cfg.protocols = ["real", "gan-aug"]
    out["classifier"]["gan-aug"] = classifier_cost(st, "gan-aug")
    st.syn = st.synthetic_for(1.0, cfg.seeds[0])
    with Clock() as c:
        st.save_report_inputs()
    out["report"] = pair(c)
    print(f"[{size} px] report inputs {c.wall:.0f} s wall / {c.cpu:.0f} s CPU", flush=True)
    if second:
        name, width = SECOND[size]
        s2 = replace(spec, preset=name, width=width)
        cfg.gan = s2
        out["gan"][name] = gan_cost(st, s2, max(2, gan_steps // 4))
        out["synthesis"][name] = synth_cost(st, n_ratio_max)
        print(f"[{size} px] {name}: {out['gan'][name]}; synthesis {out['synthesis'][name]['images_per_s_wall']:.1f} "
              "img/s wall", flush=True)  # fmt: skip
    out["config"] = {"regimes": full.regimes, "seeds": full.seeds, "epochs": full.epochs, "protocols": full.protocols,
                     "gan_steps": full.gan.steps if full.gan else 0, "batch_size": full.batch_size}  # fmt: skip
    return out


def estimate(m: dict, clock: str, epochs: int, gan_steps: int, n_seeds: int, ratios: list[float],
             protocols: list[str], generator: str | None = None) -> dict:  # fmt: skip
    """Seconds of the whole study from the unit costs ``m`` (one size), by stage. ``clock``: wall (as measured) or
    cpu (process CPU seconds / threads: the machine alone)."""
    # CPU time of the measured threads, spread over the machine's two cores (a 1-thread measurement: / 2 assumes the
    # two-thread speed-up of BENCHMARKS.md §8e, about 2x for the classifier in bf16)
    div = 2.0 if clock == "cpu" else 1.0
    regimes = [float(r) for r in m["config"]["regimes"]]
    gen = generator or m["generator"]
    arms = study_arms(protocols, ratios)
    synthetic = any(a.split("@")[0] in ("gan-aug", "standard-aug+gan-aug", "synthetic-only", "synthetic-only-full")
                    for a in arms)  # fmt: skip
    clf = m["classifier"]
    # per-step and per-validation costs from the run's own record, converted to CPU time by the run's CPU/wall ratio
    def unit(p: str) -> tuple[float, float, float]:
        c = clf[p]
        f = c["cpu_per_wall"] / div if clock == "cpu" else 1.0
        return c["training"] * f / c["steps"], c["validation"] * f, c["rest"] * f

    step_plain, val, rest = unit("real")
    step_aug = unit("standard-aug")[0]
    t = {"prepare": m["prepare"][clock] / div, "gan": 0.0, "synthesis": 0.0, "classifier": 0.0,
         "report": m["report"][clock] / div}  # fmt: skip
    g = m["gan"][gen][clock]
    syn = m["synthesis"][gen]
    per_img = (syn["cpu_per_image"] / div) if clock == "cpu" else syn["wall_per_image"]
    n_syn = syn["n_with_ratios"] if ratios else syn["n"]
    for r in regimes:
        key = f"{r:g}"
        for s in range(n_seeds):
            steps = m["steps_per_epoch"][key][s % len(m["steps_per_epoch"][key])]
            n_img = m["gan_images"][key][s % len(m["gan_images"][key])]
            if synthetic:
                # a step's cost grows with its batch: the batch is capped at the run's minority image count
                t["gan"] += g["fixed"] / div + gan_steps * g["per_step"] / div * min(1.0, n_img / 64)
                t["synthesis"] += n_syn * per_img
            for a in arms:
                step = step_aug if a.startswith("standard-aug") else step_plain
                t["classifier"] += epochs * (steps * step + val) + rest
    t["total"] = sum(t.values())
    t["runs"] = len(arms) * len(regimes) * n_seeds
    return t


def fits(m: dict, budget_s: float, protocols: list[str]) -> list[dict]:
    """Settings that fit the budget on the machine alone (CPU-time estimate), most thorough first: 5 seeds, the
    ratio axis, the most epochs, then the most GAN steps."""
    out = []
    for n_seeds in (5, 3):
        for ratios in (RATIOS, []):
            for epochs in (15, 12, 10, 8, 6, 5, 4):
                for gs in (1000, 600, 400, 300, 200):
                    t = estimate(m, "cpu", epochs, gs, n_seeds, ratios, protocols)
                    if t["total"] <= budget_s:
                        out.append({"seeds": n_seeds, "ratios": ratios, "epochs": epochs, "gan_steps": gs,
                                    "hours": t["total"] / 3600})  # fmt: skip
    return out


def hms(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def report(ms: list[dict], budget_h: float) -> None:
    for m in ms:
        c = m["config"]
        protocols = c["protocols"]
        print(f"\n== {m['size']} px, {m['generator']}; config: {len(c['regimes'])} regimes x {len(c['seeds'])} seeds, "
              f"{c['epochs']} epochs, {c['gan_steps']} GAN steps, protocols {protocols} ==")  # fmt: skip
        for label, ratios, prot in (("as configured", [], protocols), ("+ ratio axis [0.5,1,2,4]", RATIOS, protocols)):
            for clock in ("wall", "cpu"):
                t = estimate(m, clock, c["epochs"], c["gan_steps"], len(c["seeds"]), ratios, prot)
                parts = ", ".join(f"{k} {hms(v)}" for k, v in t.items() if k not in ("total", "runs"))
                how = "wall as measured (shared machine)" if clock == "wall" else "CPU time / threads (machine alone)"
                print(f"  {label:<26} {t['runs']:>3} runs  {hms(t['total']):>7}  [{how}]  {parts}")
        for gen in m["gan"]:
            if gen != m["generator"]:
                t = estimate(m, "cpu", c["epochs"], c["gan_steps"], len(c["seeds"]), [], ["gan-aug"], generator=gen)
                add = t["gan"] + t["synthesis"] + t["classifier"]
                print(f"  a second generator, {gen}: its GANs, synthesis and gan-aug runs add {hms(add)} "
                      f"(GANs {hms(t['gan'])}, synthesis {hms(t['synthesis'])}) [CPU time / threads]")  # fmt: skip
        ok = fits(m, budget_h * 3600, protocols)
        for n_seeds in (5, 3):
            for rat in (RATIOS, []):
                f = next((o for o in ok if o["seeds"] == n_seeds and o["ratios"] == rat), None)
                if f:
                    print(f"    fits with {n_seeds} seeds, ratios {rat or 'off'}: {f['epochs']} epochs, "
                          f"{f['gan_steps']} GAN steps -> {f['hours']:.2f} h")
        if ok:
            best = ok[0]
            print(f"  fits {budget_h:g} h (machine alone): {best['seeds']} seeds, ratios {best['ratios'] or 'off'}, "
                  f"{best['epochs']} epochs, {best['gan_steps']} GAN steps -> {best['hours']:.2f} h; "
                  f"{len(ok)} settings fit in all")  # fmt: skip
        else:
            t = estimate(m, "cpu", 4, 200, 3, [], protocols)
            print(f"  nothing in the search fits {budget_h:g} h: the smallest (3 seeds, no ratios, 4 epochs, 200 GAN "
                  f"steps) is {hms(t['total'])}")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="benchmarks/study-pneumonia.yaml")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--gan-steps", type=int, default=20, help="GAN steps of the first timed block (the second: 2x more)")
    p.add_argument("--no-second", action="store_true", help="skip StyleGAN2-ADA")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); on a shared machine use 1: a thread that is never "
                        "descheduled mid-barrier makes CPU time a steady measure (two threads spin while they wait)")
    p.add_argument("--budget-h", type=float, default=3.0)
    p.add_argument("--from-json", help="print the estimates of an earlier record instead of measuring")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.from_json:
        rec = json.loads(Path(a.from_json).read_text())
        report(rec["sizes"], a.budget_h)
        return 0
    load = os.getloadavg()[0]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load:.1f} at the start", flush=True)  # fmt: skip
    ms: list[dict] = []
    Path(a.out).mkdir(parents=True, exist_ok=True)
    dest = Path(a.out) / f"study_budget-{Path(a.config).stem}.json"
    with tempfile.TemporaryDirectory(prefix="study-budget-") as tmp:
        for size in a.sizes:
            ms.append(measure(a.config, size, a.gan_steps, not a.no_second, Path(tmp)))
            rec = {"config": a.config, "machine": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                   "load_start": load, "load_end": os.getloadavg()[0], "time": time.strftime("%Y-%m-%d %H:%M"),
                   "numpy": np.__version__, "sizes": ms}  # fmt: skip
            dest.write_text(json.dumps(rec, indent=1))  # after each size: a long run's first sizes are kept
    print(f"\nload average {load:.1f} at the start, {rec['load_end']:.1f} at the end; record: {dest}")
    report(ms, a.budget_h)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
