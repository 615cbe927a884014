"""Read a CSV/TSV manifest as it ships: any common encoding, any common delimiter, bad rows reported.

- Encoding: UTF-8 (with or without BOM); otherwise Windows-1252, else Latin-1 (which decodes any
  byte), with a warning naming the file. Real COVID metadata CSVs are often Latin-1.
- Delimiter: tab for ``.tsv``; otherwise whichever of ``,`` ``;`` tab occurs most in the header line
  (``|`` is not a candidate: NIH's ``Finding Labels`` uses it inside a field).
- Rows with fewer or more fields than the header are skipped and reported as ``file:line``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.errors import CXRAugError, show_path
from cxraug.io import atomic_path

ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
DELIMITERS = (",", ";", "\t")


@dataclass
class Table:
    """A manifest's header and rows; ``lines[k]`` is the file line where ``rows[k]`` starts."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    encoding: str = "utf-8-sig"
    delimiter: str = ","
    warnings: list[str] = field(default_factory=list)  # encoding fallback etc.
    skipped: list[str] = field(default_factory=list)  # one line per skipped row

    def column(self, name: str) -> int:
        return self.header.index(name)


def _decode(raw: bytes, path: Path) -> tuple[str, str, list[str]]:
    for enc in ENCODINGS:
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        warn = [] if enc == "utf-8-sig" else [f"{show_path(path)}: not valid UTF-8; read as {enc}"]
        return text, enc, warn
    raise CXRAugError(f"{show_path(path)}: cannot decode the file as text")  # unreachable: latin-1 decodes all


def sniff_delimiter(header_line: str, path: Path) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])  # ties -> the earlier (comma first)
    return best if counts[best] else ","


def read_table(path: str | os.PathLike) -> Table:
    """Parse ``path``; raise :class:`CXRAugError` naming it if it is missing, empty or not a table."""
    p = Path(path)
    try:
        if not p.is_file():
            raise CXRAugError(f"{show_path(p)}: manifest not found (or not a regular file)")
        raw = p.read_bytes()
    except OSError as e:
        raise CXRAugError(f"{show_path(p)}: cannot read manifest ({e.strerror or e})") from e
    if b"\0" in raw[:65536]:
        raise CXRAugError(f"{show_path(p)}: binary file, not a CSV/TSV manifest")
    text, enc, warns = _decode(raw, p)
    first = text.split("\n", 1)[0]
    delim = sniff_delimiter(first, p)
    try:
        # strict: a quote opened and never closed is an error, not a field that swallows every row after it
        reader = csv.reader(text.splitlines(keepends=True), delimiter=delim, strict=True)
        header: list[str] | None = None
        rows: list[list[str]] = []
        lines: list[int] = []
        skipped: list[str] = []
        start = 1
        for rec in reader:
            if header is None:
                header = [h.strip() for h in rec]
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not rec or all(not v.strip() for v in rec):
                continue  # blank line
            if len(rec) != len(header):
                what = "fewer" if len(rec) < len(header) else "more"
                skipped.append(
                    f"{show_path(p)}:{line}: {len(rec)} field(s), {what} than the header's {len(header)}; row skipped"
                )
                continue
            rows.append(rec)
            lines.append(line)
    except csv.Error as e:
        raise CXRAugError(f"{show_path(p)}:{start}: not a readable CSV from this line on ({e}; an unclosed quote?)") from e
    if not header or not any(header):
        raise CXRAugError(f"{show_path(p)}: manifest is empty (no header line)")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CXRAugError(f"{show_path(p)}: column name(s) {dup} appear more than once in the header")
    return Table(p, header, rows, lines, enc, delim, warns, skipped)


def write_csv(dest: str | os.PathLike, header: list[str], rows: list[list]) -> Path:
    """Write a CSV atomically. Non-UTF-8 file names (surrogate-escaped ``str``) are written byte for byte
    (``surrogateescape``), so the manifest names the very file; :func:`read_table` reads it back."""
    with atomic_path(dest) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return Path(dest)
