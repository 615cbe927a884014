"""One entry point from "what the user typed" to a cached dataset.

``path`` is a folder (folder-per-class, Radiography-Database layout, flat folder), a CSV manifest,
a cache folder written by ``cxraug data prepare``, or ``phantom[:class=n,...]`` for the embedded
offline phantoms (default ``phantom:normal=300,covid=60,pneumonia=120``). How a manifest is read
(format, columns, view, uncertainty policy) is ``DataConfig.manifest`` (YAML ``data.manifest.*``).

:func:`check_outputs` is the one output guard every command runs before any work: no output folder
and no cache may lie inside an input (a data folder, a manifest's folder, or any folder a manifest's
paths point into).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.data.cache import CachedDataset, build_cache, default_cache_root
from cxraug.data.manifests import ManifestSpec
from cxraug.data.phantom import phantom_collection
from cxraug.data.preprocess import Preprocess
from cxraug.data.readers import is_manifest, open_collection
from cxraug.data.sample import Collection
from cxraug.errors import ConfigError, CXRAugError
from cxraug.io import ensure_outside

log = logging.getLogger("cxraug")

DEFAULT_PHANTOM = {"normal": 300, "covid": 60, "pneumonia": 120}


@dataclass
class DataConfig:
    path: str = "phantom"
    size: int = 64
    clahe: bool = False
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    resize: str = "pad"
    seed: int = 0
    cache_dir: str | None = None
    manifest: ManifestSpec = field(default_factory=ManifestSpec)

    @property
    def prep(self) -> Preprocess:
        return Preprocess(self.size, self.clahe, self.clahe_clip, self.clahe_tile, self.resize)

    def validate(self) -> None:
        """Raise a one-line :class:`~cxraug.errors.ConfigError` for any out-of-range value."""
        self.prep  # noqa: B018 -- Preprocess checks size, resize, CLAHE clip and tile
        self.manifest.validate()
        if self.is_phantom:
            parse_phantom_spec(str(self.path))  # bounded counts

    @property
    def is_phantom(self) -> bool:
        return is_phantom(self.path)


#: The most phantom images one spec may ask for (all classes together): each is drawn in memory.
MAX_PHANTOM = 100_000


def parse_phantom_spec(spec: str) -> dict[str, int]:
    """``phantom:normal=300,covid=60`` -> {"normal": 300, "covid": 60}; each count >= 1, at most
    :data:`MAX_PHANTOM` images in all (``normal=100000000`` used to end in a segmentation fault, ``normal=-5`` in a
    torch traceback)."""
    if spec == "phantom":
        return dict(DEFAULT_PHANTOM)
    body = spec.split(":", 1)[1]
    out = {}
    for part in body.split(","):
        try:
            k, v = part.split("=")
            out[k.strip()] = int(v)
        except ValueError as e:
            raise ConfigError(f"bad phantom spec {spec!r}; expected phantom:normal=300,covid=60") from e
        if out[k.strip()] < 1 or not k.strip():
            raise ConfigError(f"phantom spec {spec!r}: {part.strip()!r} must name a class and a count >= 1")
    if sum(out.values()) > MAX_PHANTOM:
        raise ConfigError(f"phantom spec {spec!r} asks for {sum(out.values()):,} images; at most {MAX_PHANTOM:,} in all")
    return out


def is_phantom(path: str | os.PathLike) -> bool:
    return str(path) == "phantom" or str(path).startswith("phantom:")


def is_cache(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "images.npy").is_file() and (p / "meta.json").is_file()


def open_source(path: str, *, size: int = 64, seed: int = 0, manifest: ManifestSpec | None = None) -> Collection:
    if is_phantom(path):
        return phantom_collection(parse_phantom_spec(path), size=size, seed=seed)
    return open_collection(path, spec=manifest)


def open_config(cfg: DataConfig) -> Collection:
    """The (undecoded) collection ``cfg`` names."""
    return open_source(cfg.path, size=max(cfg.size, 64), seed=cfg.seed, manifest=cfg.manifest)


def load_dataset(
    cfg: DataConfig, *, progress: bool = True, collection: Collection | None = None, announce: bool = True
) -> CachedDataset:
    """Return the cached, preprocessed dataset for ``cfg`` (building the cache if needed).

    ``collection``: the result of :func:`open_config` when the caller already listed it (and reported what
    the listing skipped). The cache is refused inside any input folder (see :func:`check_outputs`). With
    ``announce``, every file left out (listing or decoding) is named on stderr (:mod:`cxraug.data.skipped`);
    :func:`skipped_lines` gives them for the run folder's ``skipped.csv``.
    """
    from cxraug.data import skipped

    cfg.validate()
    p = Path(cfg.path) if not cfg.is_phantom else None
    if p is not None and is_cache(p):
        ds = CachedDataset.load(p)
        if ds.size != cfg.size:
            raise CXRAugError(f"cache {cfg.path} holds {ds.size}px images, but size={cfg.size} was asked for")
        ds.listing_skipped = []
    else:
        reported = collection is not None  # the caller listed it and named what the listing skipped
        if collection is None:
            collection = open_config(cfg)
            for msg in collection.problems:  # encoding fallback, label spellings
                log.warning(f"warning: {msg}")
        coll = collection
        _check_cache(cfg, collection_folders(cfg.path, coll, cfg.manifest))
        ds = build_cache(coll, cfg.prep, cache_root=cfg.cache_dir, progress=progress)
        ds.listing_skipped = list(coll.skipped)  # bad rows, FIFOs, broken links
        if announce:
            skipped.announce(ds.errors if reported else skipped_lines(ds))
        return ds
    if announce:
        skipped.announce(skipped_lines(ds))
    return ds


def skipped_lines(*datasets: CachedDataset | None) -> list[str]:
    """Every file :func:`load_dataset` left out of ``datasets``: set aside while listing, then unreadable."""
    out: list[str] = []
    for ds in datasets:
        for line in [*(ds.listing_skipped if ds is not None else []), *(ds.errors if ds is not None else [])]:
            if line not in out:
                out.append(line)
    return out


def collection_folders(path: str | os.PathLike, coll: Collection | None, spec: ManifestSpec | None = None) -> list[Path]:
    """Every place a listed source reads from: itself (a manifest: its folder, also the one a linked manifest
    lies in), a manifest's ``root`` and MIMIC label file, each image's folder, and each linked image file
    (standing for the folder its target lies in). :func:`cxraug.io.ensure_outside` resolves every symlink."""
    if is_phantom(path):
        return []
    p = Path(path)
    out: set[Path] = {p, p.parent} if p.is_file() else {p}
    out |= {Path(x) for x in (spec.root, spec.labels_csv) if x} if spec is not None else set()
    parents: set[str] = set()
    for s in coll.samples if coll is not None else []:
        if s.path.startswith("xrv://"):
            continue
        parents.add(os.path.dirname(s.path) or ".")
        if os.path.islink(s.path):
            out.add(Path(s.path))
    return sorted(out | {Path(d) for d in parents})


def linked_entries(root: Path) -> list[Path]:
    """The symlinks below folder ``root`` that the folder reader follows (folders at any depth, and files: it
    reads any file with an image extension and sniffs the others for DICOM), so the guard can protect the places
    they lead to. Hidden entries and mask folders are skipped as the reader skips them; a folder reached twice
    (a link loop) is walked once. One ``scandir`` per folder: links are told from the directory entry, with
    a ``stat`` only for a link."""
    from cxraug.data.readers import IGNORED_DIRS

    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(d))
        except OSError:
            continue  # unreadable: the reader reports it
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()  # follows a link
            except OSError:
                continue
            if e.is_symlink() and (is_dir or e.is_file()):  # any file: the reader sniffs each for DICOM
                out.append(Path(e.path))
            if is_dir and e.name.lower() not in IGNORED_DIRS:
                stack.append(Path(e.path))
    return sorted(out)


def input_folders(source: str | os.PathLike | DataConfig) -> list[Path]:
    """The places :func:`check_outputs` protects for one source (listing a manifest, decoding nothing): the
    folder and every symlink the folder reader follows below it, or everything a manifest reads
    (:func:`collection_folders`); a cache or checkpoint file stands for its folder (a linked one for both)."""
    cfg = source if isinstance(source, DataConfig) else DataConfig(path=str(source))
    path = str(cfg.path)
    if is_phantom(path):
        return []
    p = Path(path)
    if not p.exists():
        return []  # the reader says so
    if p.is_dir():
        return [p, *(linked_entries(p) if not is_cache(p) else [])]
    if not is_manifest(p):
        return [p, p.parent]
    return collection_folders(p, open_config(cfg), cfg.manifest)


def _check_cache(cfg: DataConfig, folders: list[Path]) -> None:
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root()
    ensure_outside(root, folders, what="cache folder",
                   hint="set --cache-dir (or $CXRAUG_CACHE) to a folder outside your data")  # fmt: skip


def check_outputs(
    sources: Iterable[str | os.PathLike | DataConfig], out: str | os.PathLike | None = None, cache: bool = True
) -> None:
    """The output guard: refuse ``out`` and (with ``cache``) each source's cache root inside any input.

    Inputs are each source's folder, a manifest's folder and every folder its rows point into. Run it
    before any work, so a refused command has written nothing.
    """
    folders: list[Path] = []
    cfgs = [s if isinstance(s, DataConfig) else DataConfig(path=str(s)) for s in sources]
    for cfg in cfgs:
        folders += input_folders(cfg)
    if out is not None:
        ensure_outside(out, folders)
    if cache:
        for cfg in cfgs:
            if not cfg.is_phantom and not is_cache(cfg.path):
                _check_cache(cfg, folders)


def describe(path: str | os.PathLike) -> str:
    return "embedded phantoms" if str(path).startswith("phantom") else str(path)
