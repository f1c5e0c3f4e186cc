"""CLI journey on real (generated) videos: convert -> train -> resume -> eval -> calibrate."""

import json

import pytest
import torch
from conftest import two_class_workspace
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args

runner = CliRunner()
ARCH = ["--arch", "fan_convert:tiny_resnet", "--temporal", "tsm", "--num-classes", "2"]
SIZE = ["--crop", "32", "--resize", "32"]


def run(*argv):
    return runner.invoke(app, cli_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return two_class_workspace(tmp_path_factory.mktemp("cli"), videos_per_class=3)


def test_train_resume_eval_calibrate(workspace):
    run_dir = workspace / "run"
    common = ["--data", workspace / "videos", *SIZE, "--batch-size", 2, "--out-dir", run_dir]
    result = run("train", workspace / "fan.safetensors", *common, "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert "trained 1 epoch (" in result.output and (run_dir / "fan.safetensors").exists()
    result = run("train", workspace / "fan.safetensors", *common, "--epochs", 2, "--resume")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [1, 2]

    trained = run_dir / "fan.safetensors"
    result = run("eval", trained, "--data", workspace / "videos", "--frames", 2, 3, 4, *SIZE, "--json", workspace / "r.json",
                 "--workers", 1, "--device", "auto")
    assert result.exit_code == 0, result.output
    assert "sub-network" in result.output and "4 (nearest)" in result.output  # T=3: tie between 2 and 4 -> 4
    table = json.loads((workspace / "r.json").read_text())["fan.safetensors"]
    assert set(table) == {"2", "3", "4"} and table["2"]["clips"] == 6

    result = run("eval", workspace / "plain.pth", "--data", workspace / "videos", "--frames", 2, 4, *SIZE, *ARCH)
    assert result.exit_code == 0, result.output  # a plain model can be diagnosed before converting

    result = run("calibrate", trained, "--data", workspace / "videos", *SIZE, "--batches", 2, "-o", workspace / "cal.safetensors",
                 "--workers", 1, "--device", "auto")
    assert result.exit_code == 0, result.output
    assert fan_convert.load(workspace / "cal.safetensors").fan_plan.frames == (2, 4)


def test_bad_data_gives_one_line_errors(workspace, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("train", workspace / "fan.safetensors", "--data", tmp_path / "empty", "--out-dir", tmp_path / "r")
    assert result.exit_code == 2 and "no videos found" in result.output
    (tmp_path / "list.txt").write_text("a/0.mp4 a\nb/0.mp4 zebra\n")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    result = run("eval", workspace / "fan.safetensors", "--data", workspace / "videos", "--list", tmp_path / "list.txt",
                 "--classes", tmp_path / "classes.txt")
    assert result.exit_code == 2 and "label 'zebra' is not in the class list" in result.output
    result = run("train", workspace / "fan.safetensors", "--data", workspace / "videos", "--out-dir", tmp_path / "r2", "--resume")
    assert result.exit_code == 2 and "nothing to resume" in result.output


def test_unreadable_videos_are_skipped_and_counted(workspace, tmp_path):
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(workspace / "videos", videos)
    (videos / "a" / "broken.mp4").write_bytes(b"garbage")
    result = run("train", workspace / "fan.safetensors", "--data", videos, *SIZE, "--batch-size", 7, "--epochs", 1,
                 "--out-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"  cannot decode '{videos / 'a' / 'broken.mp4'}': Invalid data found when processing input" in result.output
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text())["skipped"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(workspace, tmp_path):
    for command in (["train", "--out-dir", tmp_path / "r"], ["eval"], ["calibrate", "-o", tmp_path / "c.safetensors"]):
        result = run(command[0], workspace / "fan.safetensors", "--data", workspace / "videos", *command[1:], "--device", "cuda")
        assert result.exit_code == 2 and "no CUDA GPU is visible" in result.output, result.output
        assert not (tmp_path / "c.safetensors").exists()
