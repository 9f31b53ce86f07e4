"""A package's public names imported on first use: the light parts of a package (its settings,
read to build the CLI's help) can then be imported without loading torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable:
    """A module `__getattr__` for `package` that imports each of `names` (name -> relative
    module) from its module when first asked for; loaded once, it is then an ordinary attribute
    of `namespace` (the package's globals), and one deleted stays deleted, as an eager one."""

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names.pop(name), package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
