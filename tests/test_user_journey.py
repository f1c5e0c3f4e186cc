"""A user's own data, end to end, on the command line (issue 24): convert with a new head,
calibrate, train with --val, eval, export, budget on generated class folders. Each step is
checked for one output fact; every bad input is one line, exit 2, and leaves earlier files as
they were."""

import json
import re
import subprocess
import sys
import time

import pytest
import torch
from conftest import encode, error_lines
from typer.testing import CliRunner

from fan_convert.cli import app, cli_args
from fan_convert.io import read_manifest
from fan_convert.zoo import build

ARCH = ["--arch", "fan_convert:tiny_resnet", "--temporal", "tsm"]
SIZE = ["--crop", "32", "--resize", "32"]
CLASSES = ["cat", "dog", "fox"]


def run(*argv):
    return CliRunner().invoke(app, cli_args([str(a) for a in argv]), env={"COLUMNS": "200"})


def refused(result, *words) -> str:
    """The one error line of a refused command (exit 2), which must contain ``words``."""
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


def folders(root, classes, videos=2):
    for c in classes:
        (root / c).mkdir(parents=True)
        for v in range(videos):
            encode(root / c / f"{v}.mp4", 12 + 2 * v, size=(32, 40), seed=v)
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    folders(root / "train", CLASSES)
    folders(root / "val", CLASSES, videos=1)
    torch.manual_seed(0)  # "pretrained" on 5 classes: the user's 3 need a new head
    torch.save(build("fan_convert:tiny_resnet", temporal="tsm", num_classes=5).state_dict(), root / "pretrained.pth")
    return root


@pytest.fixture(scope="module")
def trained(home):
    """convert (new head, no pattern) -> calibrate -> train with --val."""
    fan = home / "fan.safetensors"
    result = run(home / "pretrained.pth", *ARCH, "--frames", 2, 4, "--num-classes", 3, "-o", fan)
    assert result.exit_code == 0, result.output
    assert "new 3-class head: backbone.fc starts from random weights (the checkpoint's has 5 classes)" in result.output
    assert read_manifest(fan)["head"] == {"keys": ["backbone.fc.weight", "backbone.fc.bias"], "classes": 3}

    result = run("calibrate", fan, "--data", home / "train", *SIZE, "--batches", 1, "-o", home / "cal.safetensors")
    assert result.exit_code == 0 and f"wrote {home / 'cal.safetensors'}" in result.output, result.output

    result = run("train", home / "cal.safetensors", "--data", home / "train", "--val", home / "val", *SIZE, "--epochs", 1,
                 "--batch-size", 3, "--out-dir", home / "run")
    assert result.exit_code == 0, result.output
    assert "3 classes, 6 videos: 0 cat (2), 1 dog (2), 2 fox (2)" in result.output
    assert "epoch 1/1: 1/2 steps" in result.output and "acc@2" in result.output and "acc@4" in result.output
    assert "epoch 1/1 done: 2 steps" in result.output and "epoch 1/1 validation top-1 (%): 2 frames" in result.output
    assert re.search(r"trained 1 epoch \(loss [\d.]+; training accuracy \(%\): 2 frames \d+\.\d, 4 frames \d+\.\d; "
                     r"validation top-1 \(%\): 2 frames \d+\.\d, 4 frames \d+\.\d\)", result.output), result.output
    return home / "run" / "fan.safetensors"


