"""How a synthetic image is marked, so that it can never slip into a test split.

Every PNG cxraug generates carries a PNG text chunk ``cxraug:synthetic = true`` (plus the
checkpoint hash and seed); every synthesis manifest has ``synthetic = true`` per row.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, PngImagePlugin

MARK_KEY = "cxraug:synthetic"


def png_info(extra: dict[str, str] | None = None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(MARK_KEY, "true")
    for k, v in (extra or {}).items():
        info.add_text(f"cxraug:{k}", str(v))
    return info


def is_marked_synthetic(path: str | os.PathLike) -> bool:
    """True when ``path`` is a PNG carrying the cxraug synthetic marker."""
    p = Path(path)
    if p.suffix.lower() != ".png" or not p.is_file():
        return False
    try:
        with Image.open(p) as im:
            return str(getattr(im, "text", {}).get(MARK_KEY, "")).lower() == "true"
    except Exception:
        return False
