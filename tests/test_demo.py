"""The demo: shipped plain checkpoint (hash checked), --from-scratch, no clobbering, plain progress lines."""

import hashlib
import io
import json
import re

import pytest
import torch
from conftest import error_lines
from typer.testing import CliRunner

from fan_convert.cli import app, cli_args
from fan_convert.data import TemporalBenchmark
from fan_convert.train import demo
from fan_convert.train.progress import EpochProgress, format_seconds
from fan_convert.train.trainer import TrainConfig, Trainer

TINY = demo.DemoConfig(train_size=32, val_size=16, plain_epochs=1, fan_epochs=1)


def test_the_shipped_plain_checkpoint_matches_its_recorded_hash():
    data = demo.PLAIN_CHECKPOINT.read_bytes()
    assert hashlib.sha256(data).hexdigest() == demo.PLAIN_SHA256, "regenerate with bench/demo_checkpoint.py and update PLAIN_SHA256"
    model, recipe = demo.load_plain()
    assert recipe["epochs"] == demo.FULL.plain_epochs and recipe["train_size"] == demo.FULL.train_size
    assert recipe["frames"] == 16 and recipe["seed"] == 0
    clip = TemporalBenchmark("val", size=1, frames=(16,))[0][0][16][None]
    assert model.eval()(clip).shape == (1, 16)


def test_a_changed_plain_checkpoint_is_refused_with_the_fix(tmp_path):
    data = bytearray(demo.PLAIN_CHECKPOINT.read_bytes())
    data[-5] ^= 0xFF
    damaged = tmp_path / "plain.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"SHA-256 .*damaged or replaced.*--from-scratch") as err:
        demo.load_plain(damaged)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="cannot read the demo's plain checkpoint"):
        demo.load_plain(tmp_path / "missing.safetensors")


def earlier_run(folder, name: str, text: str):
    """``folder`` holding one file of an earlier run."""
    folder.mkdir()
    (folder / name).write_text(text)
    return folder


def test_demo_refuses_to_overwrite_an_earlier_run(tmp_path):
    out = earlier_run(tmp_path / "fan-demo", "results.json", '{"earlier": true}')
    result = CliRunner().invoke(app, cli_args(["demo", "--quick", "--out-dir", str(out)]))
    lines = error_lines(result)
    assert len(lines) == 1 and "earlier demo run (results.json)" in lines[0] and "--force" in lines[0], result.output
    assert json.loads((out / "results.json").read_text()) == {"earlier": True}
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]

    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(app, cli_args(["demo", "--out-dir", str(tmp_path / "a-file")]))
    assert result.exit_code == 2 and "is a file" in result.output


def test_from_scratch_trains_the_plain_model_and_force_overwrites(tmp_path):
    out = earlier_run(tmp_path / "demo", "fan.safetensors", "an earlier run")
    results = demo.run_demo(str(out), config=TINY, from_scratch=True, force=True, progress=False)
    assert results["plain_model"]["trained_here"] is True
    assert results["plain_model"]["equals_shipped_checkpoint"] is False  # one epoch on 32 clips
    assert "train_plain" in results["seconds"] and "load_plain" not in results["seconds"]
    stored = json.loads((out / "results.json").read_text())
    assert stored["plain"] == {str(t): v for t, v in results["plain"].items()}
    assert (out / "fan.safetensors").read_bytes()[:8] != b"an earli"


def test_progress_is_plain_timed_lines_when_not_a_terminal():
    stream = io.StringIO()
    with EpochProgress(stream=stream, interval=0) as progress:
        assert not progress.live
        progress.start("epoch 1/2", total=3)
        for step in range(3):
            progress.advance(f"loss {1.0 / (step + 1):.3f}")
        progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/2: 1/3 steps, ") and lines[0].endswith(", loss 1.000")
    assert re.fullmatch(r"epoch 1/2 done: 3 steps in [\d.]+ s, loss 0\.333", lines[-1]), lines
    assert len(lines) == 3  # steps 1 and 2 within the epoch, then the summary

    quiet = io.StringIO()
    with EpochProgress(enabled=False, stream=quiet) as progress:
        progress.start("epoch 1/1", total=1)
        progress.advance("x")
        progress.finish()
    assert quiet.getvalue() == ""


def test_trainer_prints_one_line_per_epoch_to_a_log(capsys):
    torch.manual_seed(0)
    data = TemporalBenchmark("train", size=8, frames=(4,))
    Trainer(demo.plain_architecture(), data, TrainConfig(frames=(4,), epochs=2, batch_size=4)).fit()
    out = capsys.readouterr().out.splitlines()
    done = [line for line in out if " done: " in line]
    assert [line.split(" done")[0] for line in done] == ["epoch 1/2", "epoch 2/2"]
    assert all(re.search(r"2 steps in [\d.]+ s, loss [\d.]+ acc@4 [\d.]+, [\d.]+ clips/s$", line) for line in done), done


def test_elapsed_times_read_as_a_person_would():
    assert format_seconds(3.21) == "3.2 s"
    assert format_seconds(42.4) == "42 s"
    assert format_seconds(185) == "3 min 05 s"
