"""The public surface: one import for the whole journey, old names still working, a light import."""

import subprocess
import sys

import pytest

import fan_convert

JOURNEY = (
    "build", "read_checkpoint", "adapt", "plan", "apply_plan", "specialize", "frames", "nearest_key",
    "Trainer", "TrainConfig", "evaluate", "calibrate", "save", "load", "save_specialized", "read_manifest",
    "export_specialized", "export_verified", "choose_frames",
)


def test_the_journey_is_importable_from_the_package():
    assert set(JOURNEY) <= set(fan_convert.__all__) <= set(dir(fan_convert))
    namespace = {}
    exec("from fan_convert import *", namespace)  # every listed name resolves
    assert set(fan_convert.__all__) <= set(namespace)
    from fan_convert.deploy import export_specialized
    from fan_convert.train.trainer import Trainer

    assert fan_convert.Trainer is Trainer and fan_convert.export_specialized is export_specialized
    assert callable(fan_convert.zoo.build) and fan_convert.__version__


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
