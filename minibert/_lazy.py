"""Lazy re-exports for a package `__init__`: a name is imported from its submodule on first use, so
importing a torch-free submodule (config, readers) does not pull in torch through the package."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """The module `__getattr__` and `__dir__` for `package`, whose names live in the submodules
    `table` names (name -> submodule); `namespace` is the package's globals(), which caches each hit."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
