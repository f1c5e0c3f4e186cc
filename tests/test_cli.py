import json
import subprocess
import sys

from typer.testing import CliRunner

from fan_convert.cli import app

runner = CliRunner()


def test_inspect_prints_the_plan_with_totals():
    # timm backbones come wrapped (TSN): paths read 'backbone.layer1.0.conv1', too long for 80 columns
    result = runner.invoke(app, ["inspect", "timm:resnet18", "--targets", "paper"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "20 norms specialised, 8 weight alterations, 0 fixed-T sites rewritten" in result.output
    assert "backbone.layer1.0.conv1" in result.output


def test_inspect_json_is_machine_readable():
    result = runner.invoke(app, ["inspect", "torchvision:r3d_18", "--frames", "8", "--frames", "16", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["frames"] == [8, 16] and data["analysis"] == "fx"
    assert any(site["kind"] == "alteration" for site in data["sites"])


def test_unknown_architecture_is_a_one_line_error_with_suggestions():
    result = runner.invoke(app, ["inspect", "torchvision:r3d_1"])
    assert result.exit_code == 2
    assert "unknown torchvision architecture 'r3d_1'; did you mean torchvision:r3d_18" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_frames_and_patterns_fail_cleanly():
    result = runner.invoke(app, ["inspect", "timm:resnet18", "--frames", "8", "--frames", "8"])
    assert result.exit_code == 2 and "more than once" in result.output
    result = runner.invoke(app, ["inspect", "timm:resnet18", "--targets", "nope"])
    assert result.exit_code == 2 and "matched no module" in result.output


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "fan_convert", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("fan-convert ")
