"""The command line answers at once, reads as it should, and every bad input gets the exact
one-line error it promises (exit 2, nothing written)."""

import json
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import error_lines
from typer.testing import CliRunner

from fan_convert.cli import app, cli_args
from fan_convert.errors import first_line
from fan_convert.zoo import build

runner = CliRunner()
ARCH = ["--arch", "fan_convert:tiny_resnet", "--temporal", "tsm", "--num-classes", "3"]


def run(*argv):
    return runner.invoke(app, cli_args([str(a) for a in argv]), env={"COLUMNS": "200"}, prog_name="fan-convert")


def error_line(result) -> str:
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["convert", "--help"], ["budget", "--help"], ["train", "--help"]])
def test_help_and_version_do_not_import_torch(argv):
    code = (
        "import json, sys\n"
        "from fan_convert.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as done:\n    code = done.code\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "torch": False}, result.stdout + result.stderr


def test_help_reads_as_usage_not_as_types():
    result = run("convert", "--help")
    assert result.exit_code == 0
    assert "Usage: fan-convert convert [OPTIONS] CHECKPOINT" in result.output
    assert "<bool>" not in result.output and "{checkpoint}" not in result.output
    root = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "<bool>" not in root.output and "--version" in root.output
    for command in ("specialize", "export", "budget", "train", "eval", "calibrate"):
        text = run(command, "--help").output
        assert "MODEL_FILE" in text and "<bool>" not in text and "{model_file}" not in text, command
    for command in ("convert", "inspect", "eval", "budget"):  # one declaration of --frames, everywhere
        assert "Frame counts, separated by spaces" in " ".join(run(command, "--help").output.split()), command


def test_demo_help_promises_only_what_it_does():
    text = " ".join(run("demo", "--help").output.split())
    assert "compare" in text and "and exports the FAN file" not in text and "fine-tune, export" not in text


@pytest.mark.parametrize("frames", [["-4", "8"], ["8", "-4"], ["0"], ["4", "0", "8"]])
@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_a_bad_frame_count_anywhere_gives_the_same_range_error(tmp_path, frames, command):
    target = ["convert", tmp_path / "x.pt", *ARCH] if command == "convert" else ["inspect", "fan_convert:tiny_resnet"]
    bad = next(f for f in frames if int(f) <= 0)
    line = error_line(run(*target, "--frames", *frames))
    assert line == f"error: each of frames must be a positive integer, got {bad}"
    assert list(tmp_path.iterdir()) == []


def test_comma_separated_frames_get_a_hint(tmp_path):
    for argv in (["convert", str(tmp_path / "x.pt"), "--frames", "4,8,16"], ["inspect", "timm:resnet18", "-f", "4,8"]):
        result = subprocess.run([sys.executable, "-m", "fan_convert", *argv], capture_output=True, text=True, timeout=120)
        wanted = " ".join(argv[-1].split(","))
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"error: --frames takes frame counts separated by spaces: --frames {wanted} (not {argv[-1]})"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build("fan_convert:tiny_resnet", temporal="tsm", num_classes=3).eval()
    torch.save(model, folder / "whole.pt")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'PWNED'}",))

    with open(folder / "evil.pt", "wb") as f:
        pickle.dump({"weights": Payload()}, f)
    return folder


@pytest.mark.parametrize("name,reason", [
    ("evil.pt", "is a pickle that holds more than tensors (not a plain state dict)"),
    ("whole.pt", "contains pickled Python objects (such as a whole nn.Module)"),
])
def test_a_pickle_that_is_not_a_state_dict_names_trust_pickle(checkpoints, tmp_path, name, reason):
    path, out = checkpoints / name, tmp_path / "out.safetensors"
    result = run(path, "--frames", 4, 8, *ARCH, "-o", out)
    line = error_line(result)  # one line: no torch UserWarnings before it
    assert line == (f"error: '{path}' {reason}; loading it runs code from the file — "
                    "pass --trust-pickle only if you trust its source")  # CLI flags, not Python arguments
    assert "weights_only" not in result.output and not out.exists() and not (checkpoints / "PWNED").exists()


def test_messages_keep_their_quotes(tmp_path):
    missing = tmp_path / "nope.pt"
    assert error_line(run(missing, "--frames", 4, *ARCH)) == f"error: checkpoint '{missing}' does not exist; check the path"
    assert first_line(KeyError("fc.weight")) == "fc.weight" and first_line(KeyError("'quoted'")) == "'quoted'"
    assert first_line(ValueError("'a.pt' is bad\nmore")) == "'a.pt' is bad" and first_line(RuntimeError()) == "RuntimeError"


def test_library_messages_name_python_arguments_and_the_cli_shows_its_flags():
    from fan_convert.cli._app import cli_words

    library = {
        "device='cuda' (--device cuda): no CUDA GPU is visible; use device='cpu' (--device cpu)":
            "--device cuda: no CUDA GPU is visible; use --device cpu",
        "pass the run's last.safetensors to Trainer.resume (--resume)": "pass the run's last.safetensors to --resume",
        "pass trust_factory=True (--trust-factory) if you trust the file": "pass --trust-factory if you trust the file",
        "VideoMAEConfig has no field 'x'; check arch_kwargs (--arch-kwarg)": "VideoMAEConfig has no field 'x'; check --arch-kwarg",
        "arch (--arch) is required: name it, e.g. arch='timm:resnet50' (--arch timm:resnet50) with "
        "arch_kwargs={'temporal': 'tsm'} (--temporal tsm)": "--arch is required: name it, e.g. --arch timm:resnet50 with --temporal tsm",
        "see the docs (--help)": "see the docs (--help)",  # prose before a flag is kept
    }
    for message, shown in library.items():
        assert cli_words(message) == shown
