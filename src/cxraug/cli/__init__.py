"""Command-line interface: ``cxraug <command> --help`` explains each stage.

Every command that produces files writes them into a new run folder under ``--out`` (default
``runs/``) together with its resolved ``config.yaml``; input folders are only ever read.

The command line is this package, on top of every stage: this module is the top-level dispatcher; each command
group is one module that adds its sub-commands with ``add_commands`` (:data:`COMMANDS`, in ``--help`` order), and
:mod:`cxraug.cli.args` holds the argument helpers they share. No stage imports the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cxraug.cli import data, demo, evaluate, report, study, synth, train
from cxraug.errors import CXRAugError

log = logging.getLogger("cxraug")

#: The command groups, each a module with ``add_commands(sub)``, in the order ``cxraug --help`` lists them.
COMMANDS = (data, train, evaluate, synth, study, report, demo)

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

    for group in COMMANDS:
        group.add_commands(sub)
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


def one_line(message: str) -> str:
    """An error message as one printable line: newlines folded, a non-UTF-8 file name escaped (``\\udce9``)
    instead of raising UnicodeEncodeError while printing the error."""
    return " ".join(message.split("\n")).encode("utf-8", "backslashreplace").decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
