"""The CPU-safe parts of bench/gpu_check.py: the report without a GPU, the torchrun worker on
gloo, the throughput row and the table (the GPU parts run on a GPU machine)."""

import json

import pytest
import torch
from conftest import load_bench


@pytest.fixture(scope="module")
def gpu_check():
    return load_bench("gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without a GPU")
def test_without_a_gpu_it_says_so_and_exits_0(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json")]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["skipped"].startswith("no CUDA GPU") and report["checks"] == [] and report["torch"] == torch.__version__
    assert "no CUDA GPU" in capsys.readouterr().out


def test_torchrun_worker_trains_under_ddp_with_one_process(gpu_check):
    row = gpu_check.torchrun_check(limit=240, device="cpu")  # the NCCL check's code path, on gloo
    assert row["status"] == "pass", row
    assert row["backend"] == "gloo" and row["world"] == 1 and row["ddp"] and row["steps"] == 4 + 2


def test_throughput_row_and_table(gpu_check, monkeypatch, capsys):
    row = gpu_check.throughput("tiny TSM", "fan_convert:tiny_resnet", {"temporal": "tsm", "num_classes": 10}, 32, device="cpu", batch=2,
                               amp="off", warmup=1, steps=1)
    assert row["status"] == "pass" and row["fan_step_s"] > 0 and all(row[f"st{t}_step_s"] > 0 for t in (4, 8, 16))
    assert row["fan_over_three_st"] == pytest.approx(row["fan_step_s"] / sum(row[f"st{t}_step_s"] for t in (4, 8, 16)), rel=0.01)

    def missing(*args, **kwargs):
        raise ImportError("No module named 'pytorchvideo'", name="pytorchvideo")

    monkeypatch.setattr(gpu_check, "build", missing)
    skipped = gpu_check.throughput("X3D-M", "pytorchvideo:x3d_m", {}, 224, device="cpu")
    assert skipped == {"model": "X3D-M", "status": "skip", "detail": "pytorchvideo is not installed"}
    report = {"device": "cpu", "torch": torch.__version__, "throughput": [row, skipped],
              "checks": [{"check": "x", "status": "pass", "seconds": 1.0, "detail": "", "graphs": 2}]}
    gpu_check.print_table(report)
    out = capsys.readouterr().out
    assert "tiny TSM" in out and "pytorchvideo is not installed" in out and '"graphs": 2' in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the rows of a machine without a GPU")
def test_cuda_tests_become_one_row_each(gpu_check):
    rows = gpu_check.cuda_tests(limit=240)  # pytest without the PyAV-importing conftest, results from its JUnit XML
    assert len(rows) >= 10 and all(r["status"] == "skip" and r["detail"] == "needs a CUDA GPU" for r in rows)
    assert any("never_waits" in r["check"] for r in rows) and any("resume" in r["check"] for r in rows)


def test_the_workers_start_without_out_and_the_check_needs_it(gpu_check, monkeypatch):
    # The compile and torchrun workers are started without --out (this once failed on the GPU).
    ran = []
    monkeypatch.setattr(gpu_check, "compile_worker", lambda: ran.append("compile"))
    assert gpu_check.main(["--compile-worker"]) == 0 and ran == ["compile"]
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([])
    assert exit_info.value.code == 2
