"""What the rule table loads on first use, as declared by the layers above it.

The rule table (:mod:`fan_convert.surgery.rules`) sits low in the package's layer order, so it
never names the integrations that add rules to it (:mod:`fan_convert.integrations`). The package
root declares them here instead (``fan_convert/__init__.py``), and the table runs what was
declared when it first loads; each integration registers its rules itself when imported
(:func:`fan_convert.surgery.rules.register_integration`). Nothing here imports torch.

Example::

    extensions.declare(lambda: importlib.import_module("mylib.fan_rules"))   # before the table loads
"""

from __future__ import annotations

from typing import Callable

__all__ = ["declare", "load_declared"]

_pending: list[Callable[[], object]] = []


def declare(loader: Callable[[], object]) -> None:
    """Run ``loader()`` (e.g. an import that registers rules) before the rule table is first used."""
    _pending.append(loader)


def load_declared() -> None:
    """Run the loaders declared so far, each once, in declaration order."""
    while _pending:
        _pending.pop(0)()
