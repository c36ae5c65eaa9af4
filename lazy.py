"""Lazy re-exports for subpackage ``__init__`` modules.

Why: ``import hifitrt.engines`` (or export, validation) must stay cheap — the CLI's ``--help``,
the Triton stub processes and the serving page import them without needing torch or ONNX
Runtime yet — while ``from hifitrt.engines import BuildOptions`` still works. Each subpackage
lists ``{public name: relative module}`` once and gets its module ``__getattr__`` from here.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``table[name]`` on first use."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        setattr(sys.modules[package], name, value)  # cached: the next lookup is a plain attribute
        return value

    return __getattr__
