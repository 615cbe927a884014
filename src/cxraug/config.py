"""Typed configuration: dataclasses loaded from YAML, overridable with ``key.sub=value`` strings.

Every run writes its resolved config (``config.yaml``) next to its outputs, so a run can be
repeated exactly with ``--config RUN/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cxraug.errors import CXRAugError, show_path
from cxraug.io import write_text_atomic

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. PyYAML's YAML 1.1 also reads yes/no/on/off as booleans, which
    turned ``amp: no`` and ``--set channels_last=on`` into False/True and so silently into other settings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except (TypeError, ValueError, CXRAugError) as e:
                errs.append(str(e))
        if len(errs) == 1:  # an optional field (X | None): X's own reason, e.g. an unknown key of a section
            raise CXRAugError(errs[0])
        raise CXRAugError(f"{where}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise CXRAugError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, list | tuple):
            raise CXRAugError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[]") for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise CXRAugError(f"{where}: expected a mapping (key: value, or --set {where.split('.')[-1]}.KEY=VALUE), "
                              f"got {value!r}")  # fmt: skip
        return dict(value)
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise CXRAugError(f"{where}: expected true/false, got {value!r}")
        return bool(value)
    if tp in (int, float):
        if isinstance(value, bool):  # int(True) is 1: `batch_size: true` is a mistake, not a batch of one
            raise CXRAugError(f"{where}: expected {tp.__name__}, got {value!r}")
        try:
            v = tp(value)
        except (TypeError, ValueError) as e:
            raise CXRAugError(f"{where}: expected {tp.__name__}, got {value!r}") from e
        if tp is int and isinstance(value, float) and v != value:
            raise CXRAugError(f"{where}: expected an integer, got {value!r}")
        return v
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (possibly partial) dict; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CXRAugError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise CXRAugError(f"override {key}: {p} is not a section")
    d[parts[-1]] = value


def load_config(
    cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> T:
    """``base`` (e.g. a preset) < YAML file < ``overrides`` ("a.b=value", YAML-parsed values)."""
    data: dict = to_dict(base) if base is not None else {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise CXRAugError(f"config file not found: {show_path(p)}")
        try:
            loaded = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise CXRAugError(f"{show_path(p)}: invalid YAML ({_one_line(e)})") from e
        except (OSError, UnicodeDecodeError) as e:
            raise CXRAugError(f"{show_path(p)}: cannot read config ({e})") from e
        if not isinstance(loaded, dict):
            raise CXRAugError(f"{show_path(p)}: expected a mapping of config keys, got {type(loaded).__name__}")
        _deep_update(data, loaded)
    for ov in overrides or []:
        if "=" not in ov:
            raise CXRAugError(f"override {ov!r} must look like key=value (e.g. train.steps=500)")
        k, v = ov.split("=", 1)
        try:
            value = load_yaml(v) if v.strip() else ""
        except yaml.YAMLError as e:
            raise CXRAugError(f"override {ov!r}: invalid YAML value ({_one_line(e)})") from e
        _set_dotted(data, k.strip(), value)
    return from_dict(cls, data)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _deep_update(a: dict, b: dict) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _deep_update(a[k], v)
        else:
            a[k] = v


def save_config(obj: Any, dest: str | os.PathLike) -> Path:
    return write_text_atomic(dest, yaml.safe_dump(to_dict(obj), sort_keys=False))
