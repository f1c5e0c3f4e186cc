"""torchvision 2D classifiers as video backbones (--temporal tsm|tsn), exactly like timm's."""

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args
from fan_convert.zoo.wrappers import TSM, TSN

runner = CliRunner()


def run(*argv):
    return runner.invoke(app, cli_args([str(a) for a in argv]))


def test_resnet50_imagenet_state_dict_converts_in_one_command(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(num_classes=10).eval()
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")  # the bare 2D keys, as torchvision ships them
    result = run(tmp_path / "resnet50.pth", "--arch", "torchvision:resnet50", "--temporal", "tsm", "--num-classes", 10,
                 "--frames", 4, 8, 16, "--input-size", 32)
    assert result.exit_code == 0, result.output
    assert "renamed" in result.output  # bare backbone keys were mapped onto the TSM wrapper's
    fan = fan_convert.load(tmp_path / "resnet50.fan.safetensors")  # a safe spec: no --trust-factory
    assert isinstance(fan, TSM) and isinstance(fan.backbone, torchvision.models.ResNet)
    reference = TSM(resnet).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        assert (fan(x) - reference(x)).abs().max() <= 1e-5
        assert fan(torch.randn(1, 3, 6, 32, 32)).shape == (1, 10)


def test_mobilenet_v2_builds_as_tsn_by_default_and_round_trips(tmp_path):
    model = fan_convert.build("torchvision:mobilenet_v2", num_classes=7).eval()
    assert isinstance(model, TSN) and not isinstance(model, TSM)
    tsm = fan_convert.build("torchvision:mobilenet_v2", temporal="tsm", num_classes=7)
    assert len(tsm.shifted) > 0 and tsm.fan_arch["kwargs"]["temporal"] == "tsm"
    fan = fan_convert.adapt(tsm.eval(), frames=(4, 8))
    fan_convert.save(fan, tmp_path / "mnv2.safetensors")
    again = fan_convert.load(tmp_path / "mnv2.safetensors")
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), fan(x))


def test_temporal_is_refused_for_video_models_and_unknown_names_get_suggestions():
    with pytest.raises(ValueError, match="applies to 2D backbones"):
        fan_convert.build("torchvision:r3d_18", temporal="tsm")
    with pytest.raises(ValueError, match="did you mean torchvision:resnet50"):
        fan_convert.build("torchvision:resnet05")
