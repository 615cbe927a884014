"""Errors a user can act on. The CLI prints these as one line, never as a traceback."""

from __future__ import annotations

import os


def show_path(path: str | os.PathLike) -> str:
    """A path safe to print, even when the file name is not valid UTF-8."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", errors="backslashreplace")


class CXRAugError(Exception):
    """Base class for errors caused by user input or environment (shown without traceback)."""


class ConfigError(CXRAugError, ValueError):
    """An argument or config value is out of range (also a ``ValueError`` for library callers)."""


class ImageReadError(CXRAugError):
    """A file could not be decoded as a chest X-ray image."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{show_path(path)}: {reason}")


class CheckpointError(CXRAugError):
    """A checkpoint is missing, corrupt or unsafe to load."""


class OfflineWeightsError(CXRAugError):
    """Pretrained weights are needed but cannot be downloaded."""


class LeakageError(CXRAugError):
    """Synthetic or duplicate images would end up where they must not (e.g. a test split)."""
