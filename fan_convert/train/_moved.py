"""The old import paths of the data pipeline, which moved to :mod:`fan_convert.data`: each alias
module forwards its names there with a :class:`DeprecationWarning` naming the import to use."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Iterable


def forward(old: str, new: str, names: Iterable[str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that looks ``name`` up in :mod:`fan_convert.data` when
    that exports it, else in module ``new``, and warns (``names``: only these, when given)."""
    names = None if names is None else frozenset(names)

    def __getattr__(name: str) -> Any:
        if (names is not None and name not in names) or (name.startswith("__") and name != "__all__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        package = importlib.import_module("fan_convert.data")
        home = "fan_convert.data" if name in package.__all__ else new
        try:
            value = getattr(importlib.import_module(home), name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r} ({old} moved to {new})") from None
        warnings.warn(f"{old} moved: import from {home} (from {home} import {name})", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
