"""Lazy package attributes (PEP 562): a package names what it exports, and the module holding each
name is imported on first use, so ``import keras_fada`` (and the command line's ``--help``) loads
no backend."""

from __future__ import annotations

import importlib


def attach(package: str, submodules=(), exports: dict[str, list[str]] | None = None):
    """``(__getattr__, __dir__, __all__)`` for ``package``: its ``submodules`` by name, and the
    names each submodule in ``exports`` (relative, e.g. ``".layers"``) provides."""
    where = {name: module for module, names in (exports or {}).items() for name in names}
    submodules = {name: f".{name}" for name in submodules}

    def __getattr__(name):
        if name in where:
            return getattr(importlib.import_module(where[name], package), name)
        if name in submodules:
            return importlib.import_module(submodules[name], package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    names = sorted([*where, *submodules])
    return __getattr__, lambda: names, names