def test_the_fan_file_records_classes_preprocessing_and_the_run(trained):
    manifest = read_manifest(trained)
    assert manifest["classes"] == CLASSES
    pre = manifest["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["layout"]) == (32, 32, "BCTHW") and pre["mean"] == [0.45] * 3 and pre["std"] == [0.225] * 3
    assert manifest["training"]["frames"] == [2, 4] and manifest["training"]["epochs"] == 1
    assert {"val_top1@2", "val_top1@4"} <= set(json.loads((trained.parent / "log.jsonl").read_text()))
    shown = run("inspect", trained).output
    assert "classes (3): 0 cat, 1 dog, 2 fox" in shown and "centre crop 32x32" in shown and "backbone.fc.weight" in shown


def test_train_refuses_an_existing_run_folder_unless_resumed_or_forced(trained, home):
    before = {p.name: p.read_bytes() for p in (home / "run").iterdir()}
    args = ["train", home / "cal.safetensors", "--data", home / "train", *SIZE, "--epochs", 1, "--batch-size", 3,
            "--out-dir", home / "run"]
    refused(run(*args), "already holds a run", "--resume", "--force")
    assert {p.name: p.read_bytes() for p in (home / "run").iterdir()} == before
    result = run(*args, "--force")
    assert result.exit_code == 0, result.output
    assert len((home / "run" / "log.jsonl").read_text().splitlines()) == 1  # the old log is cleared, not appended to


@pytest.mark.parametrize("change,words", [
    ({"drop": "fox"}, ["missing 'fox'"]),
    ({"add": "gnu"}, ["extra 'gnu'"]),
])
def test_train_and_eval_refuse_other_class_folders(trained, tmp_path, change, words):
    classes = [c for c in CLASSES if c != change.get("drop")] + ([change["add"]] if "add" in change else [])
    data = folders(tmp_path / "videos", classes, videos=1)
    refused(run("train", trained, "--data", data, *SIZE, "--out-dir", tmp_path / "run"), *words)
    assert not (tmp_path / "run").exists()
    refused(run("eval", trained, "--data", data, "--frames", 2, 4, "--json", tmp_path / "r.json"), *words)
    assert not (tmp_path / "r.json").exists()


def test_a_class_list_in_another_order_is_refused_and_folders_follow_the_stored_order(trained, home, tmp_path):
    (tmp_path / "list.txt").write_text("".join(f"{c}/0.mp4 {i}\n" for i, c in enumerate(["dog", "cat", "fox"])))
    (tmp_path / "names.txt").write_text("dog\ncat\nfox\n")
    line = refused(run("eval", trained, "--data", home / "val", "--list", tmp_path / "list.txt", "--classes", tmp_path / "names.txt"))
    assert "orders the classes differently from the model: index 0 is 'dog' there, 'cat' in the model" in line
    refused(run("train", trained, "--data", home / "val", "--list", tmp_path / "list.txt", "--classes", tmp_path / "names.txt",
                "--out-dir", tmp_path / "run"), "orders the classes differently")

    from fan_convert.data import video_folder
    from fan_convert.data.task import match_classes

    items, found = video_folder(home / "val")  # a model whose classes were named in another order at convert time
    relabelled = match_classes(["fox", "cat", "dog"], found, items, where="val")
    assert [(i.path.parent.name, i.label) for i in relabelled] == [("cat", 1), ("dog", 2), ("fox", 0)]


def test_a_model_without_class_names_refuses_more_folders_than_its_head(home, tmp_path):
    data = folders(tmp_path / "videos", ["a", "b", "c", "d"], videos=1)
    refused(run("train", home / "fan.safetensors", "--data", data, *SIZE, "--out-dir", tmp_path / "run"),
            "has 4 classes", "classifier has 3", "--num-classes 4")


def test_eval_uses_the_stored_preprocessing_and_names_what_it_wrote(trained, home, tmp_path):
    result = run("eval", trained, "--data", home / "val", "--frames", 2, 3, 4, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output  # no --crop/--resize: the stored 32/32 (the default 112 would differ)
    assert "served by the nearest: 3 frames by key 4" in result.output
    assert f"wrote {tmp_path / 'r.json'}" in result.output
    assert json.loads((tmp_path / "r.json").read_text())[trained.name]["2"]["clips"] == 3


def test_export_infers_the_format_and_carries_the_metadata(trained, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    result = run("export", trained, "--frames", 4, "-o", onnx_path)
    assert result.exit_code == 0, result.output
    assert "batch fixed at 1" in result.output and "--dynamic-batch" in result.output and "centre-cropped to 32x32" in result.output
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["fan_convert"])
    assert meta["classes"] == CLASSES and meta["input"]["shape"] == [1, 3, 4, 32, 32] and meta["preprocessing"]["crop"] == 32

    for measured in (trained, tmp_path / "all.onnx"):  # the FAN file, and the one artifact for every frame count
        if measured.suffix == ".onnx":
            assert run("export", trained, "-o", measured).exit_code == 0
        result = run("budget", measured, "--latency-ms", 1000, "--repeats", 2, "--warmup", 1, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["settings"]["size"] in (32, [32, 32]), result.stdout  # the size the file records

    refused(run("export", trained, "--frames", 4, "--format", "torch-export", "-o", tmp_path / "x.onnx"),
            "contradicts the output name 'x.onnx'")
    refused(run("export", trained, "--frames", 4, "--format", "onnx", "-o", tmp_path / "x.pt2"), "contradicts")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.pt2").exists()


def test_convert_patterns_and_the_head(home, tmp_path):
    out = tmp_path / "x.safetensors"
    line = refused(run(home / "pretrained.pth", *ARCH, "--frames", 2, 4, "--num-classes", 3, "--allow-missing", "fcc", "-o", out))
    assert "--allow-missing pattern 'fcc' matches no model key (nearest: 'fc'" in line and "allow_missing=" not in line
    line = refused(run(home / "pretrained.pth", *ARCH, "--frames", 2, 4, "-o", out))  # 5-class checkpoint, 2-class default
    assert "the classifier is backbone.fc" in line and "--num-classes N" in line and "new_head" not in line
    assert not out.exists()
    result = run(home / "pretrained.pth", *ARCH, "--frames", 2, 4, "--num-classes", 3, "--allow-missing", "fc.*", "-o", out)
    assert result.exit_code == 0, result.output
    shown = run("inspect", "fan_convert:tiny_resnet", "--temporal", "tsm").output
    assert "classifier: backbone.fc (backbone.fc.weight (10, 64), backbone.fc.bias (10,)); `fan-convert CHECKPOINT --arch " \
           "fan_convert:tiny_resnet --temporal tsm --num-classes N` gives a new N-class head" in shown


# Validation clips made 0.3 s slower each, patched into the piped `fan-convert` process when it
# first imports fan_convert.data.datasets (not before: the first line must still come within 2 s
# of the start): 12 validation videos take >= 3.6 s, more than 2 s of silence without progress.
SLOW_VALIDATION = """
import importlib.util, sys, time

class SlowValidation:
    def find_spec(self, name, path=None, target=None):
        if name != "fan_convert.data.datasets":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            views_for = module.MultiViewClips.views_for

            def slow(self, index, frames):
                if not self.train:
                    time.sleep(0.3)
                return views_for(self, index, frames)

            module.MultiViewClips.views_for = slow

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, SlowValidation())
"""


def piped(*argv, prelude: str = "") -> list[tuple[float, str]]:
    """`fan-convert ARGV` with stdout and stderr piped (a log file, CI), run after ``prelude``
    (Python): its lines, each with the seconds since the process started; exit code 0 is checked."""
    code = f"{prelude}\nimport sys\nfrom fan_convert.cli import main\nsys.argv[0] = 'fan-convert'\nmain()\n"
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    stamps = [(time.monotonic() - started, line.rstrip()) for line in process.stdout]
    assert process.wait(timeout=300) == 0, stamps
    return stamps


def assert_never_silent(stamps: list[tuple[float, str]]) -> None:
    """The first line within 2 s of the start, and no silence longer than 2 s after it (each
    with 0.5 s of slack for a loaded machine)."""
    times = [0.0] + [t for t, _ in stamps]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 2.5, "\n".join(f"{t:6.2f} {line}" for t, line in stamps)


def test_train_speaks_within_two_seconds_when_piped(trained, home, tmp_path):
    """Piped (a log file, CI): the first line within 2 s, and no silence longer than 2 s after it,
    validation after each epoch (--val, slowed to >= 3.6 s) included."""
    val = folders(tmp_path / "val", CLASSES, videos=4)
    stamps = piped("train", trained, "--data", home / "train", "--val", val, *SIZE, "--epochs", 2, "--batch-size", 2,
                   "--out-dir", tmp_path / "run", prelude=SLOW_VALIDATION)
    assert_never_silent(stamps)
    took = [float(m[1]) for _, line in stamps if (m := re.search(r"validation top-1 .*\(12 videos, ([\d.]+) s\)", line))]
    assert len(took) == 2 and min(took) >= 3.6, stamps  # the slow validation ran, after each epoch


@pytest.mark.parametrize("command", ["convert", "calibrate", "eval", "export"])
def test_every_step_speaks_within_two_seconds_when_piped(command, trained, home, tmp_path):
    """Piped, each step of the journey: the first line within 2 s and no silence over 2 s."""
    argv = {
        "convert": [home / "pretrained.pth", *ARCH, "--frames", 2, 4, "--num-classes", 3, "-o", tmp_path / "fan.safetensors"],
        "calibrate": ["calibrate", trained, "--data", home / "train", "--batches", 2, "-o", tmp_path / "cal.safetensors"],
        "eval": ["eval", trained, "--data", home / "val", "--frames", 2, 3, 4, "--json", tmp_path / "r.json"],
        "export": ["export", trained, "--frames", 4, "-o", tmp_path / "m.onnx"],  # importing onnx holds the GIL for 1-2 s
    }[command]
    assert_never_silent(piped(*argv))


def test_a_step_prints_its_line_at_once_before_a_long_call(capsys):
    """say(text, now=True): piped, the line is printed at once (a C extension's import that holds
    the GIL would delay the 2-second line), but not in a step's first second (a refusal stays one line)."""
    from fan_convert.cli._app import _Announcer

    quick = _Announcer("loading ...", delay=60)
    quick.update("importing onnx ...", now=True)
    quick.stop()
    assert capsys.readouterr().err == ""
    slow = _Announcer("loading ...", delay=0.01)
    time.sleep(0.2)
    slow.update("importing onnx ...", now=True)
    slow.stop()
    assert "importing onnx ..." in capsys.readouterr().err


def test_no_videos_says_why(tmp_path):
    from fan_convert.data import DataError, scan_video_folder

    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.mp4").write_bytes(b"")
    (tmp_path / "text" / "cat").mkdir(parents=True)
    (tmp_path / "text" / "cat" / "notes.txt").write_text("x")
    for name, why in (("empty", "it is empty"), ("flat", "it has no class folders, only 1 file directly in it"),
                      ("text", r"its class folders \(1\) hold no video files, only .txt")):
        with pytest.raises(DataError, match=f"no videos found under '{tmp_path / name}': {why}"):
            scan_video_folder(tmp_path / name)


def test_validation_between_epochs_is_never_silent_for_more_than_two_seconds(capsys):
    """`train --val` validates after every epoch; piped, a validation that runs for seconds
    prints its progress (batches done) at least every 2 s instead of going silent."""
    from types import SimpleNamespace

    from fan_convert import adapt
    from fan_convert.cli.train import _validation

    class SlowClips(torch.utils.data.Dataset):
        frames = (2, 4)

        def __len__(self):
            return 12

        def __getitem__(self, i):
            time.sleep(0.35)
            return {t: torch.randn(3, t, 32, 32) for t in self.frames}, i % 3

    model = adapt(build("fan_convert:tiny_resnet", temporal="tsm", num_classes=3), frames=(2, 4))
    trainer = SimpleNamespace(model=model, epoch=1, config=SimpleNamespace(epochs=1))
    record = _validation(SlowClips(), (2, 4), batch_size=2, workers=0, device=torch.device("cpu"))(trainer)
    assert set(record) == {"val_top1@2", "val_top1@4"}
    shown = capsys.readouterr().err
    assert "epoch 1: validating" in shown and "batches" in shown, shown
