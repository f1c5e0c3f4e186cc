import copy
import json
import pickle
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import randomize_norms
from torch import nn

import fan_convert
from fan_convert import NormBank, WeightAlteration
from fan_convert.surgery import rules
from fan_convert.surgery.conversion import ConversionPlan
from fan_convert.testing import as_if_fine_tuned, assert_same_at_every_key

KEYS = (4, 8, 16)


class TinyVideoNet(nn.Module):
    """A residual 3D network small enough to test every path quickly."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU())
        self.conv1 = nn.Conv3d(8, 8, 1)
        self.bn1 = nn.BatchNorm3d(8)
        self.conv2 = nn.Conv3d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm3d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.head(x.mean(dim=(2, 3, 4)))


def test_adapted_model_equals_original_at_every_key():
    model = randomize_norms(TinyVideoNet()).eval()
    fan = fan_convert.adapt(model, frames=KEYS).eval()
    assert_same_at_every_key(fan, model, torch.randn(2, 3, 8, 6, 6), KEYS)


def test_adapt_copies_by_default_and_modifies_in_place_on_request():
    model = TinyVideoNet()
    fan = fan_convert.adapt(model, frames=KEYS)
    assert isinstance(model.bn1, nn.BatchNorm3d) and isinstance(fan.bn1, NormBank)
    same = fan_convert.adapt(model, frames=KEYS, inplace=True)
    assert same is model and isinstance(model.bn1, NormBank)
    assert type(same) is TinyVideoNet  # never a new class, never a patched forward


def test_the_input_clip_selects_the_nearest_key():
    fan = as_if_fine_tuned(fan_convert.adapt(TinyVideoNet(), frames=KEYS), std=0.1).eval()
    for t, key in ((4, 4), (6, 8), (12, 16), (2, 4), (20, 16)):
        x = torch.randn(1, 3, t, 6, 6)
        with fan_convert.frames(key):
            expected = fan(x)
        assert torch.equal(fan(x), expected)
    x = torch.randn(1, 3, 8, 6, 6)
    with fan_convert.frames(4):
        assert not torch.equal(fan(x), fan_convert.specialize(fan, 8)(x))  # explicit selection wins
    assert fan_convert.active_frames() is None  # nothing leaks out of a forward


def test_failed_forward_does_not_leak_the_inferred_frame_count():
    fan = fan_convert.adapt(TinyVideoNet(), frames=KEYS)
    with pytest.raises(RuntimeError):
        fan(torch.randn(1, 4, 8, 6, 6))  # wrong channel count
    assert fan_convert.active_frames() is None


def test_two_dimensional_models_need_an_explicit_frame_count():
    fan = fan_convert.adapt(timm.create_model("resnet18", num_classes=3), frames=KEYS)
    with pytest.raises(fan_convert.NoActiveFrames, match="conv1|bn1"):
        fan(torch.randn(2, 3, 32, 32))
    with fan_convert.frames(8):
        assert fan(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_resnet50_paper_preset_overhead_matches_the_official_code():
    model = timm.create_model("resnet50")
    paper = fan_convert.plan(model, frames=KEYS, targets="paper")
    assert paper.params_before == 25_557_032
    assert paper.params_added == 145_600  # the official FFN code's count
    assert paper.overhead <= 0.006
    assert [s.path for s in paper.select("alteration")][:4] == ["layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1"]
    assert len(paper.select("alteration")) == 16 and len(paper.select("norm")) == 53
    default = fan_convert.plan(model, frames=KEYS)
    assert default.params_added == 173_833  # every non-depthwise convolution
    fan = fan_convert.adapt(model, frames=KEYS, targets="paper")
    assert sum(p.numel() for p in fan.parameters()) == paper.params_after


def test_default_targets_skip_depthwise_convolutions_and_heads():
    conversion = fan_convert.plan(TinyVideoNet(), frames=KEYS)
    assert [s.path for s in conversion.select("alteration")] == ["stem.0", "conv1"]
    vit = fan_convert.plan(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8), frames=KEYS)
    altered = {s.path.split(".", 2)[-1] for s in vit.select("alteration") if s.path.startswith("blocks.")}
    assert altered == {"attn.qkv", "mlp.fc1"}


def test_paper_preset_finds_the_residual_entry_of_transformer_blocks():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    conversion = fan_convert.plan(vit, frames=KEYS, targets="paper")
    expected = ["blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.1.attn.qkv", "blocks.1.mlp.fc1"]
    assert [s.path for s in conversion.select("alteration")] == expected


def test_paper_preset_without_residual_blocks_is_an_error():
    with pytest.raises(ValueError, match="found no residual block"):
        fan_convert.plan(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), frames=KEYS, targets="paper")


def test_targets_by_pattern_and_type():
    model = TinyVideoNet()
    assert [s.path for s in fan_convert.plan(model, KEYS, targets=["conv1"]).select("alteration")] == ["conv1"]
    assert [s.path for s in fan_convert.plan(model, KEYS, targets=[r"conv\d"]).select("alteration")] == ["conv1", "conv2"]
    assert [s.path for s in fan_convert.plan(model, KEYS, targets=[nn.Linear]).select("alteration")] == ["head"]
    assert fan_convert.plan(model, KEYS, targets=None).select("alteration") == []
    skipped = fan_convert.plan(model, KEYS, exclude=["stem.0", "bn1"])
    assert [s.path for s in skipped.select("alteration")] == ["conv1"]
    assert {s.path for s in skipped.select(status="skipped")} == {"stem.0", "bn1"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(targets=["layer9.conv"]), "targets pattern 'layer9.conv' matched no module"),
        (dict(targets=["bn1"]), "cannot carry a weight alteration"),
        (dict(exclude=["nothing_here"]), "exclude pattern 'nothing_here' matched no module"),
        (dict(targets=["conv[("]), "invalid pattern"),
        (dict(targets=[3]), "module-name patterns or module types"),
        (dict(frames=()), "frames is empty"),
        (dict(frames=(8, 8, 4)), r"lists \[8\] more than once"),
        (dict(frames=(4, 0)), "positive integer"),
        (dict(kernel_size=2), "odd positive integer"),
        (dict(targets=["head"], kernel_size=3), "convolutions only"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    kwargs = {"frames": KEYS, **kwargs}
    with pytest.raises(ValueError, match=message):
        fan_convert.adapt(TinyVideoNet(), **kwargs)


def test_adapting_twice_is_refused():
    fan = fan_convert.adapt(TinyVideoNet(), frames=KEYS)
    with pytest.raises(ValueError, match="already adapted"):
        fan_convert.adapt(fan, frames=KEYS)


class CustomNorm(nn.Module):
    """A norm written from scratch: fx sees it call F.layer_norm on its own parameters."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)


