"""The step cost: one FAN training step (4+8+16 frames, mutual distillation) against the three
single-T steps it replaces (the specialized model at each T, cross-entropy), in one process.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/step_cost.py                # TSM-R50, R3D-18, X3D-S on CPU
    python bench/step_cost.py --families X3D-M --batch 8 32 --device cuda   # on a GPU
    python bench/step_cost.py --profile                                      # + where the extra time goes

A "FAN step" is ``Trainer.train_step`` on the converted model with the views of every key of the
same clips (forward at each T, the mutual distillation loss, backward, gradient clipping, SGD);
"three ST steps" are ``Trainer.train_step`` on ``fan_convert.specialize(fan, T)`` for each T
(forward at T, cross-entropy, backward, clipping, SGD), the same clips, the same TrainConfig.
Both are timed in turn (FAN, ST, FAN, ST, ...) after warm-up; the table gives medians of wall
time and of this process's CPU time (which a core shared with other work inflates less), and
their ratios. ``--reference`` adds a third run per model: the FAN step with the weight
alteration computed as before issue 23 (``alter_weight`` on the weight in every training forward),
interleaved with the other two, so that a before/after of that change is measured in the same process.

Writes ``bench/results/step_cost.md`` (``--out``) and a JSON beside it; ``--label`` names the run
in both (e.g. ``before`` and ``after``), and the Markdown gathers every labelled JSON it finds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: a PYTHONPATH naming another checkout of the package wins

import fan_convert  # noqa: E402
from fan_convert.context import select_key  # noqa: E402
from fan_convert.nn.alteration import _PLAIN_CONVS, WeightAlteration, alter_weight, weight_name  # noqa: E402
from fan_convert.train.trainer import TrainConfig, Trainer  # noqa: E402
from fan_convert.zoo import build  # noqa: E402

BAR = 1.05


@dataclass(frozen=True)
class Family:
    spec: str
    options: dict
    keys: tuple[int, ...]
    trained_at: int
    size: int  # pixels: the family's usual training crop, ResNet-50 at half of 224 (one CPU core)


FAMILIES = {
    "TSM-R50": Family("timm:resnet50", {"temporal": "tsm", "num_classes": 10}, (4, 8, 16), 8, 112),
    "R3D-18": Family("torchvision:r3d_18", {"num_classes": 10}, (4, 8, 16), 16, 112),
    "X3D-S": Family("pytorchvideo:x3d_s", {"model_num_class": 10}, (4, 8, 13), 13, 160),  # its head pools 13x5x5
    "X3D-M": Family("pytorchvideo:x3d_m", {"model_num_class": 10}, (4, 8, 16), 16, 224),
}
DEFAULT_FAMILIES = ("TSM-R50", "R3D-18", "X3D-S")


def _reference_forward(self: WeightAlteration, *args, **kwargs):
    """WeightAlteration.forward as before issue 23: the altered weight, ``alter_weight`` under
    autograd, in every training forward."""
    layer = self.base_layer
    weight = alter_weight(layer.weight, self.scales[str(select_key(self.keys, self.site))], self.groups)
    if type(layer) in _PLAIN_CONVS:
        return layer._conv_forward(args[0], weight, layer.bias)
    if type(layer) is torch.nn.Linear:
        return torch.nn.functional.linear(args[0], weight, layer.bias)
    return functional_call(layer, {"weight": weight}, args, kwargs)


def use_reference_alteration(model: torch.nn.Module) -> torch.nn.Module:
    """Make every :class:`WeightAlteration` of ``model`` (but attention's) compute as before issue 23."""
    for module in model.modules():
        if isinstance(module, WeightAlteration) and weight_name(module.base_layer) == "weight":
            module.forward = types.MethodType(_reference_forward, module)
    return model


class StepCost:
    """A FAN adapted from ``plain`` and its specialized model at each key, each with its own
    Trainer, and one batch of random clips at every key: ``fan_step()`` trains the FAN once,
    ``st_step(t)`` the specialized model for ``t`` frames once.

    Example::

        cost = StepCost.of(FAMILIES["X3D-S"], batch=1)
        times = measure(cost, rounds=7)
    """

    def __init__(self, plain: torch.nn.Module, keys: tuple[int, ...], trained_at: int | None, *, batch: int, size: int,
                 device: str = "cpu", amp: str = "off", reference: bool = False, seed: int = 0, compile: bool = False):
        self.keys, self.batch, self.size = tuple(keys), batch, size
        options = {"trained_at": trained_at} if trained_at else {}
        self.fan = fan_convert.adapt(plain, frames=self.keys, **options).train()
        self.st = {t: fan_convert.specialize(self.fan, t).train() for t in self.keys}
        self.reference = use_reference_alteration(fan_convert.adapt(plain, frames=self.keys, **options).train()) if reference else None
        config = dict(epochs=1, batch_size=batch, progress=False, device=device, amp=amp, key_schedule="joint",  # every view per step
                      compile=compile)
        self.fan_trainer = Trainer(self.fan, [None] * batch, TrainConfig(frames=self.keys, **config))
        self.st_trainers = {t: Trainer(m, [None] * batch, TrainConfig(frames=(t,), **config)) for t, m in self.st.items()}
        self.reference_trainer = Trainer(self.reference, [None] * batch, TrainConfig(frames=self.keys, **config)) if reference else None
        self.device = self.fan_trainer.device
        generator = torch.Generator().manual_seed(seed)
        self.views = {t: torch.randn(batch, 3, t, size, size, generator=generator) for t in self.keys}
        self.labels = torch.randint(0, 10, (batch,), generator=generator)
        if self.device.type == "cuda":
            self.views = {t: v.pin_memory() for t, v in self.views.items()}

    @classmethod
    def of(cls, family: Family, *, size: int | None = None, seed: int = 0, **options) -> "StepCost":
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = build(family.spec, **family.options)
        return cls(plain, family.keys, family.trained_at, size=size or family.size, seed=seed, **options)

    def fan_step(self) -> None:
        self.fan_trainer.train_step(self.views, self.labels)

    def reference_step(self) -> None:
        self.reference_trainer.train_step(self.views, self.labels)

    def st_step(self, t: int) -> None:
        self.st_trainers[t].train_step({t: self.views[t]}, self.labels)

    def st_steps(self) -> None:
        for t in self.keys:
            self.st_step(t)

    def runs(self) -> dict:
        """What one round times, in order: the FAN step, then each single-T step (then the
        reference FAN step)."""
        runs = {"fan": self.fan_step, **{f"st{t}": (lambda t=t: self.st_step(t)) for t in self.keys}}
        if self.reference is not None:
            runs["reference"] = self.reference_step
        return runs

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def measure(cost: StepCost, *, rounds: int = 7, warmup: int = 1) -> dict:
    """Every run of ``cost.runs()`` once per round, in turn, after ``warmup`` untimed rounds: the
    milliseconds of each timed call, wall clock and this process's CPU time, with ``st`` (the
    three single-T steps of a round, summed) added."""
    runs = cost.runs()
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for round_index in range(warmup + rounds):
        for name, run in runs.items():
            cost.sync()
            started, started_cpu = time.perf_counter(), time.process_time()
            run()
            cost.sync()
            if round_index >= warmup:
                wall[name].append(1000 * (time.perf_counter() - started))
                cpu[name].append(1000 * (time.process_time() - started_cpu))
    for kind in (wall, cpu):
        kind["st"] = [sum(values) for values in zip(*(kind[f"st{t}"] for t in cost.keys), strict=True)]
    return {"wall_ms": wall, "cpu_ms": cpu}


def summarize(name: str, cost: StepCost, times: dict, threads: int) -> dict:
    wall = {k: statistics.median(v) for k, v in times["wall_ms"].items()}
    cpu = {k: statistics.median(v) for k, v in times["cpu_ms"].items()}
    row = {"family": name, "keys": list(cost.keys), "size": cost.size, "batch": cost.batch,
           "device": str(cost.device), "threads": threads, "rounds": len(times["wall_ms"]["fan"]),
           "fan_ms": round(wall["fan"], 1), "st_ms": round(wall["st"], 1), "ratio": round(wall["fan"] / wall["st"], 3),
           **{f"st{t}_ms": round(wall[f"st{t}"], 1) for t in cost.keys},
           "fan_cpu_ms": round(cpu["fan"], 1), "st_cpu_ms": round(cpu["st"], 1), "cpu_ratio": round(cpu["fan"] / cpu["st"], 3),
           "times": {kind: {k: [round(x, 1) for x in v] for k, v in d.items()} for kind, d in times.items()}}
    if "reference" in wall:
        row.update(reference_ms=round(wall["reference"], 1), reference_ratio=round(wall["reference"] / wall["st"], 3),
                   reference_cpu_ms=round(cpu["reference"], 1), reference_cpu_ratio=round(cpu["reference"] / cpu["st"], 3))
    return row


def profile_rows(cost: StepCost, top: int = 12) -> list[dict]:
    """Self CPU time per operator in one FAN step and in the three ST steps (after a warm-up
    of each), largest FAN-minus-ST differences first."""
    from torch.profiler import ProfilerActivity, profile

    cost.fan_step()
    cost.st_steps()
    totals = {}
    for name, run in (("fan", cost.fan_step), ("st", cost.st_steps)):
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cost.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            run()
            cost.sync()
        for event in prof.key_averages():
            entry = totals.setdefault(event.key, {"op": event.key, "fan_ms": 0.0, "st_ms": 0.0, "fan_calls": 0, "st_calls": 0})
            entry[f"{name}_ms"] += event.self_cpu_time_total / 1000
            entry[f"{name}_calls"] += event.count
    rows = sorted(totals.values(), key=lambda e: -abs(e["fan_ms"] - e["st_ms"]))
    total = {"op": "(all)", "fan_ms": sum(e["fan_ms"] for e in rows), "st_ms": sum(e["st_ms"] for e in rows),
             "fan_calls": sum(e["fan_calls"] for e in rows), "st_calls": sum(e["st_calls"] for e in rows)}
    return [{k: round(v, 1) if isinstance(v, float) else v for k, v in e.items()} for e in [total, *rows[:top]]]


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("family", "keys", "size", "batch", "threads", "FAN ms", "3×ST ms", "ratio", "CPU ratio", "ref. FAN ratio",
                   f"≤ {BAR}×?"):
        table.add_column(column)
    for r in rows:
        reference = f"{r['reference_ratio']:.3f} ({r['reference_cpu_ratio']:.3f})" if "reference_ratio" in r else ""
        table.add_row(r["family"], "/".join(map(str, r["keys"])), f"{r['size']} px", str(r["batch"]), str(r["threads"]),
                      f"{r['fan_ms']:.0f}", f"{r['st_ms']:.0f}", f"{r['ratio']:.3f}", f"{r['cpu_ratio']:.3f}", reference,
                      "yes" if r["ratio"] <= BAR else "no")
    Console(width=160).print(table)


def markdown(runs: dict[str, dict]) -> str:
    lines = ["# Step cost: one FAN step vs three single-T steps (`bench/step_cost.py`)", "",
             "FAN step: `Trainer.train_step` with the views of every key (mutual distillation). 3×ST: `Trainer.train_step` on",
             "`fan_convert.specialize(fan, T)` for each T (cross-entropy). Same clips, same TrainConfig (SGD, clip 20),",
             f"interleaved in one process, medians. Bar: FAN ≤ {BAR}× the three ST steps (wall clock).", ""]
    for label, run in runs.items():
        lines += [f"## {label}", "", f"{run['device']}, torch {run['torch']}, {run['threads']} thread(s), {run['date']}."
                  + (f" {run['note']}" if run.get("note") else ""), "",
                  "| family | keys | size | batch | FAN ms | 3×ST ms | ratio | CPU-time ratio | ref. alteration ratio (CPU) | bar |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in run["rows"]:
            reference = f"{r['reference_ratio']:.3f} ({r['reference_cpu_ratio']:.3f})" if "reference_ratio" in r else "—"
            lines.append(f"| {r['family']} | {'/'.join(map(str, r['keys']))} | {r['size']} px | {r['batch']} | {r['fan_ms']:.0f} | "
                         f"{r['st_ms']:.0f} | {r['ratio']:.3f} | {r['cpu_ratio']:.3f} | {reference} | "
                         f"{'met' if r['ratio'] <= BAR else 'missed'} |")
        for name, prof in run.get("profiles", {}).items():
            lines += ["", f"Profile, {name} (self CPU ms of one FAN step vs the three ST steps; largest differences):", "",
                      "| op | FAN ms | 3×ST ms | FAN calls | ST calls |", "|---|---|---|---|---|"]
            lines += [f"| `{p['op']}` | {p['fan_ms']} | {p['st_ms']} | {p['fan_calls']} | {p['st_calls']} |" for p in prof]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--size", type=int, help="pixels for every family (default: each family's own, see FAMILIES)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--reference", action="store_true", help="also time the FAN step with the pre-issue-23 alteration")
    parser.add_argument("--profile", action="store_true", help="profile one FAN step against the three ST steps")
    parser.add_argument("--label", default="latest", help="the run's name in the Markdown (e.g. before, after)")
    parser.add_argument("--note", default="", help="a sentence for the Markdown (the machine's load, ...)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "step_cost.md")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    rows, profiles = [], {}
    for name in args.families:
        for batch in args.batch:
            cost = StepCost.of(FAMILIES[name], batch=batch, device=args.device, amp=args.amp, size=args.size, reference=args.reference)
            rows.append(summarize(name, cost, measure(cost, rounds=args.rounds, warmup=args.warmup), threads))
            print_table(rows[-1:], f"{name}, batch {batch}")
            if args.profile:
                profiles[f"{name}, batch {batch}"] = profile_rows(cost)
            del cost
    print_table(rows, f"FAN step / three ST steps — {args.device}, {threads} thread(s)")
    run = {"label": args.label, "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(0),
           "torch": torch.__version__, "threads": threads, "date": time.strftime("%Y-%m-%d %H:%M"), "note": args.note,
           "package": str(Path(fan_convert.__file__).parent), "rows": rows, "profiles": profiles}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path = args.out.with_name(f"{args.out.stem}_{args.label}.json")
    json_path.write_text(json.dumps(run, indent=1))
    runs = {}
    for path in sorted(args.out.parent.glob(f"{args.out.stem}_*.json"), key=os.path.getmtime):
        saved = json.loads(path.read_text())
        runs[saved["label"]] = saved
    args.out.write_text(markdown(runs))
    print(f"wrote {json_path} and {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
