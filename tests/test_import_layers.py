"""Every module of fan_convert imports only the layers below it, in the order pyproject.toml's
import-linter contract declares, counting the imports lint-imports cannot see: a module named in
a string (``importlib.import_module("fan_convert.x")``, ``__import__``, or a tuple of names to
import later) counts as imported by the module that holds the string."""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest

import fan_convert

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

PACKAGE = Path(fan_convert.__file__).parent
_NAMED = re.compile(r"fan_convert(?:\.[A-Za-z_]\w*)+(?::[\w.]+)?")  # "fan_convert.x.y" or "fan_convert.x.y:Class"
_IMPORTERS = {"import_module", "__import__"}


@functools.cache
def _layers() -> tuple[dict[str, int], dict[str, set[str]], list[str]]:
    """The contract's layers: package -> level (0 is the top), package -> its independent
    siblings (``a | b``), and the ignored module names."""
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    assert contract["containers"] == ["fan_convert"]
    level, independent = {}, {}
    for i, layer in enumerate(contract["layers"]):
        names = [n.strip() for n in re.split(r"[|:]", layer)]
        for name in names:
            level[name] = i
            independent[name] = set(names) - {name} if "|" in layer else set()
    return level, independent, list(contract.get("exhaustive_ignores", []))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every fan_convert module ``source`` (the text of ``module``) imports or names in a string:
    at the top, inside functions, or under TYPE_CHECKING; relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(part for part in (base, node.module) if part)
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            target = node.args[0].value
            if called in _IMPORTERS and isinstance(target, str) and target.startswith("."):  # import_module(".x", package)
                level = len(target) - len(target.lstrip("."))
                found.add(".".join(p for p in (package.rsplit(".", level - 1)[0], target.lstrip(".")) if p))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAMED.fullmatch(node.value):
            found.add(node.value.partition(":")[0])
    return {name for name in found if name.startswith("fan_convert.")}


def not_below(module: str, names: set[str]) -> list[str]:
    """Those of ``names`` that sit above ``module``'s layer, or beside it as an independent sibling."""
    level, independent, _ = _layers()
    home = module.split(".")[1]
    wrong = []
    for name in sorted(names):
        target = name.split(".")[1]
        if target == home or target not in level:  # its own package; the root's names (__version__)
            continue
        if level[target] < level[home] or target in independent[home]:
            wrong.append(name)
    return wrong


def _modules() -> list[Path]:
    _, _, ignored = _layers()
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if p != PACKAGE / "__init__.py" and _module_name(p).split(".")[1] not in ignored]


def test_every_package_is_in_the_contract():
    level, _, ignored = _layers()
    tops = {_module_name(p).split(".")[1] for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"}
    assert tops - set(ignored) == set(level), "pyproject.toml's layers and the packages under fan_convert/ differ"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_it(path):
    module = _module_name(path)
    wrong = not_below(module, imported(path.read_text(), module, path.name == "__init__.py"))
    assert not wrong, f"{module} imports {wrong}, above its layer in pyproject.toml's import-linter contract"


@pytest.mark.parametrize("source", [
    "from ..integrations.transformers import HF_RULES",
    "import fan_convert.zoo",
    "import importlib\nimportlib.import_module('fan_convert.integrations.transformers')",
    "__import__('fan_convert.io')",
    "import importlib\nimportlib.import_module('..zoo', __package__)",
    "INTEGRATIONS = ('fan_convert.integrations.transformers',)\nfor n in INTEGRATIONS:\n    __import__(n)",
    "RULE = 'fan_convert.deploy.dynamic:FrameIndexed'",
])
def test_the_check_sees_hidden_upward_imports(source):
    """The check fails on what rules.py once did: a tuple of module names imported with importlib."""
    assert not_below("fan_convert.surgery.rules", imported(source, "fan_convert.surgery.rules"))
    assert not not_below("fan_convert.cli.convert", imported(source, "fan_convert.cli.convert"))