class OpaqueNorm(nn.Module):
    """Named like a norm, but neither a known type nor visible to fx."""

    def __init__(self, c):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.scale / x.std()


class TiedBatchNorm(nn.BatchNorm1d):
    pass


def test_custom_norm_called_functionally_is_banked():
    model = nn.Sequential(nn.Linear(4, 4), CustomNorm(4))
    conversion = fan_convert.plan(model, KEYS)
    site = next(s for s in conversion.sites if s.path == "1")
    assert site.status == "converted" and "layer_norm" in site.reason


def test_unknown_or_unsafe_norms_warn_with_the_class_name():
    tied = TiedBatchNorm(4)
    other = nn.BatchNorm1d(4)
    other.weight = tied.weight  # shared parameter: copying would untie it
    model = nn.Sequential(nn.Linear(4, 4), OpaqueNorm(4), tied, other)
    with pytest.warns(fan_convert.UnsupportedNormWarning) as record:  # (match= would re-emit the others)
        conversion = fan_convert.plan(model, KEYS)
    messages = " ".join(str(w.message) for w in record)
    assert "OpaqueNorm" in messages and "TiedBatchNorm" in messages and "shares a tensor" in messages
    assert {s.path for s in conversion.select("norm", "unsupported")} == {"1", "2", "3"}
    fan_convert.register_norm(OpaqueNorm)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert "1" in {s.path for s in fan_convert.plan(model, KEYS).select("norm")}
    finally:
        rules.unregister_rule(next(r.name for r in rules.rules("norm") if OpaqueNorm in r.match))


def test_safe_unknown_norm_subclass_is_banked():
    class MyBatchNorm(nn.BatchNorm2d):
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conversion = fan_convert.plan(nn.Sequential(nn.Conv2d(3, 4, 1), MyBatchNorm(4)), KEYS)
    (site,) = conversion.select("norm")
    assert site.original == "MyBatchNorm" and "unregistered subclass" in site.reason


