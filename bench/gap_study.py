"""Where does FAN-finetune's 4-frame gap to ST come from? Controls on the built-in benchmark (issue 11).

    python bench/gap_study.py --seeds 0          # today's regime, every control (~25 min on 2 idle cores)
    python bench/gap_study.py --quick            # a smoke run, numbers meaningless
    python bench/gap_study.py --device cuda --seeds 0 1 2

Every row starts from the same Plain@16 model of ``bench/table1.py`` (same data, seeds, recipe)
and is evaluated at every frame count; the study reads 4 / 8 / 16. Reference rows
(``plain``, ``st``, ``fan-finetune``, ``no-wa``) are rerun in the same process so that the
controls compare like with like on one device (``st4``: only ST's 4-frame model, a cheaper anchor).

- ce4-short      starting point: Plain fine-tuned with cross-entropy at 4 frames only, for
                 FAN-finetune's budget (2 epochs, lr 0.03): a fully private 4-frame model
                 started from the 16-frame solution;
- ce4-long       the same with ST's schedule (10 epochs, lr 0.1, warm-up): the 16-frame start
                 with ST's budget;
- private-stem, private-stage1, private-stage2, private-stage3, private-all
                 what sharing costs, and where: FAN-finetune with one part's weights (norm banks
                 and alterations included) copied once per key, so that part is not shared;
- lambda-0.5, lambda-2   the distillation weight (the paper's is 1);
- no-calib       FAN-finetune without recomputing each key's norm statistics first;
- lr-0.01        FAN-finetune at TrainConfig's default lr 0.01 instead of 0.03.

Per-seed results are kept in ``<out>/gap_seeds/`` (finished rows too), so an interrupted run
continues where it stopped. The summary goes to ``<out>/gap_study.md`` and ``gap_study.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import table1  # noqa: E402
from table1 import EVAL_FRAMES, KEYS, QUICK, Recipe, console  # noqa: E402

import fan_convert  # noqa: E402
from fan_convert.context import select_key  # noqa: E402
from fan_convert.data import TemporalBenchmark  # noqa: E402
from fan_convert.nn.counting import count_parameters  # noqa: E402
from fan_convert.train.evaluate import calibrate  # noqa: E402

PARTS = {"all": ("stem", "stages.0", "stages.1", "stages.2", "fc"), "stem": ("stem",), "stage1": ("stages.0",),
         "stage2": ("stages.1",), "stage3": ("stages.2",)}
ROWS = ("plain", "st", "st4", "fan-finetune", "ce4-short", "ce4-long", *(f"private-{p}" for p in PARTS), "no-calib", "lr-0.01",
        "lambda-0.5", "lambda-2", "no-wa")  # the order they run in
LABELS = {
    "plain": "Plain (trained at 16)", "st": "ST (one model per T)", "st4": "ST's 4-frame model alone",
    "fan-finetune": "FAN-finetune (table 1 recipe)",
    "no-wa": "FAN-finetune w/o Weight Alteration",
    "ce4-short": "Plain + CE at 4 only, FAN's budget (private, from Plain)",
    "ce4-long": "Plain + CE at 4 only, ST's schedule (private, from Plain)",
    **{f"private-{p}": f"FAN-finetune, {p} private per key" for p in PARTS},
    "lambda-0.5": "FAN-finetune, λ = 0.5", "lambda-2": "FAN-finetune, λ = 2",
    "no-calib": "FAN-finetune without calibration first", "lr-0.01": "FAN-finetune at lr 0.01",
}


class PrivateCopies(nn.Module):
    """One deep copy of ``module`` per key; the active frame count picks the copy (nothing shared)."""

    def __init__(self, module: nn.Module, keys=KEYS):
        super().__init__()
        self.keys = tuple(keys)
        self.copies = nn.ModuleDict({str(k): copy.deepcopy(module) for k in self.keys})

    def forward(self, *args, **kwargs):
        return self.copies[str(select_key(self.keys))](*args, **kwargs)


def make_private(fan: nn.Module, part: str) -> nn.Module:
    """Replace the named parts of the adapted TSM(tiny_resnet) backbone with per-key copies."""
    backbone = fan.backbone
    for name in PARTS[part]:
        parent, _, child = name.rpartition(".")
        owner = backbone.get_submodule(parent) if parent else backbone
        setattr(owner, child, PrivateCopies(getattr(owner, child)))
    return fan


def run_seed(seed: int, recipe: Recipe, rows: list[str], done: dict, save) -> dict:
    train = TemporalBenchmark("train", size=recipe.train_size, frames=KEYS, seed=seed).prerender()
    val = TemporalBenchmark("val", size=recipe.val_size, frames=EVAL_FRAMES, seed=seed).prerender()
    out = dict(done)
    todo = [r for r in rows if r not in out]
    if not todo:
        return out
    full, tune = recipe.epochs, recipe.finetune_epochs

    def record(row, model, seconds, extra=None):
        out[row] = {"top1": table1.top1(model, val), "seconds": round(seconds, 1), "params": count_parameters(model), **(extra or {})}
        console.print(f"  seed {seed} {row:<15} {table1._fmt_row(out[row]['top1'])}  {seconds:6.0f} s")
        save(out)

    st = {}
    for t in sorted(KEYS, reverse=True) if "st" in todo else (max(KEYS), min(KEYS)) if "st4" in todo else (max(KEYS),):
        model = table1.new_model(seed, recipe)
        seconds = table1.fit(model, train, (t,), epochs=full, lr=recipe.lr, seed=seed, recipe=recipe)
        st[t] = (model, seconds)
    plain = st[max(KEYS)][0]
    if "plain" in todo:
        record("plain", plain, st[max(KEYS)][1])
    if "st4" in todo:
        record("st4", st[min(KEYS)][0], st[min(KEYS)][1])
    if "st" in todo:
        per_model = {t: table1.top1(m, val) for t, (m, _) in st.items()}
        own = {t: per_model[fan_convert.nearest_key(t, KEYS)][t] for t in EVAL_FRAMES}
        out["st"] = {"top1": own, "seconds": round(sum(s for _, s in st.values()), 1), "per_model": per_model,
                     "params": sum(count_parameters(m) for m, _ in st.values())}
        console.print(f"  seed {seed} {'st':<15} {table1._fmt_row(own)}")
        save(out)
    for row in todo:
        if row in ("plain", "st", "st4"):
            continue
        if row.startswith("ce4-"):
            epochs, lr, warmup = (tune, recipe.finetune_lr, 0.0) if row == "ce4-short" else (full, recipe.lr, recipe.warmup_epochs)
            model = copy.deepcopy(plain)
            record(row, model, table1.fit(model, train, (4,), epochs=epochs, lr=lr, seed=seed + 1, recipe=recipe, warmup=warmup))
            continue
        fan = fan_convert.adapt(plain, frames=KEYS, **({"targets": None} if row == "no-wa" else {}))
        if row.startswith("private-"):
            make_private(fan, row.removeprefix("private-"))
        started = time.perf_counter()
        if recipe.finetune_calibrate and row != "no-calib":
            calibrate(fan, train, batches=recipe.calibrate_batches, device=table1.DEVICE)
        weight = {"lambda-0.5": 0.5, "lambda-2": 2.0}.get(row, 1.0)
        lr = 0.01 if row == "lr-0.01" else recipe.finetune_lr
        table1.fit(fan, train, KEYS, epochs=tune, lr=lr, seed=seed + 1, recipe=recipe, warmup=0.0, distill_weight=weight)
        record(row, fan, time.perf_counter() - started)
    return out


def markdown(per_seed: dict, rows: list[str], recipe: Recipe, regime: str) -> str:
    st = "st" if any("st" in r for r in per_seed.values()) else "st4" if any("st4" in r for r in per_seed.values()) else None
    lines = [f"# Where the 4-frame gap comes from (regime `{regime}`, {table1.DEVICE})", "",
             f"Top-1 (%) at the trained frame counts, mean ± std over seeds {', '.join(map(str, sorted(per_seed)))}; "
             f"Δ is the paired per-seed difference to the `{st}` row. "
             f"Generated by `python bench/gap_study.py` with {json.dumps(asdict(recipe))}.", "",
             "| row | 4 | 8 | 16 | Δ4 | Δ8 | Δ16 | params | seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        runs = {s: r[row] for s, r in per_seed.items() if row in r}
        if not runs:
            continue

        def stat(values):
            return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"
        cells = [stat([r["top1"][t] for r in runs.values()]) for t in KEYS]
        deltas = []
        for t in KEYS:
            if st == "st4" and t != min(KEYS):  # the 4-frame model is only an anchor at 4 frames
                deltas.append("–")
                continue
            pairs = [runs[s]["top1"][t] - per_seed[s][st]["top1"][t] for s in runs if st and st in per_seed[s]]
            deltas.append(f"{stat(pairs)}" if pairs else "–")
        params = next(iter(runs.values()))["params"]
        lines.append(f"| {LABELS[row]} | {' | '.join(cells)} | {' | '.join(deltas)} | {params:,} | {len(runs)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--regime", choices=tuple(table1.REGIMES), default="today")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, numbers meaningless")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-train", action="store_true", help="only summarise the rows already on disk")
    args = parser.parse_args(argv)
    table1.DEVICE = args.device
    torch.set_num_threads(args.threads)
    regime = table1.REGIMES[args.regime]
    recipe = replace(QUICK, **{k: v for k, v in regime.items() if k in ("widths", "blocks")}) if args.quick else replace(Recipe(), **regime)
    stored = table1._json_recipe(asdict(recipe))
    rows = [r for r in ROWS if r in args.rows]
    stem = "gap_study" + ("" if args.regime == "today" else f"_{args.regime}")
    stem += (f"_{args.device}" if args.device != "cpu" else "") + ("_quick" if args.quick else "")
    seeds_dir = args.out / "gap_seeds"
    seeds_dir.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for seed in args.seeds:
        path = seeds_dir / f"{stem}_seed{seed}.json"
        done = {}
        if path.exists():
            saved = json.loads(path.read_text())
            if table1._json_recipe(saved["recipe"]) == stored:
                done = {r: table1._int_keys(v) for r, v in saved["rows"].items()}
        console.print(f"[bold]seed {seed}[/]: {', '.join(r for r in rows if r not in done) or 'all rows on disk'}")

        def save(out, path=path):
            table1._write(path, json.dumps({"recipe": stored, "rows": out}, indent=1))

        if args.no_train:
            if done:
                per_seed[seed] = done
            continue
        per_seed[seed] = run_seed(seed, recipe, rows, done, save)
        save(per_seed[seed])
    text = markdown(per_seed, rows, recipe, args.regime)
    table1._write(args.out / f"{stem}.md", text)
    table1._write(args.out / f"{stem}.json", json.dumps({"recipe": stored, "device": args.device, "per_seed": per_seed}, indent=1))
    console.print(text)
    return per_seed


if __name__ == "__main__":
    main()
