"""One entry point from "what the user typed" to a cached dataset.

``path`` is a folder (folder-per-class, Radiography-Database layout, flat folder), a CSV manifest,
a cache folder written by ``cxraug data prepare``, or ``phantom[:class=n,...]`` for the embedded
offline phantoms (default ``phantom:normal=300,covid=60,pneumonia=120``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cxraug.data.cache import CachedDataset, build_cache
from cxraug.data.phantom import phantom_collection
from cxraug.data.preprocess import Preprocess
from cxraug.data.readers import open_collection
from cxraug.data.sample import Collection
from cxraug.errors import CXRAugError

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

    @property
    def prep(self) -> Preprocess:
        return Preprocess(self.size, self.clahe, self.clahe_clip, self.clahe_tile, self.resize)


def parse_phantom_spec(spec: str) -> dict[str, int]:
    if spec == "phantom":
        return dict(DEFAULT_PHANTOM)
    body = spec.split(":", 1)[1]
    out = {}
    for part in body.split(","):
        try:
            k, v = part.split("=")
            out[k.strip()] = int(v)
        except ValueError as e:
            raise CXRAugError(f"bad phantom spec {spec!r}; expected phantom:normal=300,covid=60") from e
    return out


def open_source(path: str, size: int = 64, seed: int = 0) -> Collection:
    if path == "phantom" or path.startswith("phantom:"):
        return phantom_collection(parse_phantom_spec(path), size=size, seed=seed)
    return open_collection(path)


def load_dataset(cfg: DataConfig, progress: bool = True) -> CachedDataset:
    """Return the cached, preprocessed dataset for ``cfg`` (building the cache if needed)."""
    p = Path(cfg.path) if not cfg.path.startswith("phantom") else None
    if p is not None and (p / "images.npy").is_file() and (p / "meta.json").is_file():
        ds = CachedDataset.load(p)
        if ds.size != cfg.size:
            raise CXRAugError(f"cache {cfg.path} holds {ds.size}px images, but size={cfg.size} was asked for")
        return ds
    coll = open_source(cfg.path, size=max(cfg.size, 64), seed=cfg.seed)
    return build_cache(coll, cfg.prep, cache_root=cfg.cache_dir, progress=progress)


def describe(path: str | os.PathLike) -> str:
    return "embedded phantoms" if str(path).startswith("phantom") else str(path)
