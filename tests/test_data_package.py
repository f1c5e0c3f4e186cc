"""fan_convert.data: the data pipeline sits below training (it imports nothing from train, cli or
deploy), and the old fan_convert.train.* paths still work, with a DeprecationWarning."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_import_layers import imported

import fan_convert.data

DATA = Path(fan_convert.data.__file__).parent
ABOVE = ("fan_convert.train", "fan_convert.cli", "fan_convert.deploy")


def _imports(path: Path) -> set[str]:
    """Every fan_convert module ``path`` imports, at the top or inside functions, or names in a string."""
    module = "fan_convert.data" + ("" if path.stem == "__init__" else f".{path.stem}")
    return imported(path.read_text(), module, is_package=path.stem == "__init__")


@pytest.mark.parametrize("path", sorted(DATA.glob("*.py")), ids=lambda p: p.name)
def test_data_imports_nothing_from_the_layers_above(path):
    above = sorted(m for m in _imports(path) if m.startswith(ABOVE))
    assert not above, f"fan_convert/data/{path.name} imports {above}"


def test_importing_data_loads_no_training_code():
    code = f"import sys, fan_convert.data; print(sorted(m for m in sys.modules if m.startswith({ABOVE!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("old, name, new", [
    ("fan_convert.train.data", "MultiViewClips", "fan_convert.data"),
    ("fan_convert.train.data", "decode", "fan_convert.data"),
    ("fan_convert.train.data", "VIDEO_SUFFIXES", "fan_convert.data"),
    ("fan_convert.train.decoding", "read_sampled", "fan_convert.data"),
    ("fan_convert.train.decoding", "SEEK_MIN_SKIP", "fan_convert.data.decoding"),
    ("fan_convert.train.synthetic", "TemporalBenchmark", "fan_convert.data"),
    ("fan_convert.train.synthetic", "CLASSES", "fan_convert.data.synthetic"),
    ("fan_convert.train", "multi_view_indices", "fan_convert.data"),
    ("fan_convert.train", "segment_indices", "fan_convert.data"),
])
def test_old_data_paths_warn_and_forward(old, name, new):
    module = importlib.import_module(old)
    advice = rf"{re.escape(old)} moved: import from {re.escape(new)} \(from {re.escape(new)} import {name}\)"
    with pytest.warns(DeprecationWarning, match=advice) as caught:
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)
    assert caught[0].filename == __file__  # the warning points at the line that used the old path


def test_old_paths_keep_their_import_forms():
    namespace = {}
    with pytest.warns(DeprecationWarning, match="fan_convert.train.data moved"):
        exec("from fan_convert.train.data import *", namespace)
    assert {"MultiViewClips", "collate_views", "read_items", "decode", "DataError"} <= set(namespace)
    with pytest.warns(DeprecationWarning, match="fan_convert.train moved"):
        from fan_convert.train import multi_view_indices  # noqa: F401
    from fan_convert.train import demo, mutual_distillation_loss  # submodules and train's own names: no detour

    assert demo.__name__ == "fan_convert.train.demo" and callable(mutual_distillation_loss)


@pytest.mark.parametrize("old, name", [
    ("fan_convert.train.data", "no_such_name"), ("fan_convert.train.decoding", "_no_such_helper"),
    ("fan_convert.train", "read_items"),  # never exported by fan_convert.train
])
def test_unknown_names_on_the_old_paths_are_attribute_errors(old, name):
    with pytest.raises(AttributeError, match=f"module '{re.escape(old)}' has no attribute '{name}'"):
        getattr(importlib.import_module(old), name)
