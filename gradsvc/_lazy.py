"""Submodules as attributes, loaded on first use (`gradsvc.storage.store` after `import gradsvc`)."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Callable


def submodules_on_demand(package: str) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports a submodule the first time it is named."""
    def __getattr__(name: str):
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
