"""Decode once, train many times: a collection preprocessed to a uint8 ``[N, S, S]`` array on disk.

The cache key hashes every source file's bytes (or in-memory image), the class names and the
preprocessing settings, so changing any of them builds a new cache and a hit does no decoding.
The array is an ``.npy`` file opened memory-mapped; ``__getitem__`` returns float tensors in
[-1, 1]. Caches live under ``$CXRAUG_CACHE`` (default ``~/.cache/cxraug``), never in input folders.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cxraug.data.preprocess import Preprocess, u8_to_tensor
from cxraug.data.sample import Collection
from cxraug.errors import CXRAugError, ImageReadError, show_path

CACHE_VERSION = 1


def default_cache_root() -> Path:
    return Path(os.environ.get("CXRAUG_CACHE", Path.home() / ".cache" / "cxraug"))


def _file_digest(path: str) -> bytes:
    """The file's content hash; a marker for what is not a regular file (a FIFO or a device would block or never
    end: the reader skips those with a line of their own) or cannot be read."""
    h = hashlib.blake2b(digest_size=16)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            h.update(b"<not a regular file>")
            return h.digest()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        h.update(b"<unreadable>")
    return h.digest()


def cache_key(coll: Collection, prep: Preprocess) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "prep": prep.to_dict(), "classes": coll.class_names}).encode())
    for s in coll.samples:
        h.update(os.fsencode(s.path))
        h.update(s.labels.tobytes())
        h.update(s.patient_id.encode("utf-8", "surrogateescape"))
        h.update(
            hashlib.blake2b(s.image.tobytes(), digest_size=16).digest() if s.image is not None else _file_digest(s.path)
        )
    return h.hexdigest()[:24]


@dataclass
class CachedDataset(torch.utils.data.Dataset):
    """Preprocessed images (uint8, memory-mapped) with labels and provenance."""

    images: np.ndarray  # [N, S, S] uint8
    labels: np.ndarray  # [N, C] float32 (NaN = ignored label)
    class_names: list[str]
    patient_ids: list[str]
    paths: list[str]
    sources: list[str]
    multilabel: bool = False
    prep: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    root: str = ""
    # files set aside while listing the data (not decoded): kept beside ``errors`` for the skipped-files report
    # (cxraug.data.skipped), not saved with the cache
    listing_skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return u8_to_tensor(np.asarray(self.images[i])), torch.from_numpy(np.asarray(self.labels[i]))

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def label_index(self) -> np.ndarray:
        lab = np.nan_to_num(self.labels)
        return np.where(lab.max(1) > 0, lab.argmax(1), -1)

    def batch(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Float batch [B, 1, S, S] in [-1, 1] straight from the uint8 array (no decoding)."""
        idx = np.sort(np.asarray(idx))
        return u8_to_tensor(torch.from_numpy(np.ascontiguousarray(self.images[idx])))

    def subset(self, idx) -> CachedDataset:
        idx = np.asarray(idx, dtype=np.int64)
        return CachedDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            patient_ids=[self.patient_ids[i] for i in idx],
            paths=[self.paths[i] for i in idx],
            sources=[self.sources[i] for i in idx],
            multilabel=self.multilabel,
            prep=self.prep,
            root=self.root,
        )

    def only_class(self, name: str) -> CachedDataset:
        if name not in self.class_names:
            raise CXRAugError(f"class {name!r} not found; classes are {self.class_names}")
        i = self.class_names.index(name)
        return self.subset(np.nonzero(np.nan_to_num(self.labels[:, i]) > 0.5)[0])

    def counts(self) -> dict[str, int]:
        lab = np.nan_to_num(self.labels)
        return {c: int((lab[:, i] > 0.5).sum()) for i, c in enumerate(self.class_names)}

    def meta(self) -> dict:
        return {
            "version": CACHE_VERSION,
            "class_names": self.class_names,
            "labels": self.labels.tolist(),
            "patient_ids": self.patient_ids,
            "paths": list(self.paths),
            "sources": self.sources,
            "multilabel": self.multilabel,
            "prep": self.prep,
            "errors": self.errors,
            "root": self.root,
        }

    def save(self, folder: str | os.PathLike, replace: bool = True) -> Path:
        """Write ``images.npy`` + ``meta.json`` into a temp folder, then rename it into place in one step, so
        a reader never sees a half-written cache. Where ``folder`` already holds a complete cache, ``replace``
        False keeps it (another process published the same cache first) and True swaps ours in."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            np.save(tmp / "images.npy", np.ascontiguousarray(self.images))
            # ensure_ascii (default): surrogate-escaped (non-UTF-8) file names round-trip
            (tmp / "meta.json").write_text(json.dumps(self.meta(), allow_nan=True, default=str))
            _publish(tmp, folder, replace)
        except OSError as e:
            raise CXRAugError(f"cannot write cache {show_path(folder)}: {e.strerror or e}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = True) -> CachedDataset:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            images = np.load(folder / "images.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CXRAugError(f"{show_path(folder)} is not a cxraug cache ({e})") from e
        try:  # another tool's images.npy + meta.json, or another version's, is refused in one line too
            if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
                raise ValueError(f"meta.json version {meta.get('version') if isinstance(meta, dict) else None!r}, "
                                 f"this cxraug writes {CACHE_VERSION}")  # fmt: skip
            n = len(images)
            if images.ndim != 3 or images.dtype != np.uint8:
                raise ValueError(f"images.npy is {images.dtype} {list(images.shape)}, not uint8 [N, S, S]")
            ds = cls(
                images=images,
                labels=np.asarray(meta["labels"], np.float32).reshape(n, len(meta["class_names"])),
                class_names=list(meta["class_names"]),
                patient_ids=list(meta["patient_ids"]),
                paths=list(meta["paths"]),
                sources=list(meta["sources"]),
                multilabel=bool(meta["multilabel"]),
                prep=meta["prep"],
                errors=meta.get("errors", []),
                root=meta.get("root", ""),
            )
            if not len(ds.patient_ids) == len(ds.paths) == len(ds.sources) == n:
                raise ValueError(f"{n} images but {len(ds.paths)} paths, {len(ds.patient_ids)} patient ids")
        except (KeyError, TypeError, ValueError) as e:
            why = f"no {e} in meta.json" if isinstance(e, KeyError) else str(e)
            raise CXRAugError(f"{show_path(folder)} is not a cxraug cache ({why})") from e
        return ds


def build_cache(
    coll: Collection,
    prep: Preprocess,
    *,
    cache_root: str | os.PathLike | None = None,
    skip_bad: bool = True,
    progress: bool = True,
) -> CachedDataset:
    """Return the cached dataset for ``coll`` + ``prep``, building it on a miss."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = cache_key(coll, prep)
    folder = root / key
    if _complete(folder):
        return CachedDataset.load(folder)
    with _build_lock(root, key):  # concurrent builders of this key (DDP ranks, parallel jobs) wait for one
        if not _complete(folder):
            _decode(coll, prep, skip_bad, progress).save(folder, replace=False)
    return CachedDataset.load(folder)


