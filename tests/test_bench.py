"""Smoke tests of the benchmark scripts in bench/ (tiny configurations; numbers meaningless)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parent.parent / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table1():
    return load("table1")


def test_mixed_sampling_blends_sparse_and_dense_four_frame_views(table1):
    base = table1.TemporalBenchmark("train", size=4, frames=(4, 8, 16))
    mixed = table1.MixedSampling(base, rho=0.5, seed=0)
    views, label = mixed[1]
    full, same_label = base[1]
    assert set(views) == {4} and label == same_label and views[4].shape == (3, 4, 32, 32)
    dense = (views[4] - 0.5 * full[4]) * 2  # must be 4 consecutive frames of the 16-frame view
    assert any(torch.allclose(dense, full[16][:, s : s + 4], atol=1e-5) for s in range(13))


def test_proportional_trainer_trains_one_frame_count_per_step(table1):
    base = table1.TemporalBenchmark("train", size=8, frames=(4, 16))
    seen = []
    trainer = table1.ProportionalTrainer(
        table1.new_model(0), base, table1.TrainConfig(frames=(4, 16), epochs=1, batch_size=2, progress=False), rho=0.5
    )
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[2]))
    trainer.fit()
    assert len(seen) == 4 and set(seen) <= {4, 16}


def test_table1_quick_run_writes_tables_plot_and_resumes(table1, tmp_path, capsys):
    rows = ["plain", "st", "ensemble", "mixed", "proportional", "calibrate", "fan-finetune", "control", "no-sn"]
    argv = ["--quick", "--seeds", "0", "1", "--rows", *rows, "--out", str(tmp_path), "--train-size", "32", "--val-size", "16"]
    summary = table1.main(argv)
    assert list(summary) == rows
    assert all(summary[r]["seeds"] == 2 for r in rows)
    assert summary["st"]["params"] == 3 * summary["plain"]["params"]
    assert summary["fan-finetune"]["params"] > summary["plain"]["params"]
    assert summary["fan-finetune"]["frame_epochs"] == 16 + 28 and summary["mixed"]["frame_epochs"] == 4
    text = (tmp_path / "table1_quick.md").read_text()
    assert "| Plain (trained at 16) |" in text and "FAN-finetune within 2 points of ST" in text
    data = json.loads((tmp_path / "table1_quick.json").read_text())
    assert set(data["per_seed"]) == {"0", "1"}
    assert (tmp_path / "table1_quick.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    table1.main(argv)  # every seed's results are on disk: nothing is trained again
    assert capsys.readouterr().out.count("reusing") == 2


def test_cost_quick_run_reports_every_section(tmp_path):
    out = tmp_path / "cost.md"
    load("cost").main(["--quick", "--out", str(out)])
    text = out.read_text()
    for section in ("Parameters", "GFLOPs", "CPU latency", "Training step", "Data loading", "Conversion time"):
        assert f"### {section}" in text
    assert "FAN / sum of ST" in text


def test_per_class_quick_run_writes_a_row_per_class(tmp_path):
    load("per_class").main(["--quick", "--out", str(tmp_path)])
    lines = (tmp_path / "per_class_T4_quick.md").read_text().splitlines()
    assert "FAN-finetune, kernel 3" in lines[2]
    assert sum(line.startswith("| moving") for line in lines) == 4 and lines[-1].startswith("| parameters")
