"""Issue 29 item 5: public functions take their options as keyword-only arguments.

Only the one to three natural main inputs of a public function (a name without a leading ``_``) are positional;
every option comes after a ``*``. A call then reads ``evaluate_images(real, fake, features="cxr", n=200)``
instead of a row of bare numbers and flags whose meaning depends on their order, and adding or reordering an
option can never silently shift the meaning of an existing call. This test walks every ``cxraug`` module (the
command-line modules aside, whose functions are argparse entry points) and lists the functions that still take
more than three positional parameters with at least one of them defaulted, i.e. an option passed by position.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import cxraug


def positional_options() -> list[str]:
    bad = []
    for m in pkgutil.walk_packages(cxraug.__path__, "cxraug."):
        if m.name.startswith("cxraug.cli") or m.name.endswith("__main__"):
            continue
        mod = importlib.import_module(m.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != mod.__name__:
                continue
            ps = [p for p in inspect.signature(obj).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
            if len(ps) > 3 and any(p.default is not p.empty for p in ps):
                bad.append(f"{m.name}.{name}{inspect.signature(obj)}")
    return bad


def test_public_functions_take_options_by_keyword():
    bad = positional_options()
    assert not bad, "options passed by position (put them after a `*`):\n" + "\n".join(bad)
