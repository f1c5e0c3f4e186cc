"""PEFT-style module selection: a pattern names a module by regex full-match or by name suffix,
or is a module type. A pattern that selects nothing is an error, never silence."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from torch import nn

Pattern = str | type


def matches(name: str, module: nn.Module, pattern: Pattern) -> bool:
    if isinstance(pattern, type):
        return isinstance(module, pattern)
    if name == pattern or name.endswith("." + pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error as err:
        raise ValueError(f"invalid pattern {pattern!r} ({err}); use a module name, a name suffix or a regex") from None


def check_patterns(patterns: Sequence[Pattern] | None, what: str) -> list[Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, (str, type)):
        patterns = [patterns]
    for p in patterns:
        if not isinstance(p, (str, type)) or p == "":
            raise ValueError(f"{what} entries must be module-name patterns or module types, got {p!r}")
    return list(patterns)


def select(
    modules: Iterable[tuple[str, nn.Module]], patterns: Sequence[Pattern], what: str, hint: Sequence[str] = ()
) -> set[str]:
    """Names of ``modules`` matched by any pattern; raise if some pattern matches none of them."""
    modules = list(modules)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {name for name, module in modules if matches(name, module, pattern)}
        if not hits:
            shown = pattern.__name__ if isinstance(pattern, type) else repr(pattern)
            examples = ", ".join(repr(n) for n in list(hint)[:3]) or "none"
            raise ValueError(
                f"{what} pattern {shown} matched no module (names look like {examples}); "
                "fix the pattern or list the model's modules with fan_convert.plan(model)"
            )
        chosen |= hits
    return chosen
