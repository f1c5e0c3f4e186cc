"""The public surface: one import for the whole journey, old names still working, a light import."""

import importlib
import importlib.metadata
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import fan_convert

# public name -> the module it is imported from (the defining module is that one or one of its submodules);
# written down here, not read from fan_convert._JOURNEY, so that a wrong mapping there is caught
JOURNEY = {
    "build": "fan_convert.zoo", "read_checkpoint": "fan_convert.io", "from_checkpoint": "fan_convert.pipeline",
    "adapt": "fan_convert.surgery", "plan": "fan_convert.surgery", "apply_plan": "fan_convert.surgery",
    "get_plan": "fan_convert.surgery", "register_norm": "fan_convert.surgery", "register_rule": "fan_convert.surgery",
    "Rule": "fan_convert.surgery", "ConversionPlan": "fan_convert.surgery", "UnsupportedNormWarning": "fan_convert.surgery",
    "specialize": "fan_convert.surgery",
    "frames": "fan_convert.context", "active_frames": "fan_convert.context", "nearest_key": "fan_convert.context",
    "NoActiveFrames": "fan_convert.context",
    "Trainer": "fan_convert.train.trainer", "TrainConfig": "fan_convert.train.trainer",
    "evaluate": "fan_convert.train.evaluate", "calibrate": "fan_convert.train.evaluate",
    "save": "fan_convert.io", "load": "fan_convert.io", "save_specialized": "fan_convert.io", "read_manifest": "fan_convert.io",
    "NotFoldableError": "fan_convert.nn",
    "export_specialized": "fan_convert.deploy", "export_verified": "fan_convert.deploy", "choose_frames": "fan_convert.deploy",
}
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _readme_names():
    """The names README.md's Python examples and its list of exports use from the package."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README.md has no Python example"
    used = set()
    for block in blocks:
        used |= set(re.findall(r"\bfan_convert\.(\w+)", block))
        for names in re.findall(r"from fan_convert import \(?([\w, \n]+)\)?", block):
            used |= {n.strip() for n in names.split(",") if n.strip()}
    exports = re.search(r"The package exports the whole journey:(.*?)\. Layer classes", README, re.S)
    assert exports, "README.md no longer lists the package's exports"
    listed = {n for group in re.findall(r"`([\w/]+)`", exports.group(1)) for n in group.split("/")}
    assert {"build", "adapt", "Trainer", "choose_frames"} <= listed  # the list was read, not an empty match
    return used, listed


def test_the_journey_is_importable_from_the_package():
    missing = set(JOURNEY) - set(fan_convert.__all__)
    assert not missing, f"documented public names missing from fan_convert.__all__: {sorted(missing)}"
    namespace = {}
    exec("from fan_convert import *", namespace)  # every listed name resolves
    assert set(fan_convert.__all__) <= set(namespace)
    from fan_convert.deploy import export_specialized
    from fan_convert.train.trainer import Trainer

    assert fan_convert.Trainer is Trainer and fan_convert.export_specialized is export_specialized
    assert callable(fan_convert.zoo.build) and fan_convert.__version__


# names exported since JOURNEY was written are checked against the package's own table
NEWER = sorted(set(fan_convert.__all__) - set(JOURNEY) - {"zoo", "__version__"})


@pytest.mark.parametrize("name", sorted(JOURNEY) + NEWER)
def test_every_public_name_is_the_object_its_module_defines(name):
    value = getattr(fan_convert, name)
    home = JOURNEY.get(name) or fan_convert._JOURNEY[name]
    assert value is getattr(importlib.import_module(home), name), f"fan_convert.{name} is not {home}.{name}"
    assert value.__name__ == name, f"fan_convert.{name} is {value.__module__}.{value.__name__}"
    assert value.__module__ == home or value.__module__.startswith(home + "."), (name, value.__module__)
    assert getattr(sys.modules[value.__module__], name) is value  # defined there, not an alias of something else


def test_the_package_and_version_entries():
    assert fan_convert.zoo is importlib.import_module("fan_convert.zoo")
    assert fan_convert.__version__ == importlib.metadata.version("fan-convert")


def test_the_readme_uses_only_exported_names():
    used, listed = _readme_names()
    subpackages = {p.stem for p in Path(fan_convert.__file__).parent.iterdir() if p.is_dir() or p.suffix == ".py"}
    assert not (used - subpackages) - set(fan_convert.__all__), "README's Python examples use unexported names"
    assert not listed - set(fan_convert.__all__), f"README lists unexported names: {sorted(listed - set(fan_convert.__all__))}"
    assert not (used | listed) - set(dir(fan_convert)), "dir(fan_convert) does not list names the README uses"


def test_dir_lists_only_names_that_resolve():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in dir(fan_convert):
            getattr(fan_convert, name)  # an AttributeError here: dir() advertises a name that does not exist
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], "dir() advertises a moved name"
    assert not {"NormBank", "WeightAlteration", "ResidualAlteration", "fold_alteration", "Site"} & set(dir(fan_convert))


@pytest.mark.parametrize("name, home", [
    ("NormBank", "fan_convert.nn"), ("WeightAlteration", "fan_convert.nn"), ("ResidualAlteration", "fan_convert.nn"),
    ("fold_alteration", "fan_convert.nn"), ("Site", "fan_convert.surgery"),
])
def test_layer_internals_moved_to_their_modules_but_old_imports_still_work(name, home):
    assert name not in fan_convert.__all__
    with pytest.warns(DeprecationWarning, match=f"import it from {home}"):
        value = getattr(fan_convert, name)
    assert value is getattr(sys.modules[home], name)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'adapt_model'"):
        fan_convert.adapt_model  # noqa: B018


def test_import_is_light():
    heavy = ("torch", "timm", "torchvision", "pytorchvideo", "av", "rich", "typer", "transformers")
    code = f"import sys, fan_convert; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
