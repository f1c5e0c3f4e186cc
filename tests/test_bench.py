"""Smoke tests of the benchmark scripts in bench/ (tiny configurations; numbers meaningless)."""

import json

import pytest
import torch
from conftest import load_bench


@pytest.fixture(scope="module")
def table1():
    return load_bench("table1")


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
    load_bench("cost").main(["--quick", "--out", str(out)])
    text = out.read_text()
    for section in ("Parameters", "GFLOPs", "CPU latency", "Training step", "Data loading", "Conversion time"):
        assert f"### {section}" in text
    assert "FAN / sum of ST" in text


def test_per_class_quick_run_writes_a_row_per_class(tmp_path):
    load_bench("per_class").main(["--quick", "--out", str(tmp_path)])
    lines = (tmp_path / "per_class_T4_quick.md").read_text().splitlines()
    assert "FAN-finetune, kernel 3" in lines[2]
    assert sum(line.startswith("| moving") for line in lines) == 4 and lines[-1].startswith("| parameters")


def test_bars_check_each_regime_bar_and_give_paired_verdicts(table1):
    def run(st, tune, scratch, wa_off, st_cost):
        top = lambda v4, v8, v16: {"top1": {2: 0.0, 4: v4, 6: 0.0, 8: v8, 12: 0.0, 16: v16, 20: 0.0}}  # noqa: E731
        return {"st": top(*st), "fan-finetune": top(*tune), "fan-scratch": top(*scratch), "no-wa": top(*wa_off),
                "plain": top(10.0, 20.0, 90.0), "fan-finetune-rotate-st-cost": top(*st_cost)}
    per_seed = {0: run((70, 80, 90), (69.7, 80, 91), (71, 81, 91), (69.7, 80, 91), (71, 80, 89)),
                1: run((70, 80, 90), (69.5, 80, 91), (72, 82, 92), (69.0, 79, 90), (71, 80, 89))}
    per_seed = {s: {r: {**v, "seconds": 1, "cost": "c", "frame_epochs": 1, "params": 1} for r, v in rows.items()}
                for s, rows in per_seed.items()}
    summary = table1.summarize(per_seed, ["st", "fan-finetune", "fan-scratch", "no-wa", "plain", "fan-finetune-rotate-st-cost"])
    over = "\n".join(table1.bars(summary, "overparam", per_seed))
    assert "FAN-finetune >= ST -0.5 at every trained T: **met**" in over
    assert "FAN-finetune at ST's cost (rotate) >= ST -0.5 at every trained T: **not met** (difference +1.0 / +0.0 / -1.0" in over
    assert "FAN-finetune at ST's cost (rotate) vs ST, paired per-seed difference at 4 / 8 / 16: 4: +1.0 ± 0.0 (ahead)" in over
    assert "FAN-scratch >= ST at every trained T: **met**" in over
    assert "FAN-scratch vs ST, paired per-seed difference at 4 / 8 / 16: 4: +1.5 ± 0.7 (ahead)" in over
    assert "Weight Alteration on vs off (FAN-finetune), paired per-seed difference at 4 / 8 / 16: 4: +0.2 ± 0.4 (level" in over
    summary["fan-finetune"]["top1"][4]["mean"] = 69.0
    assert "FAN-finetune >= ST -0.5 at every trained T: **not met**" in "\n".join(table1.bars(summary, "overparam", per_seed))
    assert "FAN-finetune within 2 points of ST at every trained T: **met**" in "\n".join(table1.bars(summary, "today", per_seed))


def test_overparam_quick_rows_resume_across_runs_and_report_without_training(table1, tmp_path, capsys):
    argv = ["--quick", "--regime", "overparam", "--seeds", "0", "--out", str(tmp_path), "--train-size", "16", "--val-size", "8"]
    first = table1.main([*argv, "--rows", "plain", "calibrate"])
    assert first["plain"]["params"] == 605_024 and first["calibrate"]["params"] > first["plain"]["params"]
    capsys.readouterr()
    second = table1.main([*argv, "--rows", "plain", "control"])  # plain is on disk: only control trains
    out = capsys.readouterr().out
    assert "reusing finished rows plain, calibrate" in out and "seed 0 plain" not in out and "seed 0 control" in out
    assert second["plain"] == first["plain"]
    assert len(list((tmp_path / "table1_seeds").glob("table1_overparam_quick_seed0.plain.*.safetensors"))) == 1
    report = table1.main([*argv, "--rows", "plain", "calibrate", "control", "--no-train"])
    assert list(report) == ["plain", "calibrate", "control"]
    assert "regime `overparam`" in (tmp_path / "table1_overparam_quick.md").read_text()
    with pytest.raises(SystemExit, match="no results on disk"):
        table1.main([*argv, "--seeds", "5", "--no-train"])


