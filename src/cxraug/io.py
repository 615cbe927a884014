"""Filesystem helpers: atomic writes, new run directories, safe checkpoint loading."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cxraug.errors import CheckpointError, CXRAugError, show_path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it is fsynced and renamed over ``dest``.

    A crash (even SIGKILL) leaves either the old ``dest`` or the new one, never a partial file.
    Disk-full and permission errors become a :class:`CXRAugError` and the temp file is removed.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(dest, e) from e
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp_path, dest)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise write_error(dest, e) from e
    except RuntimeError as e:
        if not _is_torch_write_failure(e):
            tmp_path.unlink(missing_ok=True)
            raise
        full = _nearly_full(tmp_path.parent)  # before the temp file is removed, which frees its space again
        tmp_path.unlink(missing_ok=True)
        why = "disk full" if full else f"write failed ({str(e).splitlines()[0]})"
        raise CXRAugError(f"cannot write {show_path(dest)}: {why}") from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


# torch.save's zip writer reports a failed write (ENOSPC, EIO, ...) as a RuntimeError without the errno:
# "[enforce fail at inline_container.cc:672] unexpected pos 64 vs 0", "PytorchStreamWriter failed writing file".
_TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "unexpected pos", "file write failed")


def _is_torch_write_failure(e: RuntimeError) -> bool:
    return any(m in str(e) for m in _TORCH_WRITE_FAILURES)


def _nearly_full(folder: Path, margin: int = 64 * 2**20) -> bool:
    """Less than ``margin`` bytes free where ``folder`` lies (how a failed torch write tells a full disk)."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _reason(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "permission denied (read-only file system)"
    return e.strerror or str(e) or type(e).__name__


def write_error(dest: str | os.PathLike, e: OSError) -> CXRAugError:
    """One line for a failed write to ``dest``: disk full, permission denied (also a read-only file system), or
    the system's own words."""
    return CXRAugError(f"cannot write {show_path(dest)}: {_reason(e)}")


def os_error_line(e: OSError) -> str:
    """An OS error that reached the command line, as one line naming its file(s): the last resort of
    :func:`cxraug.cli.main` (the writers above name what they were writing where they can)."""
    where = " -> ".join(show_path(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {_reason(e)}" if where else _reason(e)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_json(dest: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(dest, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(obj: dict, dest: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_path` (temp file + fsync + rename). Saved through a file object, so the
    zip archive inside is named "archive", not after the random temp file: the same object gives the same bytes,
    and a generator's hash (what a study's runs are keyed by) does not depend on where or when it was written."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(dest)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {show_path(path)}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError on truncation, ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"refusing to load {show_path(path)}: it contains Python objects beyond tensors "
                "(unsafe pickle); only checkpoints written by cxraug are accepted"
            ) from e
        raise CheckpointError(f"cannot read checkpoint {show_path(path)}: {msg}") from e


def new_run_dir(base: str | os.PathLike, name: str) -> Path:
    """Create ``base/name-YYYYmmdd-HHMMSS[-N]``; never reuses (and so never overwrites) a folder."""
    base = Path(base)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = base / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            continue
        except OSError as e:
            raise write_error(d, e) from e
    raise CXRAugError(f"could not create a new run folder under {show_path(base)}")


def ensure_outside(
    out: str | os.PathLike, inputs: list[str | os.PathLike], *, what: str = "output folder", hint: str = ""
) -> None:
    """Refuse to write ``out`` inside (or onto) any input: the tool never writes into the user's data.

    Each input is a folder, or a file standing for its folder (a CSV manifest, a checkpoint); inputs that
    do not exist on disk (``phantom`` specs) are ignored. Symlinks are resolved on both sides, so a link
    into the data folder is caught too.
    """
    folders: dict[Path, Path] = {}
    for i in inputs:
        ip = Path(i)
        try:
            if not ip.exists():
                continue
            r = ip.resolve()
        except OSError:
            continue
        folders.setdefault(r if r.is_dir() else r.parent, ip)
    o = Path(out).resolve()
    for anc in (o, *o.parents):
        if anc in folders:
            raise CXRAugError(
                f"{what} {show_path(o)} is inside the input folder {show_path(anc)}; "
                + (hint or "choose an output location outside your data")
            )


def check_device(name: str, flag: str = "--device") -> None:
    """Refuse a device that is not there (``cuda`` without a GPU used to fall back to the CPU silently).

    Accepts ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (N below the GPU count) and ``mps``.
    """
    n = str(name).strip().lower()
    if n in ("auto", "cpu"):
        return
    if n == "cuda" or n.startswith("cuda:"):
        idx = n.partition(":")[2]
        if idx and not idx.isdigit():
            raise CXRAugError(f"{flag} {name!r}: expected cuda or cuda:N")
        if not torch.cuda.is_available():
            raise CXRAugError(f"{flag} {name} asked for, but no CUDA GPU is available here; use {flag} cpu or auto")
        if idx and int(idx) >= torch.cuda.device_count():
            raise CXRAugError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return
    if n == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise CXRAugError(f"{flag} mps asked for, but Apple MPS is not available here; use {flag} cpu or auto")
        return
    raise CXRAugError(f"{flag} must be auto, cpu, cuda, cuda:N or mps; got {name!r}")


def crash_hook(point: str, n: int) -> None:
    """Test hook for crash-safety tests: ``CXRAUG_FAULT=point:n`` SIGKILLs this process right there
    (``checkpoint-write:N``, ``after-checkpoint:N`` in training, ``after-run:N`` in a study)."""
    import signal

    if os.environ.get("CXRAUG_FAULT", "") == f"{point}:{n}":
        os.kill(os.getpid(), signal.SIGKILL)
