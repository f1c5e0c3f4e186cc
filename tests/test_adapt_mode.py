"""adapt() keeps every module's train/eval mode, as copy.deepcopy does (PEFT users expect the same)."""

import torch
import torchvision
from torch import nn

import fan_convert
from fan_convert.zoo.tiny import tiny_resnet
from fan_convert.zoo.wrappers import TSM


def _modes(model: nn.Module) -> set[bool]:
    return {m.training for m in model.modules()}


def test_an_eval_model_adapts_to_an_eval_model_with_equal_outputs():
    torch.manual_seed(0)
    model = TSM(tiny_resnet(num_classes=4)).eval()
    fan = fan_convert.adapt(model, frames=(4, 8))
    assert _modes(fan) == {False}
    clip = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(fan(clip), model(clip))


def test_a_train_model_adapts_to_a_train_model():
    fan = fan_convert.adapt(torchvision.models.video.r3d_18(num_classes=5), frames=(4, 8))
    assert _modes(fan) == {True}


def test_mixed_modes_are_kept_per_module():
    model = TSM(tiny_resnet(num_classes=4)).train()
    model.backbone.stem.eval()  # e.g. a frozen stem whose batch norm keeps its statistics
    fan = fan_convert.adapt(model, frames=(4, 8))
    stem_modes = _modes(fan.backbone.stem)
    assert stem_modes == {False}, "the new norm bank in the frozen stem must stay in eval mode"
    assert _modes(fan.backbone.stages) == {True}
