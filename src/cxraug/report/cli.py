"""``cxraug report STUDY_DIR``: the report stage's command (the study's own command, ``benchmark``, is in
:mod:`cxraug.classify.cli`; keeping them apart keeps classify from importing report)."""

from __future__ import annotations

import argparse

from cxraug.commands import register


def cmd_report(a: argparse.Namespace) -> int:
    from cxraug.report.html import build_report

    print(f"report: {build_report(a.study, progress=not a.quiet)}")
    return 0


@register
def _register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="self-contained HTML report + results.json for a study folder")
    r.add_argument("study", help="a study folder written by `cxraug benchmark`")
    r.set_defaults(func=cmd_report)
