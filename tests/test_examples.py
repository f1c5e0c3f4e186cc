"""Every example runs end to end and prints (or writes) what it says it does."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import fan_convert

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def _line(out: str, pattern: str) -> re.Match:
    match = re.search(pattern, out, re.M)
    assert match, f"no line matching {pattern!r} in:\n{out[-3000:]}"
    return match


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _check_convert_and_inspect(out, tmp):
    assert float(_line(out, r"^max \|difference\| at 8 frames: (\S+)$")[1]) == 0.0  # conversion changes nothing
    assert _line(out, r"^T= 6 -> sub-network (\d+),")[1] == "8"  # a tie between 4 and 8 goes to the higher key
    plain, original = _line(out, r"^specialised model is a VideoResNet with ([\d,]+) parameters \(original: ([\d,]+),").groups()
    assert _number(plain) == _number(original)  # folding restores the plain architecture's size


def _check_convert_x3d_checkpoint(out, tmp):
    _line(out, r"^checkpoint: unwrapped 'model_state'; stripped prefix 'module\.'$")
    _line(out, r"^fixed-T site: blocks\.5\.pool\.pool \(AvgPool3d -> AdaptiveTimePool3d\)$")  # X3D's head pool
    assert float(_line(out, r"^max \|difference\| after reload at 4 frames: (\S+)$")[1]) == 0.0
    _line(out, r"^runs at 16 frames: \(1, 400\)$")
    [fan_file] = tmp.glob("fan-x3d-*/x3d_xs.fan.safetensors")
    manifest = fan_convert.read_manifest(fan_file)
    assert manifest["frames"] == [4, 8, 16] and manifest["trained_at"] == 4 and manifest["arch"]["spec"] == "pytorchvideo:x3d_xs"


def _check_edge_deployment(out, tmp):
    for t in (4, 16):
        _line(out, rf"^specialized for +{t} frames: VideoResNet, 33,171,402 parameters$")  # r3d_18 with 10 classes
        assert float(_line(out, rf"^exported r3d_{t}\.pt2: .* max \|diff\| vs FAN (\S+)$")[1]) <= 1e-4
    chosen = _line(out, r"^budget [\d.]+ ms -> run at (\d+) frames$")[1]
    _line(out, rf"^T= *{chosen}: .* fits$")  # the chosen frame count is one that fits the budget
    [work] = tmp.glob("fan-edge-*")
    assert {p.name for p in work.iterdir()} >= {
        "r3d.fan.safetensors", "r3d_plain4.safetensors", "r3d_plain16.safetensors", "r3d_4.pt2", "r3d_16.pt2"}


def _check_torchrun_ddp(out, tmp):
    steps = {rank: int(n) for rank, n in re.findall(r"^rank (\d)/2: (\d+) steps, loss [\d.]+$", out, re.M)}
    assert set(steps) == {"0", "1"} and steps["0"] == steps["1"] > 0, out  # both ranks ran the same sharded epoch
    written = pathlib.Path(_line(out, r"^rank 0 wrote (\S+)$")[1])
    assert written.parent.parent == tmp
    assert fan_convert.read_manifest(written)["frames"] == [4, 8, 16]


def _check_tsm_finetune_videos(out, tmp):
    for t, sub in ((2, "4 \\(nearest\\)"), (6, "8 \\(nearest\\)"), (16, "16")):  # the deviation table: one row per T
        _line(out, rf"^│ +{t} │ +{sub} │ +[\d.]+ │ +[\d.]+ │$")
    saved = pathlib.Path(_line(out, r"^saved: (\S+)$")[1])
    assert fan_convert.read_manifest(saved)["frames"] == [4, 8, 16]
    plot = re.search(r"^plot: (\S+)$", out, re.M)
    if plot:  # matplotlib installed
        assert pathlib.Path(plot[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        _line(out, r"^no plot: ")


def _check_onnx_every_frame_count(out, tmp):
    assert float(_line(out, r"^exported tsm\.onnx: .* max \|diff\| (\S+)$")[1]) <= 1e-4
    _line(out, r"^input clip: .*; trained keys \[4, 8, 16\], frames \[2, 64\]$")  # the metadata fan_convert.export wrote
    for t in (4, 6, 8, 12, 16, 20):  # one file, every clip length
        _line(out, rf"^{t:2d} frames -> logits \(1, 10\), class \d+$")
    _line(out, r"^4 channels: refused by onnxruntime")
    _line(out, r"^0 frames: refused by onnxruntime .*running Gather node")  # the check in the graph
    _line(out, r"^imported at inference: numpy, onnxruntime; torch or fan_convert: none$")


CHECKS = {
    "convert_and_inspect.py": _check_convert_and_inspect,
    "convert_x3d_checkpoint.py": _check_convert_x3d_checkpoint,
    "edge_deployment.py": _check_edge_deployment,
    "onnx_every_frame_count.py": _check_onnx_every_frame_count,
    "torchrun_ddp.py": _check_torchrun_ddp,
    "tsm_finetune_videos.py": _check_tsm_finetune_videos,
}


def test_every_example_has_an_output_check():
    assert {p.name for p in EXAMPLES} == set(CHECKS)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    # the examples write under tempfile.mkdtemp(): TMPDIR puts that in tmp_path, where the checks look
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-6000:]  # room for a rank's own message above torchrun's summary
    assert script.name in CHECKS, f"{script.name} has no output check"
    CHECKS[script.name](result.stdout, tmp_path)
