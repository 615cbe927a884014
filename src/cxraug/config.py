"""Typed configuration: dataclasses loaded from YAML, overridable with ``key.sub=value`` strings.

Every run writes its resolved config (``config.yaml``) next to its outputs, so a run can be
repeated exactly with ``--config RUN/config.yaml``.

A config class may name *sections*: groups of its flat keys that a user may also write nested under the
group's name (``stylegan2: {w_dim: 128}`` or ``--set stylegan2.w_dim=128`` for the flat ``w_dim``). The class
says which in a ``config_sections`` class attribute, a mapping of section name to a dataclass whose field names
are flat keys of the class (:func:`config_sections`). Each source of a config (a base dict, a YAML file, the
overrides) is flattened on its own before the sources are merged (:func:`flatten_sections`), so precedence is
by source as for flat keys, and what is built and saved (:func:`save_config`) stays flat.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cxraug.errors import ConfigError, CXRAugError, show_path
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


# Bounds of a config document, checked while it is read and before any value is used (issue 32): a YAML alias
# bomb ("billion laughs": nested anchors, each alias repeating the one before) is a file of a few hundred bytes
# that expands to billions of values, and deep nesting overflows the recursion of the reader and of every
# function that walks the config. Real configs are a few hundred values a handful of levels deep.
MAX_YAML_DEPTH = 50  # levels of nesting, counted through aliases
MAX_YAML_SIZE = 1_000_000  # values plus characters of text, aliases expanded
MAX_CONFIG_BYTES = 10_000_000  # a config file larger than this is not read


class YAMLLimitError(yaml.YAMLError):
    """A YAML document refused before use: too large once expanded, too deep, a duplicate key, a non-finite number."""


def _line(node: yaml.Node) -> str:
    return f" (line {node.start_mark.line + 1})" if node.start_mark is not None else ""


class _SafeLoader(_Loader):
    """:class:`_Loader` with the bounds above; duplicate keys and non-finite numbers (``.inf``, ``.nan``, ``1e999``)
    are refused (YAML would keep the last key silently; an infinite step count overflowed much later)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the constructor below says so
                    continue
                if dup:
                    raise YAMLLimitError(f"duplicate key {key!r}{_line(key_node)}: give each key once")
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: Any) -> float:
        v = super().construct_yaml_float(node)
        if not math.isfinite(v):
            raise YAMLLimitError(f"non-finite number {node.value!r}{_line(node)}: give a finite value")
        return v


_SafeLoader.add_constructor("tag:yaml.org,2002:float", _SafeLoader.construct_yaml_float)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand past :data:`MAX_YAML_SIZE` or :data:`MAX_YAML_DEPTH`, or refer to
    themselves. Each distinct node is visited once (an alias is the node it names), iteratively, so a bomb is
    refused in time and memory proportional to its file, never to its expansion."""
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = [done[id(c)] for c in _children(node)]
            size = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0) + sum(k[0] for k in kids)
            depth = 1 + max((k[1] for k in kids), default=0)
            open_.discard(key)
            if size > MAX_YAML_SIZE:
                raise YAMLLimitError(f"the document expands to more than {MAX_YAML_SIZE:,} values and characters "
                                     f"(aliases *name repeat what &name marks){_line(node)}; refused")  # fmt: skip
            if depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels through aliases{_line(node)}")
            done[key] = (size, depth)
            continue
        if key in done:
            continue
        if key in open_:
            raise YAMLLimitError(f"an alias refers to the node that contains it{_line(node)}")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def load_yaml(text: str) -> Any:
    """Parse one YAML document within the bounds above; any refusal or parse failure is a ``yaml.YAMLError``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise YAMLLimitError(f"{len(text):,} characters; a config holds at most {MAX_CONFIG_BYTES:,}")
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except (ValueError, OverflowError, RecursionError, MemoryError) as e:  # e.g. an integer of 5,000 digits
        raise YAMLLimitError(" ".join(str(e).split()) or type(e).__name__) from None


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


