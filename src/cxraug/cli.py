"""Command-line interface: ``cxraug <command> --help`` explains each stage.

Every command that produces files writes them into a new run folder under ``--out`` (default
``runs/``) together with its resolved ``config.yaml``; input folders are only ever read.

This module is only the top-level dispatcher: each stage registers its own sub-commands with
:func:`cxraug.commands.register` (``cxraug.data.cli``, ``cxraug.train.cli``, ``cxraug.metrics.cli``, ...); no
module imports this one but ``cxraug.__main__``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cxraug.commands import add_registered, one_line
from cxraug.errors import CXRAugError

log = logging.getLogger("cxraug")

EPILOG = """stages: data -> train -> evaluate -> synthesize/balance -> benchmark -> report
quick start:  cxraug demo           (offline, CPU, a few minutes)
docs:         README.md"""


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from cxraug import __version__

    p = argparse.ArgumentParser(
        prog="cxraug",
        description="GAN-based augmentation of chest X-ray datasets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"cxraug {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default="runs", help="where new run folders are created; default %(default)s")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    add_registered(sub)
    _add_common_everywhere(p)
    return p


def _add_common_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let -q/--out appear after the sub-command too (``cxraug data prepare X -q``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                if "-q" not in sp._option_string_actions:
                    sp.add_argument(
                        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
                    )
                if "--out" not in sp._option_string_actions:
                    sp.add_argument(
                        "--out", default=argparse.SUPPRESS, help="where new run folders are created (runs/)"
                    )
                _add_common_everywhere(sp)


def _load_commands() -> None:
    import importlib

    for mod in (
        "cxraug.data.cli",
        "cxraug.train.cli",
        "cxraug.metrics.cli",
        "cxraug.synth.cli",
        "cxraug.classify.cli",
        "cxraug.report.cli",
        "cxraug.demo",
    ):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _load_commands()
    parser = build_parser()
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 0 if a.command is None else 2
    try:
        return int(a.func(a) or 0)
    except CXRAugError as e:
        print(f"cxraug: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # permission denied, a full or read-only disk where no writer above named it
        from cxraug.io import os_error_line

        print(f"cxraug: error: {one_line(os_error_line(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxraug: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
