"""The rule table: a user adds a fixed-T rule the way docs/conversion-rules.md shows, and plan,
apply, running at another T, specialize and save/load all follow it; duplicates are refused;
a file converted with a user rule names the rule when it is missing on load. Also: no package
attribute shadows a submodule (``import fan_convert.surgery.planner`` gives a module)."""

import importlib
import pkgutil
import types

import pytest
import torch
from torch import nn

import fan_convert
from fan_convert.io import FanFileError
from fan_convert.nn.position_encodings import interpolate_time
from fan_convert.surgery import rules


class TimeTable(nn.Module):
    """A learned per-frame offset, sized to the training clip: fails at any other T."""

    def __init__(self, channels: int, num_frames: int):
        super().__init__()
        self.num_frames = num_frames  # the built-in rules would report this module unsupported
        self.table = nn.Parameter(torch.randn(num_frames, channels))

    def forward(self, x):  # x: (B, C, T, H, W)
        return x + self.table.t()[None, :, :, None, None]


class InterpolatedTimeTable(nn.Module):
    """The same table, interpolated linearly along time to each input's T."""

    def __init__(self, original: TimeTable, trained_frames: int | None = None):
        super().__init__()
        self.table = original.table  # the same parameter under the same name: state_dict keys unchanged
        self.trained_frames = trained_frames

    def forward(self, x):
        return x + interpolate_time(self.table, x.shape[2], dim=0).t()[None, :, :, None, None]

    def specialize(self, frames: int) -> TimeTable:
        plain = TimeTable(self.table.shape[1], frames)
        with torch.no_grad():
            plain.table.copy_(interpolate_time(self.table, frames, dim=0))
        return plain


def toy_model(trained_at=8):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), TimeTable(4, trained_at), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 5),
    ).eval()


@pytest.fixture
def time_table_rule():
    rule = fan_convert.register_rule(fan_convert.Rule(
        name="test.time_table", kind="fixed_t", match=TimeTable, layer=InterpolatedTimeTable,
        note="per-frame table interpolated to each clip"))
    yield rule
    rules.unregister_rule("test.time_table")


def test_without_the_rule_the_table_is_reported_unsupported():
    with pytest.warns(UserWarning, match="TimeTable"):
        plan = fan_convert.plan(toy_model(), (4, 8), trained_at=8)
    site = next(s for s in plan.sites if s.path == "2")
    assert site.status == "unsupported" and "num_frames=8" in site.reason


def test_a_user_fixed_t_rule_drives_plan_apply_specialize_and_save_load(time_table_rule, tmp_path):
    model = toy_model()
    x8 = torch.randn(2, 3, 8, 6, 6)
    plan = fan_convert.plan(model, (4, 8), trained_at=8)
    site = next(s for s in plan.sites if s.path == "2")
    assert (site.kind, site.status, site.becomes, site.rule) == ("fixed_t", "converted", "InterpolatedTimeTable", "test.time_table")

    fan = fan_convert.apply_plan(model, plan)
    assert isinstance(fan[2], InterpolatedTimeTable) and isinstance(model[2], TimeTable)
    with torch.no_grad():
        assert torch.allclose(fan(x8), model(x8), atol=1e-6)  # zero-initialised: unchanged at the trained T
        with pytest.raises(RuntimeError):
            model(x8[:, :, :4])  # the original cannot run 4 frames
        y4 = fan(x8[:, :, :4])
    plain4 = fan_convert.specialize(fan, 4)
    assert type(plain4[2]) is TimeTable and plain4[2].table.shape == (4, 4)
    with torch.no_grad():
        assert torch.allclose(plain4(x8[:, :, :4]), y4, atol=1e-6)

    path = fan_convert.save(fan, tmp_path / "fan.safetensors")
    assert fan_convert.read_manifest(path)["user_rules"] == ["test.time_table"]
    loaded = fan_convert.load(path, model=toy_model())
    assert isinstance(loaded[2], InterpolatedTimeTable)
    with torch.no_grad():
        assert torch.equal(loaded(x8[:, :, :4]), y4)

    spec = fan_convert.save_specialized(fan, 4, tmp_path / "plain4.safetensors")
    plain = fan_convert.load(spec, model=toy_model())
    assert type(plain[2]) is TimeTable
    with torch.no_grad():
        assert torch.allclose(plain(x8[:, :, :4]), y4, atol=1e-6)

    rules.unregister_rule("test.time_table")
    with pytest.raises(FanFileError, match="'test.time_table', which is not registered"):
        fan_convert.load(path, model=toy_model())
    with pytest.raises(FanFileError, match="'test.time_table', which is not registered"):
        fan_convert.load(spec, model=toy_model())
    fan_convert.register_rule(time_table_rule)  # the fixture unregisters it again


