"""The end-to-end demo on the built-in benchmark, in about a minute on 2 CPU cores.

1. the plain model: TSM(tiny_resnet) trained at 16 frames with plain cross-entropy. By default
   it is the shipped checkpoint :data:`PLAIN_CHECKPOINT` (made by ``bench/demo_checkpoint.py``
   with :func:`train_plain`, its SHA-256 checked at load); ``from_scratch=True`` trains it here;
2. its Temporal Deviation: accuracy at 4/8/16 frames and at the untrained 6/12;
3. ``fan_convert.adapt(model, frames=(4, 8, 16))``;
4. a short fine-tune, one frame count per step (4, 8, 16, 4, ...: the trainer's default schedule);
5. evaluation again, the before/after table, ``fan.safetensors`` and ``results.json`` in ``out_dir``.

Every accuracy shown is measured in the run. Example::

    from fan_convert.train.demo import run_demo
    results = run_demo("runs/demo")          # quick=True: a smaller smoke run; from_scratch=True: step 1 too
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.synthetic import CLASSES, TemporalBenchmark
from ..io.atomic import OutputError, atomic_write
from .evaluate import deviation_table, evaluate
from .progress import format_seconds
from .trainer import TrainConfig, Trainer

__all__ = ["DemoConfig", "run_demo", "train_plain", "load_plain", "save_plain", "FULL", "QUICK", "PLAIN_CHECKPOINT"]

KEYS = (4, 8, 16)
EVAL_FRAMES = (4, 6, 8, 12, 16)
OUTPUTS = ("fan.safetensors", "results.json")
PLAIN_CHECKPOINT = Path(__file__).with_name("demo_plain16.safetensors")
PLAIN_SHA256 = "e16d2b25f7f89ace1682ba36adf66baaa645ae04a87092804ae3f1ef6a46d339"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and recipes of the two training stages (plain cross-entropy at 16 frames, then
    fine-tuning at 4/8/16 after conversion, with ``fan_schedule``: one frame count per step by default)."""

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
    fan_schedule: str = "rotate"  # the fine-tune's key schedule ("joint": the paper's, with 1/3 the epochs)


# measured on 2 CPU cores: docs/benchmark.md; the shipped plain checkpoint is FULL's plain stage at seed 0
# fan_epochs: one frame count per step, so 6 epochs cost what 2 joint epochs do
FULL = DemoConfig(train_size=3000, val_size=1200, plain_epochs=10, fan_epochs=6)
QUICK = DemoConfig(train_size=320, val_size=320, plain_epochs=1, fan_epochs=3, fan_lr=0.005)  # 60 steps: a gentler lr


def plain_architecture() -> nn.Module:
    """The demo's video model before conversion: TSM(tiny_resnet) for the 16 benchmark classes."""
    from ..zoo.tiny import tiny_resnet
    from ..zoo.wrappers import TSM

    return TSM(tiny_resnet(num_classes=len(CLASSES)))


def plain_recipe(cfg: DemoConfig, seed: int) -> dict:
    """What defines the plain model: recorded in the checkpoint, printed by the demo."""
    return {"train_size": cfg.train_size, "epochs": cfg.plain_epochs, "lr": cfg.plain_lr, "batch_size": cfg.batch_size,
            "weight_decay": cfg.weight_decay, "warmup_epochs": cfg.warmup_epochs, "seed": seed, "frames": 16}


def train_plain(train: TemporalBenchmark, cfg: DemoConfig, seed: int, progress: bool = True) -> nn.Module:
    """Step 1 from scratch: TSM(tiny_resnet) trained at 16 frames with cross-entropy on ``train``."""
    torch.manual_seed(seed)
    model = plain_architecture()
    config = TrainConfig(
        frames=(16,), epochs=cfg.plain_epochs, batch_size=cfg.batch_size, lr=cfg.plain_lr,
        weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_epochs, seed=seed, progress=progress, key_schedule="joint",
    )  # one frame count: "joint" is plain cross-entropy, as the shipped checkpoint was trained
    Trainer(model, train, config).fit()
    return model


