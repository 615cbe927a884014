"""The sub-command registry: each stage's ``cli.py`` registers its commands here with :func:`register`, and
:mod:`cxraug.cli` (the top-level dispatcher) builds the parser from them. A utility module, so a stage's
command-line code never imports the dispatcher that sits above every stage."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cxraug.errors import ConfigError


def one_line(message: str) -> str:
    """An error message as one printable line: newlines folded, a non-UTF-8 file name escaped (``\\udce9``)
    instead of raising UnicodeEncodeError while printing the error."""
    return " ".join(message.split("\n")).encode("utf-8", "backslashreplace").decode("utf-8")


def require(ok: bool, message: str) -> None:
    """Up-front argument check for sub-commands: one clear line (exit 2) instead of a failure deep inside."""
    if not ok:
        raise ConfigError(message)


_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def register(fn: Callable[[argparse._SubParsersAction], None]) -> Callable:
    _REGISTRY.append(fn)
    return fn


def add_registered(sub: argparse._SubParsersAction) -> None:
    """Add every registered stage's sub-commands to the top-level parser's ``sub``."""
    for add_commands in _REGISTRY:
        add_commands(sub)