def _decode(coll: Collection, prep: Preprocess, skip_bad: bool, progress: bool) -> CachedDataset:
    errors: list[ImageReadError] = []
    imgs, keep = [], []
    it = tqdm(coll.samples, desc=f"decode {prep.size}px", unit="img", disable=not progress, leave=False)
    for k, s in enumerate(it):
        try:
            imgs.append(prep(s.load().image))
            keep.append(k)
        except ImageReadError as e:
            if not skip_bad:
                raise
            errors.append(e)
    if not keep:
        raise CXRAugError("no readable images: " + "; ".join(str(e) for e in errors[:3]))
    return CachedDataset(
        images=np.stack(imgs),
        labels=np.stack([coll.samples[k].labels for k in keep]).astype(np.float32),
        class_names=list(coll.class_names),
        patient_ids=[coll.samples[k].patient_id for k in keep],
        paths=[coll.samples[k].path for k in keep],
        sources=[coll.samples[k].source for k in keep],
        multilabel=coll.multilabel,
        prep=prep.to_dict(),
        errors=[str(e) for e in errors],
        root=coll.root,
    )


def _complete(folder: Path) -> bool:
    """A cache folder only ever appears whole (it is renamed into place), so its two files mean it is done."""
    return (folder / "meta.json").is_file() and (folder / "images.npy").is_file()


def _publish(tmp: Path, folder: Path, replace: bool) -> None:
    """Rename the finished ``tmp`` folder to ``folder`` atomically. rename(2) refuses a non-empty target: then
    another process won the race (keep its identical cache unless ``replace``), or the target is an old or
    broken copy, which is first renamed aside (also atomic) and then deleted."""
    try:
        os.rename(tmp, folder)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
            raise
    if not replace and _complete(folder):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
    try:
        os.replace(folder, aside / "x")
    except FileNotFoundError:  # someone else moved it away meanwhile
        pass
    try:
        os.rename(tmp, folder)
    except OSError as e:  # a third process published in between: fine unless we must replace
        if replace or not _complete(folder) or e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(root: Path, key: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``root/<key>.lock`` while one process builds the cache; the others block
    and then find it built, so it is decoded once. Where locks are not available (no fcntl, some network
    file systems) it does nothing: :func:`_publish` alone keeps concurrent builds correct."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CXRAugError(f"cannot write cache {show_path(root)}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # ENOLCK / EOPNOTSUPP: no lock, rely on the atomic publish
            pass
        yield
    finally:
        os.close(fd)  # releases the lock; the (empty) lock file stays, deleting it would race other lockers
