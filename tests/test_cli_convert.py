"""End-to-end CLI: convert -> load -> same outputs; specialize -> plain model; every bad input."""

import errno
import os

import pytest
import torch
import torchvision
from conftest import error_lines
from typer.testing import CliRunner

import fan_convert
from fan_convert.cli import app, cli_args

runner = CliRunner()
KEYS = (4, 8, 16)
ARCH = ["--arch", "torchvision:r3d_18", "--num-classes", "7"]


def run(*argv):
    return runner.invoke(app, cli_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A checkpoint saved the way training scripts save it: nested, with DDP prefixes."""
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(num_classes=7).eval()
    path = tmp_path_factory.mktemp("ckpt") / "r3d.pth.tar"
    torch.save({"epoch": 30, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model, path


def one_line_error(result, needle):
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


def test_convert_load_and_specialize_end_to_end(tmp_path, pretrained):
    model, ckpt = pretrained
    out = tmp_path / "r3d.fan.safetensors"
    result = run(ckpt, "--frames", 4, 8, 16, *ARCH, "-o", out)
    assert result.exit_code == 0, result.output
    assert "norms specialised: BatchNorm3d" in result.output and "GFLOPs at 8 frames" in result.output
    assert "unwrapped 'state_dict'" in result.output and "stripped prefix 'module.'" in result.output
    fan = fan_convert.load(out)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        for k in KEYS:
            with fan_convert.frames(k):
                assert (fan(x) - model(x)).abs().max() <= 1e-5
    manifest = fan_convert.read_manifest(out)
    assert manifest["trained_at"] == 16 and manifest["source"]["checkpoint"] == "r3d.pth.tar"

    plain_out = tmp_path / "plain8.safetensors"
    result = run("specialize", out, "--frames", 8, "-o", plain_out)
    assert result.exit_code == 0, result.output
    plain = fan_convert.load(plain_out)
    assert type(plain) is type(model)
    with torch.no_grad(), fan_convert.frames(8):
        torch.testing.assert_close(plain(x), fan(x), atol=1e-5, rtol=1e-5)


def test_explicit_convert_subcommand_and_trained_at_outside_frames(tmp_path, pretrained):
    _, ckpt = pretrained
    out = tmp_path / "m.safetensors"
    result = run("convert", ckpt, "--frames", 4, 8, *ARCH, "--trained-at", 16, "--targets", "paper", "-o", out)
    assert result.exit_code == 0, result.output
    assert fan_convert.read_manifest(out)["trained_at"] == 16  # allowed: the nearest key (8) answers for it
    assert fan_convert.load(out).fan_plan.targets == "paper"


def test_inspect_a_fan_file(tmp_path, pretrained):
    _, ckpt = pretrained
    out = tmp_path / "m.safetensors"
    run(ckpt, "--frames", 4, 8, *ARCH, "-o", out)
    result = run("inspect", out)
    assert result.exit_code == 0 and "20 norms specialised" in result.output


def test_pickled_module_needs_trust(tmp_path, pretrained):
    model, _ = pretrained
    whole = tmp_path / "whole.pt"
    torch.save(model, whole)
    one_line_error(run(whole, "--frames", 4, 8, *ARCH), "--trust-pickle")
    result = run(whole, "--frames", 4, 8, *ARCH, "--trust-pickle", "-o", tmp_path / "ok.safetensors")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "make_args, needle",
    [
        (lambda d, c: [d / "missing.pt", "--frames", 4, 8, *ARCH], "does not exist"),
        (lambda d, c: [_write(d / "bad.pt", b"garbage bytes"), "--frames", 4, *ARCH], "truncated or not a PyTorch checkpoint"),
        (lambda d, c: [_truncate(c, d / "half.pth.tar"), "--frames", 4, *ARCH], "truncated"),
        (lambda d, c: [_write(d / "notes.txt", b'{"a": 1}'), "--frames", 4, *ARCH], "not a PyTorch checkpoint"),
        (lambda d, c: [c, "--frames", 4, "--arch", "torchvision:r3d_1"], "did you mean torchvision:r3d_18"),
        (lambda d, c: [c, "--frames", 4, "--arch", "torchvision:r2plus1d_18", "--num-classes", 7], "does not fit the architecture"),
        (lambda d, c: [c, "--frames", 4, "--arch", "torchvision:r3d_18"], "shape-mismatched key(s): 'fc.weight' (7, 512)"),
        (lambda d, c: [c, "--frames", 4, 0, *ARCH], "positive integer"),
        (lambda d, c: [c, "--frames", 8, 8, *ARCH], "more than once"),
        (lambda d, c: [c, "--frames", 8], "--arch is required"),
        (lambda d, c: [c, "--frames", 8, *ARCH, "-o", d / "nodir" / "x.safetensors"], "does not exist; create it first"),
        (lambda d, c: [c, "--frames", 8, *ARCH, "--targets", "nothing"], "matched no module"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_no_output(tmp_path, pretrained, make_args, needle):
    _, ckpt = pretrained
    before = set(os.listdir(tmp_path))
    one_line_error(run(*make_args(tmp_path, ckpt)), needle)
    assert not [f for f in set(os.listdir(tmp_path)) - before if f.endswith(".safetensors") or f.endswith(".tmp")]


def test_missing_frames_is_refused(pretrained):
    _, ckpt = pretrained
    result = run(ckpt, *ARCH)
    assert result.exit_code == 2 and "--frames" in result.output


def test_existing_output_is_not_clobbered_without_force(tmp_path, pretrained):
    _, ckpt = pretrained
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"precious")
    one_line_error(run(ckpt, "--frames", 4, 8, *ARCH, "-o", out), "already exists")
    assert out.read_bytes() == b"precious"
    assert run(ckpt, "--frames", 4, 8, *ARCH, "-o", out, "--force").exit_code == 0
    assert fan_convert.read_manifest(out)["frames"] == [4, 8]


def test_unwritable_directory_and_full_disk_leave_nothing(tmp_path, pretrained, monkeypatch):
    _, ckpt = pretrained
    real_access = os.access
    monkeypatch.setattr("fan_convert.io.atomic.os.access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    one_line_error(run(ckpt, "--frames", 4, *ARCH, "-o", tmp_path / "x.safetensors"), "is not writable")
    monkeypatch.undo()

    def disk_full(model, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("fan_convert.io.fan_file.save_model", disk_full)
    one_line_error(run(ckpt, "--frames", 4, *ARCH, "-o", tmp_path / "x.safetensors"), "No space left on device")
    assert os.listdir(tmp_path) == []


def test_specialize_errors(tmp_path, pretrained):
    _, ckpt = pretrained
    one_line_error(run("specialize", tmp_path / "none.safetensors", "--frames", 8), "does not exist")
    one_line_error(run("specialize", ckpt, "--frames", 8), "is not a safetensors file, or is truncated")


def _write(path, data):
    path.write_bytes(data)
    return path


def _truncate(source, path):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
