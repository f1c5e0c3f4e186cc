"""The package's import structure: the layers contract in pyproject.toml (checked by
``lint-imports`` in CI) holds, only the command line reaches back to the package root, and no
module imports a private name from another package."""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

import fan_convert

PACKAGE = pathlib.Path(fan_convert.__file__).parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield (parts[:-1] if parts[-1] == "__init__" else parts), path, path.name == "__init__.py"


def _imports(parts: tuple[str, ...], path: pathlib.Path, is_package: bool):
    """(absolute module, imported names) of every ``from X import names`` in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_only_the_command_line_imports_the_package_root():
    offenders = []
    for parts, path, is_package in _modules():
        if len(parts) < 2 or parts[1] in ("cli", "__main__"):
            continue
        for module, names in _imports(parts, path, is_package):
            from_root = [n for n in names if not (PACKAGE / n).is_dir() and not (PACKAGE / f"{n}.py").is_file()]
            if module == "fan_convert" and (from_root or not names):  # a subpackage by name is fine
                offenders.append(f"{path.relative_to(PACKAGE)} imports from the root: {from_root or 'fan_convert'}")
    assert offenders == []


def test_no_module_imports_another_packages_private_name():
    offenders = []
    for parts, path, is_package in _modules():
        own = parts[:2]
        for module, names in _imports(parts, path, is_package):
            if not module.startswith("fan_convert.") or tuple(module.split(".")[:2]) == own:
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private:
                offenders.append(f"{path.relative_to(PACKAGE)}: {module} {private}")
    assert offenders == []


@pytest.mark.skipif(shutil.which("lint-imports") is None and not (pathlib.Path(sys.executable).parent / "lint-imports").exists(),
                    reason="import-linter is not installed (the 'test' extra has it)")
def test_the_layers_contract_is_kept():
    exe = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([exe, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "0 broken" in result.stdout
