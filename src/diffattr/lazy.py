"""Lazy package exports (PEP 562), so that importing a package's settings stays light.

A package ``__init__`` lists what it exports and where it lives::

    _EXPORTS = {"load_dataset": "diffattr.data.load:load_dataset"}
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

and the module holding it is imported on first access (``from diffattr.data import
load_dataset``), not when ``diffattr.data.settings`` is imported by the run plan.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        globals_of(package)[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals_of(package)) | set(exports))

    return __getattr__, __dir__


def globals_of(package: str) -> dict[str, Any]:
    import sys

    return vars(sys.modules[package])
