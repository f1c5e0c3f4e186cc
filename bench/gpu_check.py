"""The first thing to run on a GPU machine: does fan-convert's training work here, and how fast?

    PYTHONPATH=. python bench/gpu_check.py --out gpu.json        # from the repository root

Runs, each with its own time limit (about 8 minutes in all on one H200 with the two old throughput rows;
the eight step-cost rows and the four compiled ones are not yet timed on a GPU):
1. ``tests/test_cuda.py``: AMP fp16/bf16 loss curves against fp32, channels-last weights,
   evaluation, no host sync inside a training step (``torch.cuda.set_sync_debug_mode("error")``),
   save -> kill -> resume, calibrate/export/budget on CUDA;
2. ``torchrun`` with one process per GPU (up to 2) on NCCL, a step that trains a subset of keys included;
3. ``--compile`` on a small FAN (graph count, loss against eager);
4. the step cost: one FAN step (4, 8 and 16 frames; X3D-S 4, 8 and 13) against the three single-T
   steps, interleaved, medians (``bench/step_cost.py``'s measurement), for TSM-ResNet-50 (224 px),
   R3D-18 (112 px), X3D-S (160 px) and X3D-M (224 px), each at batch 8 and 32, bf16 (X3D needs
   pytorchvideo; skipped with a note without it; a batch that does not fit is skipped with a note);
   each row with peak GPU memory: of the whole row (every model, optimizer state and step) and of
   one more run of each step above what was allocated before it;
5. unless ``--skip compile``: the same rows with every model under ``torch.compile``
   (``--compile-batches``, default 8: each compiled row compiles four trainers), marked
   ``"compiled": true`` (on torch < 2.14 skipped with a note: the frame context breaks graphs).

Prints a table and writes everything as JSON to ``--out``. Without a GPU it says so, writes a
JSON that marks every check skipped, and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from step_cost import FAMILIES, StepCost, measure  # noqa: E402

import fan_convert  # noqa: E402
from fan_convert.train.trainer import COMPILE_CLEAN_TORCH, TrainConfig, Trainer  # noqa: E402
from fan_convert.zoo import build  # noqa: E402

THROUGHPUT_MODELS = {  # name: (bench/step_cost.py's family, input size on the GPU); 10 classes
    "TSM-ResNet-50": ("TSM-R50", 224),
    "R3D-18": ("R3D-18", 112),
    "X3D-S": ("X3D-S", 160),
    "X3D-M": ("X3D-M", 224),
}
THROUGHPUT_BATCHES = (8, 32)
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
    config = TrainConfig(frames=(4, 8), epochs=1, batch_size=8, progress=False, device=device, key_schedule="joint",
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
        trainer = Trainer(fan, data, TrainConfig(frames=(4, 8), epochs=1, batch_size=8, compile=compiled, progress=False,
                                                    key_schedule="joint"))
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


def _gb(n: int) -> float:
    return round(n / 2**30, 3)


def step_memory(cost: StepCost) -> dict[str, float | None]:
    """Peak GPU memory (GiB) of one more run of each step of ``cost`` above what was allocated
    before it (activations, gradients, temporaries: what a larger batch scales), as
    ``fan_step_mem_gb`` and ``st{t}_step_mem_gb``; None on a CPU."""
    runs = {"fan_step_mem_gb" if name == "fan" else f"{name}_step_mem_gb": run for name, run in cost.runs().items()
            if name != "reference"}
    if cost.device.type != "cuda":
        return dict.fromkeys(runs)
    memory = {}
    for key, run in runs.items():
        cost.sync()
        before = torch.cuda.memory_allocated(cost.device)
        torch.cuda.reset_peak_memory_stats(cost.device)
        run()
        cost.sync()
        memory[key] = _gb(torch.cuda.max_memory_allocated(cost.device) - before)
    return memory


def throughput(name: str, spec: str, options: dict, size: int, *, device="cuda", batch=8, amp="bf16",
               keys=KEYS, trained_at: int | None = None, warmup=2, steps=5, compile: bool = False) -> dict:
    """One FAN step over ``keys`` against one single-T step per key (the ST models' cost: the
    original architecture specialised to T, so fixed-T pools fit the clip), timed in turn
    (FAN, ST@4, ST@8, ST@16, FAN, ...) after ``warmup`` rounds (where ``compile`` compiles):
    medians of ``steps`` rounds (``bench/step_cost.py``'s measurement). Peak GPU memory:
    ``peak_mem_gb``, the most allocated at once over the row (every model and optimizer state
    resident, the largest step's activations on top), and per step (:func:`step_memory`); None
    on a CPU."""
    try:
        torch.manual_seed(0)
        plain = build(spec, **options)
    except ImportError as err:
        return {"model": name, "status": "skip", "compiled": compile, "detail": f"{err.name or err} is not installed"}
    cuda = device == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = memory = None
    try:
        cost = StepCost(plain, keys, trained_at, batch=batch, size=size, device=device, amp=amp, compile=compile)
        times = measure(cost, rounds=steps, warmup=warmup)["wall_ms"]
        peak = _gb(torch.cuda.max_memory_allocated()) if cuda else None
        memory = step_memory(cost)
        del cost
    except torch.cuda.OutOfMemoryError:
        times = None
    del plain
    if cuda:
        gc.collect()  # the models and their graphs, a failed step's included
        torch.cuda.empty_cache()
    if times is None:
        return {"model": name, "status": "skip", "compiled": compile, "size": size, "batch": batch,
                "detail": f"out of memory at batch {batch}"}
    seconds = {k: statistics.median(v) / 1000 for k, v in times.items()}
    fan_s, st_s = seconds["fan"], {t: seconds[f"st{t}"] for t in keys}
    return {"model": name, "status": "pass", "compiled": compile, "size": size, "batch": batch, "amp": amp,
            "fan_step_s": round(fan_s, 4), **{f"st{t}_step_s": round(s, 4) for t, s in st_s.items()},
            "fan_over_three_st": round(fan_s / seconds["st"], 3), "fan_clips_per_s": round(batch / fan_s, 1),
            "st8_clips_per_s": round(batch / st_s[8], 1) if 8 in st_s else None, "peak_mem_gb": peak, **memory}


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
    speed = Table(title="Training step, FAN (every key's frames) vs the single-T steps, interleaved, medians; "
                        "peak GPU memory (GiB): the row's, and each step's above what was allocated before it")
    for column in ("model", "compiled", "px", "batch", "FAN step s", "ST step s (per key)", "FAN / sum(ST)", "FAN clips/s",
                   "ST@8 clips/s", "peak GiB", "FAN step GiB", "ST step GiB (per key)"):
        speed.add_column(column)
    for row in report["throughput"]:
        where = ("yes" if row.get("compiled") else "no", str(row.get("size", "")), str(row.get("batch", "")))
        if row["status"] != "pass":
            speed.add_row(row["model"], *where, row["status"], row.get("detail", ""), *[""] * 6)
            continue
        sts = ", ".join(f"{key[2:-7]}: {row[key]}" for key in row if key.startswith("st") and key.endswith("_step_s"))
        st_memory = ", ".join(f"{key[2:-12]}: {row[key]}" for key in row if key.startswith("st") and key.endswith("_step_mem_gb"))
        speed.add_row(row["model"], *where, str(row["fan_step_s"]), sts, str(row["fan_over_three_st"]),
                      str(row["fan_clips_per_s"]), str(row["st8_clips_per_s"]), str(row.get("peak_mem_gb")),
                      str(row.get("fan_step_mem_gb")), st_memory)
    console.print(speed)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(report, indent=2))
    os.replace(temp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where to write the JSON report")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "torchrun", "compile", "throughput"],
                        help="compile: the compile check and the compiled throughput rows; throughput: every throughput row")
    parser.add_argument("--compile-batches", nargs="*", type=int, default=[8],
                        help="the batches of the compiled throughput rows (default 8; none: no compiled rows)")
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
        runs = [(False, THROUGHPUT_BATCHES)] + ([(True, tuple(args.compile_batches))] if "compile" not in args.skip else [])
        for compiled, batches in runs:
            for name, (family, size) in THROUGHPUT_MODELS.items():
                family = FAMILIES[family]
                for batch in batches:
                    if compiled and _torch_version() < COMPILE_CLEAN_TORCH:
                        report["throughput"].append({"model": name, "batch": batch, "compiled": True, "status": "skip",
                                                     "detail": f"torch < {'.'.join(map(str, COMPILE_CLEAN_TORCH))}: the frame "
                                                               "context breaks graphs"})
                        continue
                    try:
                        report["throughput"].append(throughput(name, family.spec, family.options, size, batch=batch,
                                                               keys=family.keys, trained_at=family.trained_at, compile=compiled))
                    except Exception as err:  # a row fails, the report survives
                        report["throughput"].append({"model": name, "batch": batch, "compiled": compiled, "status": "fail",
                                                     "detail": f"{type(err).__name__}: {err}"[:500]})
                    write_json(report, args.out)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_json(report, args.out)
    print_table(report)
    failed = [row["check"] for row in report["checks"] if row["status"] == "fail"]
    failed += [f"{row['model']}{' (compiled)' if row.get('compiled') else ''}" for row in report["throughput"]
               if row["status"] == "fail"]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}; {report['seconds']} s; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
