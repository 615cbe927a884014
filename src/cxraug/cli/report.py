"""``cxraug report STUDY_DIR``: the report stage's command (the study's own command, ``benchmark``, is in
:mod:`cxraug.cli.study`)."""

from __future__ import annotations

import argparse


def _check_study_files(study: str) -> None:
    """Every JSON file the report reads parses, before any rendering: a truncated ``results.json`` (a copy cut
    short, a disk that filled) is one line naming it, not a JSONDecodeError traceback."""
    import json
    from pathlib import Path

    from cxraug.errors import CXRAugError, show_path

    d = Path(study)
    todo = [d / "results.json", d / "data.json", d / "quality.json"]
    while todo:
        p = todo.pop(0)
        if not p.is_file():
            continue  # a missing one is reported by the report itself
        try:
            obj = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            why = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
            raise CXRAugError(f"{show_path(p)} is not valid JSON ({why}): truncated or damaged; rerun "
                              f"`cxraug benchmark --resume {show_path(d)}` to write it again") from None  # fmt: skip
        except OSError as e:
            raise CXRAugError(f"cannot read {show_path(p)}: {e.strerror or e}") from None
        if p.name == "results.json":
            runs = obj.get("runs") if isinstance(obj, dict) else None
            if not isinstance(runs, list):
                raise CXRAugError(f"{show_path(p)} has no list of runs: not a results.json of cxraug benchmark")
            todo += [d / "runs" / str(r["key"]) / "result.json" for r in runs if isinstance(r, dict) and "key" in r]


def cmd_report(a: argparse.Namespace) -> int:
    from cxraug.report.html import build_report

    _check_study_files(a.study)
    print(f"report: {build_report(a.study, progress=not a.quiet)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``cxraug report``."""
    r = sub.add_parser("report", help="self-contained HTML report + results.json for a study folder")
    r.add_argument("study", help="a study folder written by `cxraug benchmark`")
    r.set_defaults(func=cmd_report)
