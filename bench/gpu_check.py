"""The first thing to run on a GPU machine: does fan-convert's training work here, and how fast?

    PYTHONPATH=. python bench/gpu_check.py --out gpu.json        # from the repository root

Runs, each with its own time limit (about 8 minutes in all on one H200):
1. ``tests/test_cuda.py``: AMP fp16/bf16 loss curves against fp32, channels-last weights,
   evaluation, no host sync inside a training step (``torch.cuda.set_sync_debug_mode("error")``),
   save -> kill -> resume, calibrate/export/budget on CUDA;
2. ``torchrun`` with one process per GPU (up to 2) on NCCL, a step that trains a subset of keys included;
3. ``--compile`` on a small FAN (graph count, loss against eager);
4. throughput: one FAN step (4, 8 and 16 frames) against the three single-T steps, for
   TSM-ResNet-50 and X3D-M at 224 px (X3D-M needs pytorchvideo; skipped with a note without it).

Prints a table and writes everything as JSON to ``--out``. Without a GPU it says so, writes a
JSON that marks every check skipped, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fan_convert  # noqa: E402
from fan_convert.train.trainer import COMPILE_CLEAN_TORCH, TrainConfig, Trainer  # noqa: E402
from fan_convert.zoo import build  # noqa: E402

THROUGHPUT_MODELS = {  # name: (spec, build options, input size); 10 classes
    "TSM-ResNet-50": ("timm:resnet50", {"temporal": "tsm", "num_classes": 10}, 224),
    "X3D-M": ("pytorchvideo:x3d_m", {"model_num_class": 10}, 224),
}
KEYS = (4, 8, 16)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no result line")


def _run(name: str, command: list[str], limit: int) -> tuple[subprocess.CompletedProcess | None, float, dict | None]:
    """Run ``command`` for at most ``limit`` seconds: (result, seconds, the failure row if it timed out)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=_env(), cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, limit, {"check": name, "status": "fail", "seconds": limit, "detail": f"did not finish within {limit} s"}
    return done, round(time.perf_counter() - started, 1), None


def _subprocess(name: str, command: list[str], limit: int) -> dict:
    done, seconds, timed_out = _run(name, command, limit)
    if timed_out:
        return timed_out
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-12:]
        return {"check": name, "status": "fail", "seconds": seconds, "detail": " | ".join(tail)[-1500:]}
    try:
        result = _last_json_line(done.stdout)
    except ValueError:
        return {"check": name, "status": "fail", "seconds": seconds, "detail": done.stdout[-800:]}
    return {"check": name, "status": result.pop("status", "pass"), "seconds": seconds, **result}


def cuda_tests(limit: int) -> list[dict]:
    """tests/test_cuda.py under pytest, one row per test."""
    with tempfile.TemporaryDirectory() as temp:
        junit = Path(temp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_cuda.py"), "-q", "-p", "no:cacheprovider",
                   "--noconftest", "-o", "addopts=", f"--junitxml={junit}"]  # conftest needs PyAV; test_cuda does not
        done, seconds, timed_out = _run("tests/test_cuda.py", command, limit)
        if timed_out:
            return [timed_out]
        if not junit.exists():
            return [{"check": "tests/test_cuda.py", "status": "fail", "seconds": seconds,
                     "detail": done.stdout[-1500:] + done.stderr[-1500:]}]
        rows = []
        for case in ElementTree.parse(junit).iter("testcase"):
            problem = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
            status = "pass" if problem is None else ("skip" if problem.tag == "skipped" else "fail")
            detail = "" if problem is None else (problem.get("message") or "")[:600]
            rows.append({"check": f"test_cuda::{case.get('name')}", "status": status,
                         "seconds": round(float(case.get("time", 0)), 1), "detail": detail})
        return rows


def torchrun_check(limit: int, device: str = "cuda") -> dict:
    processes = max(1, min(2, torch.cuda.device_count())) if device == "cuda" else 1
    with tempfile.TemporaryDirectory() as temp:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                   str(Path(__file__).resolve()), "--torchrun-worker", "--device", device, "--out", str(Path(temp) / "w.json")]
        return _subprocess(f"torchrun --nproc-per-node {processes} ({'nccl' if device == 'cuda' else 'gloo'})", command, limit)


