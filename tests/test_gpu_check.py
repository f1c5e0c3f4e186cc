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
    memory = ["peak_mem_gb", "fan_step_mem_gb", "st4_step_mem_gb", "st8_step_mem_gb", "st16_step_mem_gb"]
    assert row["compiled"] is False and all(row[key] is None for key in memory), row  # peak GPU memory: None on a CPU

    def missing(*args, **kwargs):
        raise ImportError("No module named 'pytorchvideo'", name="pytorchvideo")

    monkeypatch.setattr(gpu_check, "build", missing)
    skipped = gpu_check.throughput("X3D-M", "pytorchvideo:x3d_m", {}, 224, device="cpu")
    assert skipped == {"model": "X3D-M", "status": "skip", "compiled": False, "detail": "pytorchvideo is not installed"}
    report = {"device": "cpu", "torch": torch.__version__, "throughput": [row, skipped],
              "checks": [{"check": "x", "status": "pass", "seconds": 1.0, "detail": "", "graphs": 2}]}
    gpu_check.print_table(report)
    out = capsys.readouterr().out
    assert "tiny TSM" in out and "pytorchvideo is not installed" in out and '"graphs": 2' in out
    assert "peak GiB" in out and "compiled" in out and "4: None, 8: None, 16: None" in out


def test_the_gpu_memory_of_each_step_is_measured_on_cuda(gpu_check, monkeypatch):
    """step_memory: each step's peak above what was allocated before it (torch.cuda faked)."""
    allocated = iter([100, 200, 200, 200])
    peaks = iter([100 + 2**30, 200 + 2**29, 200 + 2**28, 200 + 2**27])
    monkeypatch.setattr(gpu_check.torch.cuda, "memory_allocated", lambda device=None: next(allocated))
    monkeypatch.setattr(gpu_check.torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    monkeypatch.setattr(gpu_check.torch.cuda, "reset_peak_memory_stats", lambda device=None: None)

    class Cost:
        device = torch.device("cuda")

        def runs(self):
            return {"fan": lambda: None, **{f"st{t}": lambda: None for t in (4, 8, 16)}}

        def sync(self):
            pass

    assert gpu_check.step_memory(Cost()) == {"fan_step_mem_gb": 1.0, "st4_step_mem_gb": 0.5, "st8_step_mem_gb": 0.25,
                                             "st16_step_mem_gb": 0.125}


@pytest.mark.parametrize("torch_version,status", [((2, 14), "pass"), ((2, 13), "skip")])
def test_the_compiled_mode_runs_every_family_row_too(gpu_check, tmp_path, monkeypatch, torch_version, status):
    """Unless --skip compile: after the eager rows (batch 8 and 32), one compiled row per family
    (--compile-batches, default 8), marked compiled; skipped with a note on torch < 2.14."""
    calls = []

    def fake(name, spec, options, size, *, batch, keys, trained_at, compile=False):
        calls.append((name, batch, compile))
        return {"model": name, "status": "pass", "compiled": compile, "size": size, "batch": batch, "fan_step_s": 1.0,
                **{f"st{t}_step_s": 0.3 for t in keys}, "fan_over_three_st": 1.11, "fan_clips_per_s": 8.0,
                "st8_clips_per_s": 26.7, "peak_mem_gb": 9.5, "fan_step_mem_gb": 4.0, **{f"st{t}_step_mem_gb": 1.5 for t in keys}}

    monkeypatch.setattr(gpu_check, "throughput", fake)
    monkeypatch.setattr(gpu_check, "compile_check", lambda limit: {"check": "--compile", "status": "pass", "seconds": 1.0})
    monkeypatch.setattr(gpu_check, "_torch_version", lambda: torch_version)
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_name", lambda index=0: "a test GPU")
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json"), "--skip", "tests", "torchrun"]) == 0
    families = ("TSM-ResNet-50", "R3D-18", "X3D-S", "X3D-M")
    eager = [(name, batch, False) for name in families for batch in (8, 32)]
    assert calls == eager + ([(name, 8, True) for name in families] if status == "pass" else [])
    rows = json.loads((tmp_path / "gpu.json").read_text())["throughput"]
    compiled = [row for row in rows if row["compiled"]]
    assert [(row["model"], row["batch"], row["status"]) for row in compiled] == [(name, 8, status) for name in families]
    assert all(row["peak_mem_gb"] == 9.5 for row in rows if row["status"] == "pass")
    if status == "skip":
        assert all("torch < 2.14" in row["detail"] for row in compiled)


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
