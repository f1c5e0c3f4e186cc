"""What FAN costs: parameters, GFLOPs, CPU latency, training-step time, conversion time.

    python bench/cost.py [--quick] [--repeats 20] [--size 112] [--out bench/results/cost.md]

Latencies are medians of interleaved runs after warm-up, measured side by side in one process
(original vs adapted vs specialized), with torch.set_num_threads(--threads).
"""

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import fan_convert
from fan_convert.deploy.cost import gflops
from fan_convert.deploy.cost import interleaved_ms as interleaved
from fan_convert.testing import as_if_fine_tuned, count_parameters, write_video
from fan_convert.train.loss import mutual_distillation_loss
from fan_convert.zoo import build

KEYS = (4, 8, 16)
console = Console(width=130)




def _vs(value: float, reference: float) -> str:
    return f"{value:.1f} ({100 * (value / reference - 1):+.1f}%)"


def interleaved_ms(models: dict, x: torch.Tensor, repeats: int, t: int) -> dict[str, float]:
    with torch.no_grad(), fan_convert.frames(t):
        times = interleaved({name: partial(model, x) for name, model in models.items()}, rounds=repeats, warmup=2)
    return {name: statistics.median(v) for name, v in times.items()}


def markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def show(title, header, rows) -> str:
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="left" if h == header[0] else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    return markdown(title, header, rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small configuration for a smoke test")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/cost.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = "timm:resnet18" if args.quick else "timm:resnet50"
    size = 32 if args.quick else args.size
    repeats = 3 if args.quick else args.repeats
    report = [f"# Cost of FAN ({arch} as TSM, {size}x{size}, {args.threads} CPU threads)\n"]

    started = time.perf_counter()
    original = build(arch, temporal="tsm").eval()
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    paper = fan_convert.adapt(original, KEYS, targets="paper").eval()
    convert_s = time.perf_counter() - started
    default = fan_convert.adapt(original, KEYS).eval()
    for fan in (paper, default):  # as after fine-tuning: keys differ, alterations non-zero
        as_if_fine_tuned(fan)
    plain = {t: fan_convert.specialize(paper, t) for t in KEYS}

    before = paper.fan_plan.params_before
    rows = [["original", f"{before:,}", "-"]]
    for name, fan in (("adapted, paper targets", paper), ("adapted, default targets", default)):
        rows.append([name, f"{fan.fan_plan.params_after:,}", f"+{fan.fan_plan.params_added:,} (+{100 * fan.fan_plan.overhead:.2f}%)"])
    rows.append(["specialized (any T)", f"{count_parameters(plain[8]):,}", f"{count_parameters(plain[8]) - before:+,}"])
    report.append(show("Parameters", ["model", "parameters", "vs original"], rows))

    rows = [[str(t), f"{gflops(original, t, size):.2f}", f"{gflops(paper, t, size):.2f}", f"{gflops(plain[t], t, size):.2f}"] for t in KEYS]
    report.append(show(f"GFLOPs per clip (1x3xTx{size}x{size})", ["T", "original", "adapted", "specialized"], rows))

    rows = []
    for batch in (1, 8):
        for t in KEYS:
            clip = torch.randn(batch, 3, t, size, size)
            ms = interleaved_ms({"original": original, "adapted": paper, "specialized": plain[t]}, clip, repeats, t)
            reference = ms["original"]
            rows.append([f"{batch}", str(t), f"{reference:.1f}", _vs(ms["adapted"], reference), _vs(ms["specialized"], reference)])
    title = f"CPU latency, median of {repeats} interleaved runs (ms)"
    report.append(show(title, ["batch", "T", "original", "adapted", "specialized"], rows))

    report.append(training_step("fan_convert:tiny_resnet", 8, 32, max(repeats, 5)))
    if not args.quick:  # a real backbone: per-layer overheads weigh less against the convolutions
        report.append(training_step("timm:resnet18", 4, size, max(repeats // 2, 3)))
    report.append(data_loading(repeats))
    rows = [[f"build {arch} (random weights)", f"{build_s:.2f}"], [f"adapt {arch} (3 keys, paper targets)", f"{convert_s:.2f}"]]
    report.append(show("Conversion time (s)", ["step", "seconds"], rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(report))
    console.print(f"wrote {args.out}")


def training_step(spec: str, batch: int, size: int, repeats: int, **kwargs) -> str:
    """One FAN step (4+8+16-frame views of one batch) vs one ST step at each of 4, 8 and 16."""
    torch.manual_seed(0)
    make = lambda: build(spec, temporal="tsm", num_classes=10, **kwargs)  # noqa: E731
    fan = fan_convert.adapt(make(), KEYS).train()
    singles = {t: make().train() for t in KEYS}
    views = {t: torch.randn(batch, 3, t, size, size) for t in KEYS}
    labels = torch.randint(0, 10, (batch,))
    opt_fan = torch.optim.SGD(fan.parameters(), lr=0.01)
    opts = {t: torch.optim.SGD(m.parameters(), lr=0.01) for t, m in singles.items()}

    def fan_step():
        loss, _ = mutual_distillation_loss({t: fan(v) for t, v in views.items()}, labels)
        opt_fan.zero_grad()
        loss.backward()
        opt_fan.step()

    def st_step(t):
        loss = torch.nn.functional.cross_entropy(singles[t](views[t]), labels)
        opts[t].zero_grad()
        loss.backward()
        opts[t].step()

    steps = {"FAN (4+8+16)": fan_step, **{f"ST at {t}": (lambda t=t: st_step(t)) for t in KEYS}}
    ms = {name: statistics.median(v) for name, v in interleaved(steps, rounds=repeats, warmup=1).items()}
    st_total = sum(ms[f"ST at {t}"] for t in KEYS)
    rows = [[name, f"{value:.1f}"] for name, value in ms.items()]
    rows.append(["sum of the three ST steps", f"{st_total:.1f}"])
    rows.append(["FAN / sum of ST", f"{ms['FAN (4+8+16)'] / st_total:.3f}x"])
    title = f"Training step, TSM {spec.split(':')[1]}, batch {batch}, {size}x{size} (ms, median of {repeats})"
    return show(title, ["step", "ms"], rows)


def data_loading(repeats: int) -> str:
    """Producing one training sample's views from a video file: one decode for 4+8+16 (FAN) vs
    one decode per frame count (three ST runs)."""
    import tempfile

    import numpy as np

    from fan_convert.data import Item, MultiViewClips

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        rng = np.random.default_rng(0)  # about 4 s of 320x240 video
        write_video(path, (rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(96)), fps=25)
        items = [Item(path, 0)]
        loaders = {"FAN: one decode, 4+8+16 views": MultiViewClips(items, KEYS, train=True)}
        loaders |= {f"ST at {t}: one decode, one view": MultiViewClips(items, (t,), train=True) for t in KEYS}
        times = interleaved({name: partial(loader.__getitem__, 0) for name, loader in loaders.items()},
                            rounds=max(repeats // 2, 3), warmup=0)
    ms = {name: statistics.median(v) for name, v in times.items()}
    st_total = sum(v for name, v in ms.items() if name.startswith("ST"))
    rows = [[name, f"{value:.1f}"] for name, value in ms.items()]
    fan_ms = ms["FAN: one decode, 4+8+16 views"]
    rows += [["sum of the three ST loads", f"{st_total:.1f}"], ["FAN / sum of ST", f"{fan_ms / st_total:.3f}x"]]
    return show("Data loading per sample: 96-frame 320x240 H.264 clip, 112x112 crops (ms, median)", ["load", "ms"], rows)


if __name__ == "__main__":
    main()