def save_plain(model: nn.Module, path: str | Path, recipe: dict, overwrite: bool = False) -> str:
    """Write the plain model's state dict with its recipe; returns the file's SHA-256."""
    from safetensors.torch import save_file

    metadata = {"recipe": json.dumps(recipe, sort_keys=True), "classes": json.dumps(list(CLASSES)),
                "architecture": "TSM(tiny_resnet(num_classes=16))", "made_by": "bench/demo_checkpoint.py",
                "trained_on": json.dumps({"device": str(next(model.parameters()).device), "torch": torch.__version__,
                                          "threads": torch.get_num_threads()})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = atomic_write(path, lambda temp: save_file(state, temp, metadata=metadata), overwrite)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_plain(path: str | Path = PLAIN_CHECKPOINT, sha256: str | None = PLAIN_SHA256) -> tuple[nn.Module, dict]:
    """The shipped plain model and its recipe, after checking the file's SHA-256.

    Raises:
        ValueError: the file is missing, damaged, replaced, or was made for other classes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    fix = "reinstall fan-convert, regenerate it with `python bench/demo_checkpoint.py`, or run `fan-convert demo --from-scratch`"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read the demo's plain checkpoint '{path}' ({err.strerror or err}); {fix}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(f"the demo's plain checkpoint '{path}' has SHA-256 {digest[:12]}…, not the recorded "
                         f"{sha256[:12]}… (damaged or replaced); {fix}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        state = load(data)
        recipe = json.loads(metadata["recipe"])
        classes = json.loads(metadata["classes"])
    except (SafetensorError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"the demo's plain checkpoint '{path}' is not a plain-model file ({err}); {fix}") from None
    if classes != list(CLASSES):
        raise ValueError(f"the demo's plain checkpoint '{path}' was trained for other benchmark classes; {fix}")
    model = plain_architecture()
    model.load_state_dict(state)
    return model, {**recipe, "sha256": digest, "path": str(path)}


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite an earlier run's results (before any work is done)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out-dir '{out}' is a file; give a folder for the demo's results")
    earlier = [name for name in OUTPUTS if (out / name).exists()]
    if earlier and not force:
        raise OutputError(f"'{out}' holds an earlier demo run ({', '.join(earlier)}); pass --force to overwrite it "
                          "or choose another --out-dir")
    out.mkdir(parents=True, exist_ok=True)


def _top1(results: dict) -> dict[int, float]:
    return {t: round(r["top1"], 2) for t, r in results.items()}


def _row(results: dict) -> str:
    return ", ".join(f"{t} frames {r['top1']:.1f}%" for t, r in results.items())


def run_demo(out_dir: str, *, quick: bool = False, seed: int = 0, progress: bool = True, config: DemoConfig | None = None,
             from_scratch: bool = False, force: bool = False) -> dict:
    """Diagnose, convert, fine-tune and export on the built-in benchmark (and train the plain
    model first with ``from_scratch=True``).

    Writes ``out_dir/fan.safetensors`` (the FAN, loadable with ``fan_convert.load``) and
    ``out_dir/results.json``; returns the same results: top-1 accuracy per frame count of the
    plain model and of the FAN, the seconds each stage took, where the plain model came from and
    the configuration. Refuses (``OutputError``) to overwrite an earlier run unless ``force``.
    """
    from rich.console import Console

    from ..io import save
    from ..nn.counting import count_parameters
    from ..surgery import adapt
    from ..surgery.rules import fan_layer_types

    cfg = config or (QUICK if quick else FULL)
    out = Path(out_dir)
    check_out_dir(out, force)
    console = Console(quiet=not progress, highlight=False, soft_wrap=True)
    times: dict[str, float] = {}
    run_started = time.perf_counter()

    def done(stage: str, started: float) -> None:
        times[stage] = time.perf_counter() - started
        console.print(f"    ({format_seconds(times[stage])})")

    console.print(f"rendering {cfg.train_size} training and {cfg.val_size} validation clips of the built-in temporal "
                  f"benchmark ({len(CLASSES)} classes, 32 frames of 32x32)")
    started = time.perf_counter()
    train = TemporalBenchmark("train", size=cfg.train_size, frames=KEYS, seed=seed).prerender()
    val = TemporalBenchmark("val", size=cfg.val_size, frames=EVAL_FRAMES, seed=seed).prerender()
    done("render", started)

    started = time.perf_counter()
    if from_scratch:
        recipe = plain_recipe(cfg, seed)
        console.print(f"[bold]1/5[/] training the plain model, TSM(tiny_resnet), at 16 frames: {cfg.train_size} clips, "
                      f"{cfg.plain_epochs} epoch{'s' * (cfg.plain_epochs != 1)}")
        model = train_plain(train, cfg, seed, progress)
        try:
            shipped, _ = load_plain()
            recipe["equals_shipped_checkpoint"] = same_weights(model, shipped)
        except ValueError:
            recipe["equals_shipped_checkpoint"] = None
        source = {"trained_here": True, **recipe}
        done("train_plain", started)
    else:
        model, source = load_plain()
        source["trained_here"] = False
        console.print(f"[bold]1/5[/] the plain model, TSM(tiny_resnet) trained at 16 frames ({source['epochs']} epochs on "
                      f"{source['train_size']} clips, seed {source['seed']}): loaded {source['path']} (SHA-256 checked; "
                      "bench/demo_checkpoint.py made it, --from-scratch trains it here)")
        done("load_plain", started)

    console.print(f"[bold]2/5[/] measuring its Temporal Deviation on {cfg.val_size} validation clips")
    started = time.perf_counter()
    plain = evaluate(model, val, EVAL_FRAMES, batch_size=64)
    console.print(f"    plain top-1: {_row(plain)}")
    done("eval_plain", started)

    started = time.perf_counter()
    fan = adapt(model, frames=KEYS)
    added = count_parameters(fan) - count_parameters(model)
    console.print(f"[bold]3/5[/] converted with fan_convert.adapt(model, frames={KEYS}): {added:+,} parameters "
                  f"({100 * added / count_parameters(model):+.1f}%)")
    if cfg.fan_train == "banks":
        trainable = {id(p) for m in fan.modules() if isinstance(m, fan_layer_types("norm", "alteration")) for p in m.parameters()}
        for p in fan.parameters():
            p.requires_grad_(id(p) in trainable)
    elif cfg.fan_train != "all":
        raise ValueError(f"fan_train must be 'all' or 'banks', got {cfg.fan_train!r}")
    times["convert"] = time.perf_counter() - started

    how = ("one frame count per step" if cfg.fan_schedule != "joint" else "mutual distillation")
    console.print(f"[bold]4/5[/] fine-tuning the FAN ({how}) at {'/'.join(map(str, KEYS))} frames: "
                  f"{cfg.train_size} clips, {cfg.fan_epochs} epoch{'s' * (cfg.fan_epochs != 1)}")
    fan_config = TrainConfig(
        frames=KEYS, epochs=cfg.fan_epochs, batch_size=cfg.batch_size, lr=cfg.fan_lr,
        weight_decay=cfg.weight_decay, seed=seed + 1, progress=progress, key_schedule=cfg.fan_schedule,
    )
    started = time.perf_counter()
    Trainer(fan, train, fan_config).fit()
    done("train_fan", started)

    console.print("[bold]5/5[/] evaluating the FAN")
    started = time.perf_counter()
    adapted = evaluate(fan, val, EVAL_FRAMES, batch_size=64)
    done("eval_fan", started)
    console.print(deviation_table({"plain (trained at 16)": plain, "FAN (4/8/16)": adapted}, keys=KEYS))

    path = save(fan, out / OUTPUTS[0], arch="fan_convert:tiny_resnet",
                            arch_kwargs={"temporal": "tsm", "num_classes": len(CLASSES)}, overwrite=True)
    times["total"] = time.perf_counter() - run_started
    results = {
        "plain": _top1(plain),
        "fan": _top1(adapted),
        "gain": {t: round(adapted[t]["top1"] - plain[t]["top1"], 2) for t in EVAL_FRAMES},
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "plain_model": source,
        "config": {**asdict(cfg), "quick": quick, "seed": seed, "keys": list(KEYS), "classes": list(CLASSES)},
        "parameters": {"plain": count_parameters(model), "fan": count_parameters(fan)},
        "checkpoint": str(path),
    }
    text = json.dumps(results, indent=2)
    atomic_write(out / OUTPUTS[1], lambda temp: Path(temp).write_text(text), overwrite=True)
    console.print(f"wrote {path} and {out / OUTPUTS[1]} ({format_seconds(times['total'])} in all)")
    return results