def config_sections(cls: type) -> Mapping[str, type]:
    """The sections a config class takes besides its flat keys: its ``config_sections`` class attribute, a
    mapping of section name to a dataclass whose field names are flat keys of ``cls`` (none: no sections)."""
    return getattr(cls, "config_sections", None) or {}


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _lift(
    items: Iterable[tuple[tuple[Any, ...], Any]], sections: Mapping[str, type], where: str
) -> list[tuple[tuple[Any, ...], Any]]:
    """One source's (key path, value) pairs, in order, with each section's keys lifted to flat key paths:
    ``(("stylegan2",), {"w_dim": 128})`` and ``(("stylegan2", "w_dim"), 128)`` both become ``(("w_dim",), 128)``.
    Refused, one line each: a section that is not a mapping, a key that is no field of its section, and a key
    given in this source both flat and in a section (or in two sections)."""
    flat: set[Any] = set()  # top-level keys given flat
    nested: dict[Any, str] = {}  # key -> the section that gave it
    out: list[tuple[tuple[Any, ...], Any]] = []
    for path, value in items:
        head = path[0]
        if head not in sections:
            if head in nested:
                raise ConfigError(f"{where}: {head} given twice: flat and in {nested[head]}:")
            flat.add(head)
            out.append((path, value))
            continue
        fields = {f.name for f in dataclasses.fields(sections[head])}
        if len(path) > 1:
            entries = [(path[1:], value)]
        elif value is None:  # `stylegan2:` with nothing under it: an empty section
            entries = []
        elif isinstance(value, dict):
            entries = [((k,), v) for k, v in value.items()]
        else:
            raise ConfigError(f"{where}: {head}: expected a mapping of its keys ({head}: {{KEY: VALUE}} or "
                              f"--set {head}.KEY=VALUE), got {_short(value)}")  # fmt: skip
        for sub, v in entries:
            key = sub[0]
            if key not in fields:
                raise ConfigError(f"{where}: {head}: unknown key {key!r}; known: {', '.join(sorted(fields))}")
            if key in flat:
                raise ConfigError(f"{where}: {key} given twice: flat and in {head}:")
            if nested.get(key, head) != head:
                raise ConfigError(f"{where}: {key} given twice: in {nested[key]}: and in {head}:")
            nested[key] = head
            out.append((sub, v))
    return out


def flatten_sections(data: dict, sections: Mapping[str, type], *, where: str = "config") -> dict:
    """One source's config dict with each section (``stylegan2: {w_dim: 128}``) replaced by its keys, flat
    (``w_dim: 128``); ``sections``: section name -> dataclass whose field names are the flat keys it may hold.
    A key given both flat and in its section, an unknown key of a section, and a section that is not a mapping
    are a :class:`~cxraug.errors.ConfigError` naming ``where``, the section and the key."""
    if not sections or not any(k in sections for k in data):
        return data
    return {path[0]: v for path, v in _lift((((k,), v) for k, v in data.items()), sections, where)}


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (possibly partial) dict; unknown keys are an error. The dict is one source:
    sections of ``cls`` (:func:`config_sections`) in it are flattened first."""
    data = flatten_sections(data, config_sections(cls), where=where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise CXRAugError(f"{where}: unknown key(s) {sorted(unknown, key=str)}; known: {sorted(names)}")
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
    cls: type[T],
    path: str | os.PathLike | None = None,
    *,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> T:
    """``base`` (e.g. a preset) < YAML file < ``overrides`` ("a.b=value", YAML-parsed values). Each of the three
    is flattened on its own (the sections of ``cls``, :func:`flatten_sections`) before it is merged."""
    sections = config_sections(cls)
    data: dict = flatten_sections(to_dict(base), sections, where="base config") if base is not None else {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise CXRAugError(f"config file not found: {show_path(p)}")
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise YAMLLimitError(f"{p.stat().st_size:,} bytes; a config holds at most {MAX_CONFIG_BYTES:,}")
            loaded = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise CXRAugError(f"{show_path(p)}: invalid YAML ({_one_line(e)})") from e
        except (OSError, UnicodeDecodeError) as e:
            raise CXRAugError(f"{show_path(p)}: cannot read config ({e})") from e
        if not isinstance(loaded, dict):
            raise CXRAugError(f"{show_path(p)}: expected a mapping of config keys, got {type(loaded).__name__}")
        _deep_update(data, flatten_sections(loaded, sections, where=show_path(p)))
    given: list[tuple[tuple[Any, ...], Any]] = []
    for ov in overrides or []:
        if "=" not in ov:
            raise CXRAugError(f"override {ov!r} must look like key=value (e.g. train.steps=500)")
        k, v = ov.split("=", 1)
        try:
            value = load_yaml(v) if v.strip() else ""
        except yaml.YAMLError as e:
            raise CXRAugError(f"override {ov!r}: invalid YAML value ({_one_line(e)})") from e
        given.append((tuple(k.strip().split(".")), value))
    for key, value in _lift(given, sections, "overrides (--set)") if sections else given:
        _set_dotted(data, ".".join(key), value)
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
