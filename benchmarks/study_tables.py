"""Markdown tables of a finished study for BENCHMARKS.md (section 3): reads only the study folder's
results.json and data.json, as ``cxraug report`` does, and prints

- the data: split counts per class, class x source, the confounding verdict;
- per regime and protocol: internal ROC-AUC, PR-AUC, balanced accuracy, sensitivity, specificity and the
  validation-chosen threshold (mean +- 95 % t half-width across seeds), then the same per external source;
- probe sets: the fraction called positive;
- per regime, GAN-aug vs standard-aug and vs real: the mean paired AUC difference across seeds, DeLong on
  the seed-averaged scores, the patient-bootstrap CI and the verdict's word, internally and externally.

    python benchmarks/study_tables.py runs/study-<time>
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

METRICS = ("auc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "threshold")
HEAD = ("ROC-AUC", "PR-AUC", "bal. acc.", "sensitivity", "specificity", "threshold")


def _ms(d: dict | None, sign: str = "") -> str:
    if not d or d.get("mean") is None or (isinstance(d["mean"], float) and math.isnan(d["mean"])):
        return "–"
    ci = d.get("ci")
    return f"{d['mean']:{sign}.3f}" + ("" if ci is None or math.isnan(ci) else f" ± {ci:.3f}")


def _pct(r: str) -> str:
    return f"{float(r) * 100:g} %"


def metric_table(block: dict, label: str) -> list[str]:
    out = [f"| regime | protocol | {' | '.join(HEAD)} |", "|---|---|" + "---:|" * len(HEAD)]
    for reg, protos in block.items():
        for p, m in protos.items():
            out.append(f"| {_pct(reg)} | {p} | " + " | ".join(_ms(m.get(k)) for k in METRICS) + " |")
    return [f"**{label}** (mean ± 95 % t half-width across seeds)", "", *out, ""]


def tables(study: Path) -> str:
    res = json.loads((study / "results.json").read_text())
    data = json.loads((study / "data.json").read_text())
    s, cfg = res["summary"], res["config"]
    lines = [f"Study `{study.name}`: minority `{cfg.get('minority')}`, seeds {cfg.get('seeds')}, regimes "
             f"{cfg.get('regimes')}, operating point `{cfg.get('operating_point', 'youden')}`", ""]  # fmt: skip
    sc = data["split_counts"]
    lines += ["| split | " + " | ".join(data["classes"]) + " |", "|---|" + "---:|" * len(data["classes"])]
    lines += [f"| {k} | " + " | ".join(str(sc[k].get(c, 0)) for c in data["classes"]) + " |" for k in sc]
    lines += ["", f"Confounding: {(s.get('confounding') or data.get('confounding') or {}).get('text') or 'none'}", ""]
    lines += metric_table(s["table"], "Internal test split")
    ext_names = sorted({n for reg in s.get("external", {}).values() for n in reg})
    for name in ext_names:
        block = {reg: v[name] for reg, v in s["external"].items() if name in v}
        lines += metric_table(block, f"External: {name}")
    probe: dict = {}
    for r in res["runs"]:
        for name, pr in (r.get("probe") or {}).items():
            probe.setdefault((r["regime"], r["protocol"], name, pr["n"]), []).append(pr["fraction_called_positive"])
    if probe:
        lines += [f"**Probe sets** (fraction called `{cfg.get('minority')}`, mean over seeds)", "",
                  "| regime | protocol | probe | images | called positive |", "|---|---|---|---:|---:|"]  # fmt: skip
        for (reg, p, name, n), v in sorted(probe.items()):
            lines.append(f"| {_pct(reg)} | {p} | {name} | {n} | {sum(v) / len(v):.2f} |")
        lines.append("")
    lines += ["**Comparisons** (AUC differences; DeLong on the seed-averaged scores; patient-bootstrap CI)", "",
              "| regime | comparison | test set | mean paired Δ AUC (seeds) | paired t p | DeLong Δ, p | bootstrap CI | verdict |",
              "|---|---|---|---:|---:|---:|---|---|"]  # fmt: skip
    for reg, comps in s["comparisons"].items():
        for name, sets in comps.items():
            for where, c in sets.items():
                ps, dl, ci = c.get("paired_seeds") or {}, c.get("delong_pooled") or {}, c.get("ci") or [math.nan] * 2
                word = (c.get("verdict") or {}).get("word", "–")
                lines.append(
                    f"| {_pct(reg)} | {name} | {where} | {_ms(ps, '+')} | {ps.get('p_value', math.nan):.3f} | "
                    f"{dl.get('difference', math.nan):+.3f}, p = {dl.get('p_value', math.nan):.3f} | "
                    f"[{ci[0]:+.3f}, {ci[1]:+.3f}] | {word} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="a finished study's folder")
    print(tables(ap.parse_args().study), end="")


if __name__ == "__main__":
    main()
