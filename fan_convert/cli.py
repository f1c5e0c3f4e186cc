"""The ``fan-convert`` command line.

    fan-convert pretrained.pt --frames 4 8 16 --arch timm:resnet50 --temporal tsm --num-classes 174
    fan-convert specialize model.safetensors --frames 8 -o plain8.safetensors
    fan-convert inspect timm:resnet50 --targets paper
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn pretrained video models into Frame Adaptive Networks.")
console = Console(soft_wrap=True)

_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, OSError)
_MULTI_VALUE = {"--frames", "-f", "--targets", "--exclude", "--allow-missing", "--allow-unexpected"}


def _fail(message: str) -> None:
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def _targets(values: List[str]):
    if values == ["none"]:
        return None
    if len(values) == 1 and values[0] in ("default", "paper"):
        return values[0]
    return values


def _arch_kwargs(num_classes: Optional[int], temporal: Optional[str], pairs: Optional[List[str]], spec: str) -> dict:
    kwargs: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arch-kwarg expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if temporal is not None:
        kwargs["temporal"] = temporal
    return kwargs


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from . import __version__

        console.print(f"fan-convert {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., help="Pretrained checkpoint: .safetensors, .pt/.pth/.pth.tar state dict."),
    frames: List[int] = typer.Option(..., "--frames", "-f", help="Frame counts to specialise for, e.g. --frames 4 8 16."),
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Architecture spec, e.g. timm:resnet50, pytorchvideo:slow_r50."),
    temporal: Optional[str] = typer.Option(None, "--temporal", help="For timm: backbones: tsn (default) or tsm."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier size of the checkpoint."),
    arch_kwarg: Optional[List[str]] = typer.Option(None, "--arch-kwarg", help="Extra architecture argument KEY=VALUE (JSON value)."),
    trained_at: Optional[int] = typer.Option(None, "--trained-at", help="Frame count the checkpoint was trained at (default: max of --frames)."),
    targets: List[str] = typer.Option(["default"], "--targets", help="'default', 'paper', 'none' or module-name patterns."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Module-name patterns to leave untouched."),
    kernel_size: int = typer.Option(1, "--kernel-size", help="Alteration kernel (1 is foldable)."),
    allow_missing: Optional[List[str]] = typer.Option(None, "--allow-missing", help="Model keys the checkpoint may lack (e.g. a new head)."),
    allow_unexpected: Optional[List[str]] = typer.Option(None, "--allow-unexpected", help="Checkpoint keys to ignore."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output .safetensors (default: CHECKPOINT.fan.safetensors)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled whole nn.Module (runs code from the file)."),
    input_size: int = typer.Option(224, "--input-size", help="Spatial size used to count GFLOPs per key."),
) -> None:
    """Convert a pretrained checkpoint into a FAN checkpoint (.safetensors with manifest)."""
    from . import adapt
    from .io import check_output, load_into, read_checkpoint, save
    from .surgery import check_frames
    from .zoo import build

    started = time.perf_counter()
    try:
        keys = check_frames(frames)
        if arch is None:
            raise ValueError("--arch is required: name the checkpoint's architecture, e.g. --arch timm:resnet50 --temporal tsm")
        output = output or checkpoint.with_name(checkpoint.name.split(".")[0] + ".fan.safetensors")
        check_output(output, overwrite=force)
        kwargs = _arch_kwargs(num_classes, temporal, arch_kwarg, arch or "")
        ckpt = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = build(arch, **kwargs)
        notes = ckpt.notes + load_into(model, ckpt.tensors, allow_missing=tuple(allow_missing or ()),
                                       allow_unexpected=tuple(allow_unexpected or ()))
        model.eval()
        fan = adapt(model, keys, targets=_targets(targets), exclude=exclude, kernel_size=kernel_size,
                    trained_at=trained_at, inplace=True)
        written = save(fan, output, arch=arch, arch_kwargs=kwargs, overwrite=force,
                       extra={"source": {"checkpoint": checkpoint.name, "notes": notes}})
    except _ERRORS as err:
        _fail(str(err).strip("'\""))
    _summary(fan, notes, written, input_size, time.perf_counter() - started)


def _gflops(meta_model, t: int, input_size: int) -> float | None:
    """GFLOPs of one (1, 3, t, size, size) clip, counted on the meta device (no real compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import frames

    clip = torch.zeros(1, 3, t, input_size, input_size, device="meta")
    try:
        with torch.no_grad(), frames(t), FlopCounterMode(display=False) as counter:
            meta_model(clip)
        return counter.get_total_flops() / 1e9
    except Exception:  # a model that does not take (B, C, T, H, W) clips at this size
        return None


def _summary(fan, notes, written: Path, input_size: int, seconds: float) -> None:
    conversion = fan.fan_plan
    table = Table(title=f"{written} — FAN at frames {list(conversion.frames)}, trained at {conversion.trained_at}")
    table.add_column("what")
    table.add_column("count / value", justify="right")
    by_class = Counter(s.original for s in conversion.select("norm"))
    for name, count in sorted(by_class.items()):
        table.add_row(f"norms specialised: {name}", str(count))
    table.add_row("weight alterations", str(len(conversion.select("alteration"))))
    fixed = conversion.select("fixed_t")
    table.add_row("fixed-T sites rewritten", str(len(fixed)))
    for site in conversion.select(status="unsupported"):
        table.add_row(f"[yellow]left alone: {site.path or '<model>'} ({site.original})", site.reason)
    table.add_row("parameters", f"{conversion.params_before:,} -> {conversion.params_after:,} (+{100 * conversion.overhead:.2f}%)")
    meta_model = copy.deepcopy(fan).to("meta")
    for t in conversion.frames:
        flops = _gflops(meta_model, t, input_size)
        table.add_row(f"GFLOPs at {t} frames ({input_size}x{input_size})", "n/a" if flops is None else f"{flops:.2f}")
    table.add_row("analysis", conversion.analysis)
    table.add_row("time", f"{seconds:.1f} s")
    console.print(table)
    for note in notes:
        console.print(f"checkpoint: {note}", highlight=False)


@app.command()
def specialize(
    model_file: Path = typer.Argument(..., help="A FAN .safetensors written by `fan-convert convert`."),
    frames: int = typer.Option(..., "--frames", "-f", help="The frame count to specialise for."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output .safetensors (default: MODEL.plainT.safetensors)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    keep_unfoldable: bool = typer.Option(False, "--keep-unfoldable", help="Keep kernel>1 alterations as modules instead of refusing."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Allow a module.path:factory architecture recorded in the file."),
) -> None:
    """Fold a FAN checkpoint into the plain architecture for one frame count."""
    from .io import check_output, load, save_specialized

    try:
        output = output or model_file.with_name(model_file.name.split(".")[0] + f".plain{frames}.safetensors")
        check_output(output, overwrite=force)
        fan = load(model_file, trust_factory=trust_factory)
        written = save_specialized(fan, frames, output, overwrite=force, unfoldable="keep" if keep_unfoldable else "error")
    except _ERRORS as err:
        _fail(str(err).strip("'\""))
    console.print(f"wrote {written}: the plain architecture for {frames} frames "
                  f"({sum(p.numel() for p in fan.parameters()) - fan.fan_plan.params_added:,} parameters)", highlight=False)


@app.command()
def inspect(
    target: str = typer.Argument("timm:resnet50", help="An architecture spec (dry run) or a FAN .safetensors file."),
    frames: List[int] = typer.Option([4, 8, 16], "--frames", "-f", help="Frame counts to specialise for."),
    temporal: Optional[str] = typer.Option(None, "--temporal", help="For timm: backbones: tsn (default) or tsm."),
    targets: List[str] = typer.Option(["default"], "--targets", help="'default', 'paper', 'none' or module-name patterns."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Module-name patterns to leave untouched."),
    kernel_size: int = typer.Option(1, "--kernel-size", help="Alteration kernel (1 is foldable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    all_sites: bool = typer.Option(False, "--all", help="List every site, not only the converted ones."),
) -> None:
    """Show what converting an architecture would do, or what a FAN file holds, per site."""
    from .io import read_manifest
    from .surgery import ConversionPlan, plan
    from .zoo import build

    try:
        if target.endswith(".safetensors") or Path(target).is_file():
            conversion = ConversionPlan.from_dict(read_manifest(target)["plan"])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = build(target, **({"temporal": temporal} if temporal else {}))
            conversion = plan(model, frames, targets=_targets(targets), exclude=exclude, kernel_size=kernel_size)
    except _ERRORS as err:
        _fail(str(err).strip("'\""))
    if as_json:
        sys.stdout.write(conversion.to_json(indent=2) + "\n")
        return
    console.print(conversion.table(status=None if all_sites else "converted"))
    console.print(str(conversion), highlight=False)


def _dataset(data: str, list_file: Optional[Path], classes: Optional[Path], frames, *, train: bool, crop: int, resize: int,
             split: str = "train", flip: bool = False):
    """A multi-view dataset from a folder of videos per class, an annotation list, or 'builtin'."""
    from .train.data import MultiViewClips, annotation_list, video_folder

    if data == "builtin":
        from .train.synthetic import TemporalBenchmark

        return TemporalBenchmark(split=split, frames=frames, train=train)
    if list_file is not None:
        items, _ = annotation_list(list_file, root=data, classes_file=classes)
    else:
        items, _ = video_folder(data)
    return MultiViewClips(items, frames, train=train, crop_size=crop, resize=resize, flip=flip)


def _load_any(path: Path, arch: Optional[str], kwargs: dict, trust_pickle: bool, trust_factory: bool):
    """A FAN or specialized file (rebuilt from its manifest), or a plain checkpoint with --arch."""
    from .io import load, load_into, read_checkpoint
    from .zoo import build

    if path.suffix == ".safetensors":
        from .io import FanFileError, read_manifest

        try:
            read_manifest(path)
            return load(path, trust_factory=trust_factory)
        except FanFileError as err:
            if "no fan-convert manifest" not in str(err):
                raise
    if arch is None:
        raise ValueError(f"'{path}' is a plain checkpoint: give its architecture with --arch (e.g. --arch torchvision:r3d_18)")
    model = build(arch, **kwargs)
    load_into(model, read_checkpoint(path, trust_pickle=trust_pickle).tensors)
    return model.eval()


@app.command()
def train(
    model_file: Path = typer.Argument(..., help="A FAN .safetensors (from `fan-convert convert`)."),
    data: str = typer.Option(..., "--data", help="Videos root (root/<class>/*.mp4), the root of --list paths, or 'builtin'."),
    list_file: Optional[Path] = typer.Option(None, "--list", help="Annotation list: 'path label' per line."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class-name file for --list labels."),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(0.01, "--lr"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw"),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine or step"),
    warmup: float = typer.Option(0.0, "--warmup", help="Warm-up epochs."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    distill_weight: float = typer.Option(1.0, "--lambda", help="Weight of the distillation terms."),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 (CUDA)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes."),
    crop: int = typer.Option(112, "--crop", help="Spatial crop size."),
    resize: int = typer.Option(128, "--resize", help="Short side after decoding."),
    flip: bool = typer.Option(False, "--flip", help="Random horizontal flips (not for left/right classes)."),
    out_dir: Path = typer.Option(Path("runs/fan"), "--out-dir", help="Checkpoints, log.jsonl and the trained model."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Steps between checkpoints (0: each epoch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT_DIR/last.safetensors."),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Allow a module.path:factory architecture recorded in the file."),
) -> None:
    """Fine-tune a FAN with mutual distillation (CPU, GPU, or `torchrun ... -m fan_convert train`)."""
    from .io import load, save
    from .train.trainer import Trainer, TrainConfig

    try:
        fan = load(model_file, trust_factory=trust_factory)
        frames = fan.fan_plan.frames
        dataset = _dataset(data, list_file, classes, frames, train=True, crop=crop, resize=resize, flip=flip)
        config = TrainConfig(frames=frames, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                             schedule=schedule, warmup_epochs=warmup, weight_decay=weight_decay, distill_weight=distill_weight,
                             amp=amp, compile=compile_model, num_workers=workers, seed=seed, out_dir=str(out_dir),
                             checkpoint_every=checkpoint_every, device=device)
        trainer = Trainer(fan, dataset, config)
        if resume:
            if not trainer.checkpoint_path.exists():
                raise ValueError(f"nothing to resume: '{trainer.checkpoint_path}' does not exist; run without --resume")
            trainer.resume(trainer.checkpoint_path)
        history = trainer.fit()
        if trainer.rank == 0:
            written = save(trainer.model.cpu(), out_dir / "fan.safetensors", overwrite=True)
    except _ERRORS as err:
        _fail(str(err).strip("'\""))
    if trainer.rank == 0:
        last = history[-1] if history else {}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith(("loss", "acc")))
        console.print(f"trained {config.epochs} epochs ({shown}); wrote {written}", highlight=False)


@app.command(name="eval")
def evaluate_command(
    model_file: Path = typer.Argument(..., help="A FAN or specialized .safetensors, or a plain checkpoint with --arch."),
    data: str = typer.Option(..., "--data", help="Videos root, the root of --list paths, or 'builtin'."),
    list_file: Optional[Path] = typer.Option(None, "--list", help="Annotation list: 'path label' per line."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class-name file for --list labels."),
    frames: List[int] = typer.Option([2, 4, 6, 8, 12, 16], "--frames", "-f", help="Frame counts to evaluate."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a plain checkpoint."),
    temporal: Optional[str] = typer.Option(None, "--temporal", help="For timm: backbones: tsn or tsm."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes"),
    batch_size: int = typer.Option(16, "--batch-size"),
    crop: int = typer.Option(112, "--crop"),
    resize: int = typer.Option(128, "--resize"),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy vs frames as PNG (needs matplotlib)."),
    device: str = typer.Option("cpu", "--device"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle"),
    trust_factory: bool = typer.Option(False, "--trust-factory"),
) -> None:
    """Accuracy at each frame count: the Temporal Deviation table, for a FAN or any plain model."""
    from .surgery import check_frames
    from .train.evaluate import deviation_table, evaluate, plot_results, save_results

    try:
        frames = check_frames(frames)
        model = _load_any(model_file, arch, _arch_kwargs(num_classes, temporal, None, arch or ""), trust_pickle, trust_factory)
        dataset = _dataset(data, list_file, classes, frames, train=False, crop=crop, resize=resize, split="val")
        results = {model_file.name: evaluate(model, dataset, frames, batch_size=batch_size, device=device)}
        keys = model.fan_plan.frames if hasattr(model, "fan_plan") else ()
        if as_json:
            save_results(results, as_json)
        if plot:
            plot_results(results, plot, keys)
    except _ERRORS + (ImportError,) as err:
        _fail(str(err).strip("'\""))
    console.print(deviation_table(results, keys))


@app.command()
def calibrate(
    model_file: Path = typer.Argument(..., help="A FAN .safetensors."),
    data: str = typer.Option(..., "--data", help="Videos root, the root of --list paths, or 'builtin'."),
    list_file: Optional[Path] = typer.Option(None, "--list"),
    classes: Optional[Path] = typer.Option(None, "--classes"),
    batches: int = typer.Option(10, "--batches", help="Batches of each frame count's views."),
    batch_size: int = typer.Option(16, "--batch-size"),
    crop: int = typer.Option(112, "--crop"),
    resize: int = typer.Option(128, "--resize"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output (default: MODEL.calibrated.safetensors)."),
    force: bool = typer.Option(False, "--force"),
    trust_factory: bool = typer.Option(False, "--trust-factory"),
) -> None:
    """Recompute every key's batch-norm statistics on that key's views (no training)."""
    from .io import check_output, load, save
    from .train.evaluate import calibrate as recalibrate

    try:
        output = output or model_file.with_name(model_file.name.split(".")[0] + ".calibrated.safetensors")
        check_output(output, overwrite=force)
        fan = load(model_file, trust_factory=trust_factory)
        dataset = _dataset(data, list_file, classes, fan.fan_plan.frames, train=False, crop=crop, resize=resize)
        recalibrate(fan, dataset, batches=batches, batch_size=batch_size)
        written = save(fan, output, overwrite=force)
    except _ERRORS as err:
        _fail(str(err).strip("'\""))
    console.print(f"wrote {written}", highlight=False)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("fan-demo"), "--out-dir", help="Where the FAN file and results go."),
    quick: bool = typer.Option(False, "--quick", help="A tiny run (under a minute) to check the installation."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The whole journey on the built-in benchmark: train, show the deviation, convert, fine-tune, export.

    Trains a small TSM at 16 frames on the built-in temporal benchmark, shows its Temporal
    Deviation, converts it, fine-tunes with mutual distillation, compares, and exports the FAN file.
    """
    from .train.demo import run_demo

    run_demo(str(out_dir), quick=quick, seed=seed)


def _load_fan(path: Path, trust_factory: bool, command: str):
    """A FAN file (not a specialized one), rebuilt from its manifest."""
    from .io import load, read_manifest

    manifest = read_manifest(path)
    if manifest.get("kind") != "fan":
        raise ValueError(f"{path} is a specialized file (frames {manifest.get('frames')}); `fan-convert {command}` "
                         f"needs the FAN file it was specialized from (frames {manifest.get('specialized_from')})")
    return load(path, trust_factory=trust_factory)


def _file_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@app.command(name="export")
def export_command(
    model_file: Path = typer.Argument(..., help="A FAN .safetensors written by `fan-convert convert` (or train)."),
    frames: List[str] = typer.Option(..., "--frames", "-f", help="Frame count(s) to export (--frames 8), or --frames all."),
    fmt: str = typer.Option("torch-export", "--format", help="torch-export (.pt2) or onnx (needs the onnx extra)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file; OUT_T.ext each for several T (default: MODEL_T.pt2)."),
    input_size: int = typer.Option(224, "--input-size", help="Spatial size of the clip used to export and verify."),
    batch: int = typer.Option(1, "--batch", help="Videos in the export/verification clip."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Export with a dynamic batch dimension."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest allowed max |artifact - FAN| on the verification clip."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    keep_unfoldable: bool = typer.Option(False, "--keep-unfoldable", help="Keep kernel>1 alterations as modules instead of refusing."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Allow a module.path:factory architecture recorded in the file."),
) -> None:
    """Export the plain model for one or more frame counts (torch.export .pt2 or ONNX), each verified against the FAN."""
    from .deploy.export import FORMATS, SUFFIXES, export_verified
    from .io import check_output
    from .surgery import check_frames

    results = []
    try:
        if fmt not in FORMATS:
            raise ValueError(f"--format {fmt!r} is not supported: use one of {', '.join(FORMATS)}")
        fan = _load_fan(model_file, trust_factory, "export")
        if [f.lower() for f in frames] == ["all"]:
            counts = tuple(fan.fan_plan.frames)
        else:
            bad = [f for f in frames if not f.isdigit()]
            if bad:
                raise ValueError(f"--frames got {bad[0]!r}: give frame counts (e.g. --frames 8) or all")
            counts = check_frames([int(f) for f in frames])
        suffix = SUFFIXES[fmt]
        if output is None:
            outputs = {t: model_file.with_name(f"{model_file.name.split('.')[0]}_{t}{suffix}") for t in counts}
        elif len(counts) == 1 and [f.lower() for f in frames] != ["all"]:
            outputs = {counts[0]: output}
        else:
            outputs = {t: output.with_name(f"{output.stem}_{t}{output.suffix or suffix}") for t in counts}
        for path in outputs.values():
            check_output(path, overwrite=force)
        for t, path in outputs.items():
            results.append(export_verified(fan, t, path, format=fmt, input_size=input_size, batch=batch, dynamic_batch=dynamic_batch,
                                           overwrite=force, atol=atol, unfoldable="keep" if keep_unfoldable else "error"))
    except _ERRORS + (ImportError,) as err:
        done = f" (already written: {', '.join(str(r.path) for r in results)})" if results else ""
        _fail(str(err).strip("'\"") + done)
    table = Table(title=f"{model_file.name} exported ({fmt}), each artifact reloaded and checked against the FAN")
    for column in ("frames", "key", "artifact", "size on disk", "max |diff|", "input", "time"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for r in results:
        table.add_row(str(r.frames), str(r.key), str(r.path), _file_size(r.bytes), f"{r.max_diff:.1e}",
                      "x".join(str(d) for d in r.input_shape) if isinstance(r.input_shape[0], int) else str(r.input_shape),
                      f"{r.seconds:.1f} s")
    console.print(table)
    console.print(f"all within --atol {atol:g}{'; dynamic batch' if dynamic_batch else ''}", highlight=False)


@app.command()
def budget(
    model_file: Path = typer.Argument(..., help="A FAN .safetensors."),
    latency_ms: float = typer.Option(..., "--latency-ms", help="Latency budget for one forward of --batch clips, in ms."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    batch: int = typer.Option(1, "--batch", help="Clips per forward."),
    input_size: int = typer.Option(112, "--input-size", help="Spatial size of the clips."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch.set_num_threads while measuring (default: torch's)."),
    accuracy: Optional[Path] = typer.Option(None, "--accuracy", help="`fan-convert eval --json` results: the most accurate T."),
    frames: Optional[List[int]] = typer.Option(None, "--frames", "-f", help="Candidates (default: keys + T in --accuracy)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed forwards per frame count."),
    repeats: int = typer.Option(20, "--repeats", help="Timed forwards per frame count (the median is used)."),
    as_json: bool = typer.Option(False, "--json", help="Print the table and the choice as JSON."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Allow a module.path:factory architecture recorded in the file."),
) -> None:
    """Measure the specialized model at each frame count and choose the largest (or most accurate) T within a latency budget."""
    from .deploy.budget import choose_frames, read_accuracy

    try:
        table = read_accuracy(accuracy) if accuracy is not None else None
        fan = _load_fan(model_file, trust_factory, "budget")
        result = choose_frames(fan, latency_ms, candidates=frames or None, batch=batch, size=input_size, device=device,
                               threads=threads, accuracy=table, warmup=warmup, repeats=repeats)
    except _ERRORS as err:
        _fail(str(err).strip("'\""))
    if result.chosen is None:
        _fail(result.message)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    view = Table(title=f"{model_file.name}: latency budget {latency_ms:g} ms")
    for column in ("frames", "key", "latency (ms)", "top-1", "fits"):
        view.add_column(column, justify="right")
    for r in result.rows:
        style = "bold green" if r.t == result.chosen else None
        view.add_row(str(r.t), str(r.key) + ("" if r.trained else " (nearest)"), f"{r.latency_ms:.1f}",
                     "-" if r.accuracy is None else f"{r.accuracy:.2f}", "yes" if r.fits else "no", style=style)
    console.print(view)
    console.print(f"chosen: {result.message}", highlight=False)


def _expand_multi_values(args: list[str]) -> list[str]:
    """Let list options take several values after one flag (``--frames 4 8 16``)."""
    expanded, flag = [], None
    for arg in args:
        if arg.startswith("-"):
            flag = arg if arg in _MULTI_VALUE else None
            expanded.append(arg)
        elif flag and expanded[-1] != flag:
            expanded += [flag, arg]
        else:
            expanded.append(arg)
    return expanded


def cli_args(argv: List[str]) -> List[str]:
    """``fan-convert CHECKPOINT ...`` means ``fan-convert convert CHECKPOINT ...``; list options
    take several values after one flag."""
    args = list(argv)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    if args and not args[0].startswith("-") and args[0] not in commands:
        args.insert(0, "convert")
    return _expand_multi_values(args)


def main(argv: Optional[List[str]] = None) -> None:
    app(args=cli_args(sys.argv[1:] if argv is None else argv), prog_name="fan-convert")