def torchrun_worker(device: str) -> None:
    """One rank: train a small FAN under torchrun, then two steps that leave a key unused."""
    import torch.distributed as dist

    from fan_convert.data import TemporalBenchmark

    torch.manual_seed(0)
    model = build("fan_convert:tiny_resnet", temporal="tsm", num_classes=4)
    fan = fan_convert.adapt(model, frames=(4, 8))
    data = TemporalBenchmark("train", size=32, frames=(4, 8), classes=[0, 1, 2, 3])
    config = TrainConfig(frames=(4, 8), epochs=1, batch_size=8, progress=False, device=device,
                         amp="bf16" if device == "cuda" else "off")
    trainer = Trainer(fan, data, config, frame_subsets=True)
    trainer.fit()
    views, labels, _ = next(iter(trainer._loader()))
    for frames in ((4,), (8,)):
        trainer.train_step(views, labels, frames=frames)
    flat = torch.cat([p.detach().flatten().float() for p in fan.parameters()])
    rows = [torch.zeros_like(flat) for _ in range(trainer.world)]
    dist.all_gather(rows, flat)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    result = {"backend": dist.get_backend(), "world": trainer.world, "device": str(trainer.device), "ddp": trainer.ddp,
              "steps": trainer.step, "loss": round(trainer.history[-1]["loss"], 4),
              "ranks_equal": all(torch.equal(rows[0], r) for r in rows)}
    ok = trainer.ddp and result["ranks_equal"] and (device != "cuda" or trainer.device == torch.device("cuda", local))
    result["status"] = "pass" if ok else "fail"
    if trainer.rank == 0:
        print(json.dumps(result), flush=True)
    dist.destroy_process_group()


def compile_check(limit: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--compile-worker"]
    return _subprocess("--compile (tiny TSM FAN, frames 4 and 8)", command, limit)


def compile_worker() -> None:
    from torch._dynamo.utils import counters

    from fan_convert.data import TemporalBenchmark

    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        fan = fan_convert.adapt(build("fan_convert:tiny_resnet", temporal="tsm", num_classes=4), frames=(4, 8))
        data = TemporalBenchmark("train", size=16, frames=(4, 8), classes=[0, 1, 2, 3])
        trainer = Trainer(fan, data, TrainConfig(frames=(4, 8), epochs=1, batch_size=8, compile=compiled, progress=False))
        views, labels, _ = next(iter(trainer._loader()))
        started = time.perf_counter()
        losses = [trainer.train_step(views, labels)["loss"] for _ in range(3)]
        torch.cuda.synchronize()
        results[compiled] = (torch.stack(losses).tolist(), time.perf_counter() - started)
    eager, compiled = results[False][0], results[True][0]
    close = all(abs(a - b) <= 1e-2 * max(1.0, abs(a)) for a, b in zip(eager, compiled, strict=True))
    print(json.dumps({
        "status": "pass" if close else "fail", "graphs": counters["stats"]["unique_graphs"],
        "first_steps_s": round(results[True][1], 1), "eager_loss": [round(v, 4) for v in eager],
        "compiled_loss": [round(v, 4) for v in compiled],
        "note": "" if _torch_version() >= COMPILE_CLEAN_TORCH else f"torch < {COMPILE_CLEAN_TORCH}: the frame context breaks graphs",
    }), flush=True)


def _torch_version() -> tuple[int, int]:
    return tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])