def test_private_copies_give_each_key_its_own_weights():
    gap = load_bench("gap_study")
    import fan_convert

    torch.manual_seed(0)
    fan = gap.make_private(fan_convert.adapt(gap.table1.new_model(0), frames=(4, 8, 16)), "stage2").eval()
    clips = {t: torch.randn(2, 3, t, 32, 32) for t in (4, 8)}
    before = {t: fan(x) for t, x in clips.items()}
    with torch.no_grad():
        for p in fan.backbone.stages[1].copies["4"].parameters():
            p.add_(0.5)
    assert not torch.allclose(fan(clips[4]), before[4])
    assert torch.equal(fan(clips[8]), before[8])


def test_gap_study_quick_run_writes_its_table_and_resumes(tmp_path, capsys):
    gap = load_bench("gap_study")
    argv = ["--quick", "--rows", "ce4-short", "private-stage3", "--out", str(tmp_path)]
    per_seed = gap.main(argv)
    assert set(per_seed[0]) == {"ce4-short", "private-stage3"}
    text = (tmp_path / "gap_study_quick.md").read_text()
    assert "| FAN-finetune, stage3 private per key |" in text and "| Plain + CE at 4 only, FAN's budget" in text
    capsys.readouterr()
    gap.main(argv)
    assert "all rows on disk" in capsys.readouterr().out


def test_data_throughput_measures_both_readers_and_the_reference_frame_floor(tmp_path):
    import numpy as np

    from fan_convert.testing import write_video

    bench = load_bench("data_throughput")
    rng = np.random.default_rng(0)
    video = write_video(tmp_path / "clip.mp4", (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)))
    folder = tmp_path / "frames"
    bench.write_frame_folder(video, folder)
    assert len(list(folder.iterdir())) == 40
    assert bench.reference_decode_cpu([video]) > 0 and bench.reference_decode_cpu([folder]) is None
    for cell in bench.interleaved([video, folder], 2, None, repeats=2):  # today's reader, the new one
        assert cell["clips_s"] > 0 and cell["cpu_per_clip"] > 0
    assert bench.same_views([video, folder])


@pytest.mark.slow  # about 15 s on one core
def test_table1_rotation_rows_and_their_verdicts(table1, tmp_path):
    rows = ["st", "fan-finetune", "fan-scratch", "plain-long", "st-converged", "fan-scratch-rotate", "fan-scratch-rotate-distill",
            "fan-finetune-rotate", "fan-finetune-rotate-st-cost"]
    summary = table1.main(["--quick", "--seeds", "0", "--rows", *rows, "--out", str(tmp_path), "--train-size", "16", "--val-size", "8",
                           "--threads", "1"])
    assert list(summary) == rows
    cost = {r: summary[r]["frame_epochs"] for r in rows}  # quick: 1 epoch, fine-tuning 1 epoch, keys 4 + 8 + 16 = 28
    assert cost["st-converged"] == 2 * 28 and cost["fan-scratch-rotate"] == cost["fan-scratch"] == 28
    assert cost["fan-finetune-rotate"] == cost["fan-finetune"] == 16 + 28 and cost["fan-finetune-rotate-st-cost"] == 16 + 9
    assert summary["fan-scratch-rotate"]["cost"] == "3x(4|8|16)" and cost["fan-scratch-rotate-distill"] > 28
    seed0 = json.loads((tmp_path / "table1_quick.json").read_text())["per_seed"]["0"]
    assert seed0["st-converged"]["per_model"]["16"] == seed0["plain-long"]["top1"]  # the 16-frame model is plain-long's
    text = (tmp_path / "table1_quick.md").read_text()
    for verdict in ("ST converged vs ST", "FAN-scratch-rotate vs ST converged", "FAN-scratch-rotate vs FAN-scratch (joint)",
                    "teacher vs CE only", "FAN-finetune-rotate vs FAN-finetune (joint, same budget)",
                    "FAN-finetune-rotate at ST's cost vs ST converged"):
        assert f"Verdict, {verdict}" in text
    assert "FAN-finetune, rotate (ST's compute) >= ST converged at every trained T, at no more than ST's compute" in text
