"""The one way every command that reads images reports the files it left out (issue 32).

A file is left out when it cannot be decoded (truncated, not an image, a decompression bomb, a DICOM without
usable pixels, ...: ``CachedDataset.errors``) or when listing the data set it aside (a FIFO, a broken symlink,
a manifest row that cannot be used: ``Collection.skipped``, kept as ``CachedDataset.listing_skipped``;
:func:`cxraug.data.source.skipped_lines` gives both). :func:`announce` prints the first
:data:`SHOWN` of them as ``skipped: PATH: reason`` lines on stderr, then ``skipped: ... and K more``, when the
data is loaded; :func:`save` writes all of them to the run folder's ``skipped.csv`` and prints the count with
the list's path. ``data inspect`` keeps its own table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cxraug.errors import show_path

#: How many skipped files are named on the terminal; the rest are counted (and listed in skipped.csv).
SHOWN = 10
FILE = "skipped.csv"


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"  # once under accelerate launch / torchrun


def announce(lines: Iterable[str], shown: int = SHOWN) -> int:
    """Print the first ``shown`` lines as ``skipped: ...`` on stderr and a count of the rest; returns how many."""
    lines = list(lines)
    if not lines or not _main_process():
        return len(lines)
    for line in lines[:shown]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(lines) > shown:
        print(f"skipped: ... and {len(lines) - shown} more (all {len(lines)} are listed in the run folder's {FILE})",
              file=sys.stderr)  # fmt: skip
    return len(lines)


def split_line(line: str) -> tuple[str, str]:
    """(path, reason) of a "PATH: reason" line: the path is the first prefix before ": " that names a file on disk
    (a path may hold ": " itself); ("", line) when none does (a manifest row, a message about the data set)."""
    start = 0
    while (i := line.find(": ", start)) >= 0:
        if os.path.lexists(line[:i]):
            return line[:i], line[i + 2 :]
        start = i + 1
    return "", line


def save(run: str | os.PathLike, lines: Iterable[str]) -> Path | None:
    """Write ``run/skipped.csv`` (path, reason) and print (stdout) how many files were skipped, naming it; None, and
    nothing written, when no file was skipped."""
    lines = list(lines)
    if not lines or not _main_process():
        return None
    from cxraug.data.tables import write_csv

    dest = Path(run) / FILE
    write_csv(dest, ["path", "reason"], [list(split_line(x)) for x in lines])
    print(f"skipped {len(lines)} file(s) (unreadable or left out), listed in {show_path(dest)}")
    return dest