def step_seconds(model, frames, *, device, batch, size, amp, warmup=2, steps=5) -> float:
    """Seconds per training step on random clips of every frame count in ``frames``."""
    config = TrainConfig(frames=frames, epochs=1, batch_size=batch, progress=False, device=device, amp=amp)
    trainer = Trainer(model, [None] * batch, config)
    pin = trainer.device.type == "cuda"
    views = {t: torch.randn(batch, 3, t, size, size) for t in frames}
    views = {t: v.pin_memory() if pin else v for t, v in views.items()}
    labels = torch.randint(0, 10, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            if pin:
                torch.cuda.synchronize()
            started = time.perf_counter()
        trainer.train_step(views, labels)
    if pin:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def throughput(name: str, spec: str, options: dict, size: int, *, device="cuda", batch=8, amp="bf16",
               keys=KEYS, warmup=2, steps=5) -> dict:
    """One FAN step over ``keys`` against one single-T step per key (the ST models' cost: the
    original architecture specialised to T, so fixed-T pools fit the clip)."""
    try:
        torch.manual_seed(0)
        plain = build(spec, **options)
    except ImportError as err:
        return {"model": name, "status": "skip", "detail": f"{err.name or err} is not installed"}
    timing = dict(device=device, batch=batch, size=size, amp=amp, warmup=warmup, steps=steps)
    fan = fan_convert.adapt(plain, frames=keys)
    st_s = {t: step_seconds(fan_convert.specialize(fan, t).train(), (t,), **timing) for t in keys}
    fan_s = step_seconds(fan, keys, **timing)
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"model": name, "status": "pass", "size": size, "batch": batch, "amp": amp, "fan_step_s": round(fan_s, 4),
            **{f"st{t}_step_s": round(s, 4) for t, s in st_s.items()},
            "fan_over_three_st": round(fan_s / sum(st_s.values()), 3), "fan_clips_per_s": round(batch / fan_s, 1),
            "st8_clips_per_s": round(batch / st_s[8], 1) if 8 in st_s else None}


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    checks = Table(title=f"fan-convert GPU check — {report['device']} — torch {report['torch']}")
    for column in ("check", "status", "s", "detail"):
        checks.add_column(column)
    for row in report["checks"]:
        extra = {k: v for k, v in row.items() if k not in ("check", "status", "seconds", "detail")}
        detail = "; ".join(filter(None, [row.get("detail", ""), json.dumps(extra) if extra else ""]))
        checks.add_row(row["check"], row["status"], str(row.get("seconds", "")), detail[:200])
    console = Console(width=200)
    console.print(checks)
    speed = Table(title="Training step, FAN (4+8+16 frames) vs the three single-T steps")
    for column in ("model", "FAN step s", "ST 4/8/16 step s", "FAN / sum(ST)", "FAN clips/s", "ST@8 clips/s"):
        speed.add_column(column)
    for row in report["throughput"]:
        if row["status"] != "pass":
            speed.add_row(row["model"], row["status"], row.get("detail", ""), "", "", "")
            continue
        sts = "/".join(str(row[f"st{t}_step_s"]) for t in KEYS)
        speed.add_row(row["model"], str(row["fan_step_s"]), sts, str(row["fan_over_three_st"]),
                      str(row["fan_clips_per_s"]), str(row["st8_clips_per_s"]))
    console.print(speed)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(report, indent=2))
    os.replace(temp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where to write the JSON report")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "torchrun", "compile", "throughput"])
    parser.add_argument("--torchrun-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torchrun_worker:
        torchrun_worker(args.device)
        return 0
    if args.compile_worker:
        compile_worker()
        return 0
    if args.out is None:
        parser.error("--out is required: the path of the JSON report, e.g. --out gpu.json")
    report = {"torch": torch.__version__, "python": sys.version.split()[0], "cuda": torch.version.cuda,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU",
              "checks": [], "throughput": []}
    if not torch.cuda.is_available():
        report["skipped"] = "no CUDA GPU visible: nothing checked (run this on a GPU machine)"
        write_json(report, args.out)
        print(f"gpu_check: {report['skipped']}; wrote {args.out}")
        return 0
    started = time.perf_counter()
    if "tests" not in args.skip:
        report["checks"] += cuda_tests(limit=200)
    if "torchrun" not in args.skip:
        report["checks"].append(torchrun_check(limit=90))
    if "compile" not in args.skip:
        report["checks"].append(compile_check(limit=120 if _torch_version() < COMPILE_CLEAN_TORCH else 180))
    write_json(report, args.out)  # partial results survive a crash in the throughput part
    if "throughput" not in args.skip:
        for name, (spec, options, size) in THROUGHPUT_MODELS.items():
            try:
                report["throughput"].append(throughput(name, spec, options, size))
            except Exception as err:  # a row fails, the report survives
                report["throughput"].append({"model": name, "status": "fail", "detail": f"{type(err).__name__}: {err}"[:500]})
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json(report, args.out)
    print_table(report)
    failed = [row["check"] for row in report["checks"] if row["status"] == "fail"]
    failed += [row["model"] for row in report["throughput"] if row["status"] == "fail"]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}; {report['seconds']} s; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