def test_rules_refuse_duplicates_and_bad_declarations(time_table_rule):
    with pytest.raises(ValueError, match="already registered"):
        fan_convert.register_rule(fan_convert.Rule(name="test.time_table", kind="fixed_t", match=nn.Identity))
    with pytest.raises(ValueError, match="duplicates rule 'test.time_table'"):
        fan_convert.register_rule(fan_convert.Rule(name="test.other", kind="fixed_t", match=TimeTable, layer=InterpolatedTimeTable))
    with pytest.raises(ValueError, match="duplicates rule 'norm.torch'"):
        fan_convert.register_rule(fan_convert.Rule(name="test.bn", kind="norm", match=nn.BatchNorm2d, layer=fan_convert.NormBank))
    with pytest.raises(ValueError, match="kind must be one of"):
        fan_convert.Rule(name="test.x", kind="pool", match=TimeTable)
    with pytest.raises(TypeError, match="match entries"):
        fan_convert.Rule(name="test.x", kind="fixed_t", match="TimeTable")
    with pytest.raises(TypeError, match="layer must be"):
        fan_convert.Rule(name="test.x", kind="fixed_t", match=TimeTable, layer=interpolate_time)
    # a predicate narrows a rule, so two rules may share a class
    narrow = fan_convert.register_rule(fan_convert.Rule(
        name="test.narrow", kind="fixed_t", match=TimeTable, when=lambda m: m.table.shape[1] == 99, layer=InterpolatedTimeTable))
    try:
        assert rules.match(toy_model()[2], "fixed_t").name == "test.time_table"
        assert narrow.applies_to(TimeTable(99, 8))
    finally:
        rules.unregister_rule("test.narrow")


def test_string_matches_resolve_only_for_loaded_libraries():
    rule = fan_convert.Rule(name="test.lazy", kind="fixed_t", match=("no_such_library.layers:Thing", TimeTable))
    assert rule.types() == (TimeTable,)


def test_register_norm_stays_a_decorator_and_is_idempotent():
    @fan_convert.register_norm
    class MyNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight

    try:
        assert fan_convert.register_norm(MyNorm) is MyNorm
        assert rules.match(MyNorm(), "norm").layer is fan_convert.NormBank
    finally:
        rules.unregister_rule(next(r.name for r in rules.rules("norm") if MyNorm in r.match))


def test_one_definition_of_fan_layer_types():
    layers = rules.fan_layer_types()
    assert fan_convert.NormBank in layers and fan_convert.WeightAlteration in layers
    assert fan_convert.nn.AdaptiveTimePool3d in rules.fan_layer_types("fixed_t")
    assert fan_convert.NormBank not in rules.fan_layer_types("fixed_t")


def test_no_package_attribute_shadows_a_submodule():
    checked = 0
    for info in pkgutil.walk_packages(fan_convert.__path__, "fan_convert."):
        if info.name.endswith("__main__"):
            continue  # running it would start the CLI
        module = importlib.import_module(info.name)
        assert isinstance(module, types.ModuleType), info.name
        parent_name, _, last = info.name.rpartition(".")
        parent = importlib.import_module(parent_name)
        if hasattr(parent, last):
            assert getattr(parent, last) is module, f"{parent_name}.{last} is {getattr(parent, last)!r}, not the submodule"
        checked += 1
    assert checked > 30
    assert isinstance(importlib.import_module("fan_convert.surgery.planner"), types.ModuleType)
