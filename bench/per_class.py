"""Where FAN loses to separate training at a low frame count: per-class top-1 at one T.

    python bench/per_class.py [--seed 0] [--frames 4]        # about 5 minutes on 2 CPU cores

Trains Plain (16 frames) and ST at ``--frames`` with bench/table1.py's recipe, fine-tunes two
FANs from Plain (1x1 weight alterations, and kernel-3 alterations with more capacity), and
prints each model's accuracy per class of the built-in benchmark at ``--frames`` frames.
Writes ``bench/results/per_class_T<frames>.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

import fan_convert
from fan_convert.data import collate_views
from fan_convert.testing import count_parameters
from fan_convert.train.evaluate import calibrate


def _load_table1():
    spec = importlib.util.spec_from_file_location("table1", Path(__file__).with_name("table1.py"))
    module = sys.modules.setdefault("table1", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


table1 = _load_table1()


@torch.no_grad()
def per_class(model, val, t: int) -> list[float]:
    model.eval()
    correct = torch.zeros(val.num_classes)
    total = torch.zeros(val.num_classes)
    for views, labels, _ in DataLoader(val, batch_size=100, collate_fn=collate_views):
        hits = (model(views[t]).argmax(-1) == labels).float()
        correct.index_add_(0, labels, hits)
        total.index_add_(0, labels, torch.ones_like(hits))
    return (100 * correct / total.clamp(min=1)).tolist()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=4, choices=table1.KEYS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, numbers meaningless")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    recipe = table1.QUICK if args.quick else table1.Recipe()
    seed, t = args.seed, args.frames
    train = table1.TemporalBenchmark("train", size=recipe.train_size, frames=table1.KEYS, seed=seed).prerender()
    val = table1.TemporalBenchmark("val", size=recipe.val_size, frames=(t,), seed=seed).prerender()

    models = {}
    for name, frames in (("Plain (16)", (16,)), (f"ST ({t})", (t,))):
        models[name] = table1.new_model(seed)
        table1.fit(models[name], train, frames, epochs=recipe.epochs, lr=recipe.lr, seed=seed, recipe=recipe)
    for name, kernel in (("FAN-finetune", 1), ("FAN-finetune, kernel 3", 3)):
        fan = fan_convert.adapt(models["Plain (16)"], frames=table1.KEYS, kernel_size=kernel)
        calibrate(fan, train, batches=recipe.calibrate_batches)
        table1.fit(fan, train, table1.KEYS, epochs=recipe.finetune_epochs, lr=recipe.finetune_lr, seed=seed + 1,
                   recipe=recipe, warmup=0.0)
        models[name] = fan
    scores = {name: per_class(model, val, t) for name, model in models.items()}

    table = Table(title=f"top-1 (%) per class at {t} frames, seed {seed}")
    table.add_column("class")
    for name in scores:
        table.add_column(name, justify="right")
    lines = [f"# Per-class top-1 (%) at {t} frames (seed {seed}, `python bench/per_class.py --frames {t}`)\n",
             "| class | " + " | ".join(scores) + " |", "|---" * (len(scores) + 1) + "|"]
    for c, name in enumerate(val.classes):
        cells = [f"{scores[m][c]:.0f}" for m in scores]
        table.add_row(name, *cells)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = [f"{sum(v) / len(v):.1f}" for v in scores.values()]
    table.add_row("[bold]mean", *means)
    lines.append("| **mean** | " + " | ".join(means) + " |")
    params = [f"{count_parameters(m):,}" for m in models.values()]
    lines.append("| parameters | " + " | ".join(params) + " |")
    Console(width=140).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / (f"per_class_T{t}" + ("_quick" if args.quick else "") + ".md")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