def test_stateless_norms_are_skipped():
    conversion = fan_convert.plan(nn.Sequential(nn.Conv2d(3, 4, 1), nn.InstanceNorm2d(4), nn.LocalResponseNorm(2)), KEYS)
    assert [s.status for s in conversion.sites if s.kind == "norm"] == ["skipped", "skipped"]


def test_plan_round_trips_through_json():
    conversion = fan_convert.adapt(TinyVideoNet(), frames=KEYS).fan_plan
    again = ConversionPlan.from_dict(json.loads(conversion.to_json()))
    assert again == conversion
    assert "norms specialised" in str(conversion)


def test_specialize_gives_the_original_architecture_with_fan_outputs():
    model = randomize_norms(TinyVideoNet()).eval()
    fan = as_if_fine_tuned(fan_convert.adapt(model, frames=KEYS), std=0.1).eval()
    x = torch.randn(2, 3, 8, 6, 6)
    for t, key in ((4, 4), (8, 8), (16, 16), (12, 16)):
        plain = fan_convert.specialize(fan, t)
        assert plain.state_dict().keys() == model.state_dict().keys()
        assert not any(isinstance(m, (NormBank, WeightAlteration)) for m in plain.modules())
        with fan_convert.frames(key):
            torch.testing.assert_close(plain(x), fan(x), atol=1e-5, rtol=1e-5)
        restored = TinyVideoNet().eval()
        restored.load_state_dict(plain.state_dict())
        torch.testing.assert_close(restored(x), plain(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="not an adapted model"):
        fan_convert.specialize(model, 8)


def test_specialize_with_unfoldable_alterations():
    fan = fan_convert.adapt(TinyVideoNet(), frames=KEYS, kernel_size=3)
    with pytest.raises(fan_convert.NotFoldableError, match="unfoldable='keep'"):
        fan_convert.specialize(fan, 8)
    kept = fan_convert.specialize(fan, 8, unfoldable="keep")
    assert kept(torch.randn(1, 3, 8, 6, 6)).shape == (1, 5)


def test_training_one_key_never_touches_another():
    fan = fan_convert.adapt(randomize_norms(TinyVideoNet()), frames=KEYS).train()
    before = copy.deepcopy(fan.state_dict())
    trainable = [p for n, p in fan.named_parameters() if ".norms." in n or ".scales." in n]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        fan(torch.randn(2, 3, 4, 6, 6)).pow(2).mean().backward()  # 4 frames: key 4
        optimizer.step()
    after = fan.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".norms.4." in k or ".scales.4" in k for k in changed)


def test_adapted_model_saves_pickles_and_compiles():
    fan = fan_convert.adapt(TinyVideoNet(), frames=KEYS).eval()
    x = torch.randn(1, 3, 8, 6, 6)
    expected = fan(x)
    clone = pickle.loads(pickle.dumps(fan))
    assert torch.equal(clone(x), expected)  # hooks survive: T still inferred
    fresh = fan_convert.adapt(TinyVideoNet(), frames=KEYS)
    fresh.load_state_dict(fan.state_dict())
    assert torch.equal(fresh.eval()(x), expected)
    compiled = torch.compile(fan, backend="eager")
    assert torch.equal(compiled(x), expected)


def test_norm_functions_called_by_the_model_itself_are_reported():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.gamma = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return F.layer_norm(self.proj(x), (4,), self.gamma)

    with pytest.warns(UserWarning, match="calls layer_norm directly"):
        conversion = fan_convert.plan(Functional(), KEYS)
    assert [s.path for s in conversion.select("norm", "unsupported")] == [""]


def test_an_edited_plan_is_applied_exactly():
    model = TinyVideoNet()
    conversion = fan_convert.plan(model, KEYS)
    conversion.sites = [s for s in conversion.sites if s.path != "conv1"]
    fan = fan_convert.apply_plan(model, conversion)
    assert isinstance(fan.conv1, nn.Conv3d) and isinstance(fan.stem[0], WeightAlteration)
    assert fan.fan_plan is conversion


def test_a_plan_for_another_architecture_is_refused():
    conversion = fan_convert.plan(TinyVideoNet(), KEYS)
    with pytest.raises(ValueError, match="does not have"):
        fan_convert.apply_plan(nn.Sequential(nn.Conv3d(3, 8, 1)), conversion)
    other = TinyVideoNet()
    other.bn1 = nn.GroupNorm(2, 8)
    with pytest.raises(ValueError, match="expects BatchNorm3d at 'bn1' but the model has GroupNorm"):
        fan_convert.apply_plan(other, conversion)
