"""The end-to-end demo on the built-in benchmark, a few minutes on 2 CPU cores.

1. train a TSM(tiny_resnet) at 16 frames with plain cross-entropy (the "pretrained" model);
2. measure its Temporal Deviation: accuracy at 4/8/16 frames and at the untrained 6/12;
3. convert it with ``fan_convert.adapt(model, frames=(4, 8, 16))``;
4. fine-tune the FAN briefly with mutual distillation (16 frames teach 8 and 4);
5. evaluate again, print the before/after table and write ``fan.safetensors`` and
   ``results.json`` to ``out_dir``.

Example::

    from fan_convert.train.demo import run_demo
    results = run_demo("runs/demo")          # or quick=True: a < 1 minute smoke run
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .evaluate import deviation_table, evaluate
from .synthetic import CLASSES, TemporalBenchmark
from .trainer import TrainConfig, Trainer

__all__ = ["DemoConfig", "run_demo", "FULL", "QUICK"]

KEYS = (4, 8, 16)
EVAL_FRAMES = (4, 6, 8, 12, 16)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and recipes of the two training stages (plain cross-entropy at 16 frames, then
    mutual distillation at 4/8/16 after conversion)."""

    train_size: int
    val_size: int
    plain_epochs: int
    fan_epochs: int
    plain_lr: float = 0.1
    fan_lr: float = 0.02
    batch_size: int = 16
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.3
    fan_train: str = "all"  # "all" parameters, or only the FAN's "banks" (norm banks and alterations)


# measured on 2 CPU cores: docs/benchmark.md
FULL = DemoConfig(train_size=3000, val_size=1200, plain_epochs=10, fan_epochs=2)
QUICK = DemoConfig(train_size=64, val_size=32, plain_epochs=1, fan_epochs=1)


def _top1(results: dict) -> dict[int, float]:
    return {t: round(r["top1"], 2) for t, r in results.items()}


def run_demo(out_dir: str, *, quick: bool = False, seed: int = 0, progress: bool = True, config: DemoConfig | None = None) -> dict:
    """Train, diagnose, convert, fine-tune and export on the built-in benchmark.

    Writes ``out_dir/fan.safetensors`` (the FAN, loadable with ``fan_convert.load``) and
    ``out_dir/results.json``; returns the same results: top-1 accuracy per frame count of the
    plain model and of the FAN, the seconds each stage took, and the configuration.
    """
    from rich.console import Console

    import fan_convert

    from ..surgery.rules import fan_layer_types
    from ..zoo.tiny import tiny_resnet
    from ..zoo.wrappers import TSM

    cfg = config or (QUICK if quick else FULL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(quiet=not progress)
    num_classes = len(CLASSES)
    times: dict[str, float] = {}

    started = time.perf_counter()
    train = TemporalBenchmark("train", size=cfg.train_size, frames=KEYS, seed=seed)
    val = TemporalBenchmark("val", size=cfg.val_size, frames=EVAL_FRAMES, seed=seed)
    train.prerender()
    val.prerender()
    times["render"] = time.perf_counter() - started

    console.print(f"[bold]1/4[/] training TSM(tiny_resnet) at 16 frames: {cfg.train_size} clips, {cfg.plain_epochs} epochs")
    torch.manual_seed(seed)
    model = TSM(tiny_resnet(num_classes=num_classes))
    plain_config = TrainConfig(
        frames=(16,), epochs=cfg.plain_epochs, batch_size=cfg.batch_size, lr=cfg.plain_lr,
        weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_epochs, seed=seed, progress=progress,
    )
    started = time.perf_counter()
    Trainer(model, train, plain_config).fit()
    times["train_plain"] = time.perf_counter() - started

    console.print("[bold]2/4[/] measuring its Temporal Deviation")
    started = time.perf_counter()
    plain = evaluate(model, val, EVAL_FRAMES, batch_size=64)
    times["eval_plain"] = time.perf_counter() - started

    console.print(f"[bold]3/4[/] converting with fan_convert.adapt(frames={KEYS}) and fine-tuning {cfg.fan_epochs} epoch(s)")
    fan = fan_convert.adapt(model, frames=KEYS)
    if cfg.fan_train == "banks":
        trainable = {id(p) for m in fan.modules() if isinstance(m, fan_layer_types("norm", "alteration")) for p in m.parameters()}
        for p in fan.parameters():
            p.requires_grad_(id(p) in trainable)
    elif cfg.fan_train != "all":
        raise ValueError(f"fan_train must be 'all' or 'banks', got {cfg.fan_train!r}")
    fan_config = TrainConfig(
        frames=KEYS, epochs=cfg.fan_epochs, batch_size=cfg.batch_size, lr=cfg.fan_lr,
        weight_decay=cfg.weight_decay, seed=seed + 1, progress=progress,
    )
    started = time.perf_counter()
    Trainer(fan, train, fan_config).fit()
    times["train_fan"] = time.perf_counter() - started

    console.print("[bold]4/4[/] evaluating the FAN")
    started = time.perf_counter()
    adapted = evaluate(fan, val, EVAL_FRAMES, batch_size=64)
    times["eval_fan"] = time.perf_counter() - started
    console.print(deviation_table({"plain (trained at 16)": plain, "FAN (4/8/16)": adapted}, keys=KEYS))

    path = out / "fan.safetensors"
    fan_convert.save(fan, path, arch="fan_convert:tiny_resnet", arch_kwargs={"temporal": "tsm", "num_classes": num_classes},
                     overwrite=True)
    results = {
        "plain": _top1(plain),
        "fan": _top1(adapted),
        "gain": {t: round(adapted[t]["top1"] - plain[t]["top1"], 2) for t in EVAL_FRAMES},
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "config": {**asdict(cfg), "quick": quick, "seed": seed, "keys": list(KEYS), "classes": list(CLASSES)},
        "parameters": {"plain": sum(p.numel() for p in model.parameters()), "fan": sum(p.numel() for p in fan.parameters())},
        "checkpoint": str(path),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    console.print(f"wrote {path} and {out / 'results.json'} ({sum(times.values()):.0f} s in all)")
    return results
