"""Every test can fail: each ``test_*`` function in tests/ asserts something, directly (an
``assert``, ``pytest.raises``/``warns``/``approx``, ``torch.testing.assert_close``, any call named
``assert*``) or through a helper of tests/ or fan_convert.testing that does."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKING = ("assert", "raises", "warns", "approx", "fail")


def _name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _testing_sources() -> list[Path]:
    """fan_convert.testing's files, wherever it lives (a module or a package)."""
    spec = importlib.util.find_spec("fan_convert.testing")
    if spec.submodule_search_locations:
        return sorted(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.py"))
    return [Path(spec.origin)]


def test_every_test_function_asserts_something():
    trees = {p: ast.parse(p.read_text()) for p in [*sorted((ROOT / "tests").glob("*.py")), *_testing_sources()]}
    helpers: dict[str, list[ast.FunctionDef]] = {}
    for tree in trees.values():
        for fn in _functions(tree):
            helpers.setdefault(fn.name, []).append(fn)

    def checks(fn: ast.AST, seen: frozenset[str]) -> bool:
        for node in ast.walk(fn):
            if isinstance(node, ast.Assert):
                return True
            if isinstance(node, ast.Call):
                name = _name(node)
                if name.lower().startswith(CHECKING):
                    return True
                if name in helpers and name not in seen and any(checks(h, seen | {name}) for h in helpers[name]):
                    return True
        return False

    silent = [
        f"{path.name}::{fn.name}"
        for path, tree in trees.items() if path.parent == ROOT / "tests"
        for fn in _functions(tree) if fn.name.startswith("test") and not checks(fn, frozenset({fn.name}))
    ]
    assert len(trees) > 30 and not silent, f"test functions that cannot fail: {silent}"
