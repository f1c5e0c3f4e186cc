"""Commands that train, evaluate and calibrate FAN models, and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options as opt
from ._app import _arch_kwargs, app, console, step


def _dataset(data: str, list_file: Optional[Path], classes: Optional[Path], frames, *, train: bool, crop: int, resize: int,
             split: str = "train", flip: bool = False, model=None):
    """A multi-view dataset from a folder of videos per class, an annotation list, or 'builtin'."""
    from ..data import MultiViewClips, read_items
    from ..integrations.transformers import reader_settings

    settings = reader_settings(model) if model is not None else {}  # transformers: (B, T, C, H, W), own size/normalisation
    if settings and data == "builtin":
        raise ValueError("the built-in benchmark gives (B, C, T, H, W) clips of 32x32 frames; train transformers models on videos")
    size = settings.pop("crop_size", crop)
    if size != crop:
        raise ValueError(f"{type(model).__name__} takes {size}x{size} frames: pass --crop {size}")
    if data == "builtin":
        from ..data import TemporalBenchmark

        return TemporalBenchmark(split=split, frames=frames, train=train)
    items, _ = read_items(data, list_file, classes, report=lambda note: console.print(note, highlight=False))
    return MultiViewClips(items, frames, train=train, crop_size=crop, resize=resize, flip=flip, **settings)


def _load_any(path: Path, arch: Optional[str], kwargs: dict, trust_pickle: bool, trust_factory: bool):
    """A FAN or specialized file (rebuilt from its manifest), or a plain checkpoint with --arch."""
    from ..io import FanFileError, load, read_manifest
    from ..pipeline import load_pretrained

    if path.suffix == ".safetensors":
        try:
            read_manifest(path)
            return load(path, trust_factory=trust_factory)
        except FanFileError as err:
            if "no fan-convert manifest" not in str(err):
                raise
    if arch is None:
        raise ValueError(f"'{path}' is a plain checkpoint: give its architecture with --arch (e.g. --arch torchvision:r3d_18)")
    return load_pretrained(path, arch, arch_kwargs=kwargs, trust_pickle=trust_pickle)


@app.command()
def train(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN .safetensors (from `fan-convert convert`)."),
    data: opt.Data = ...,
    list_file: opt.ListFile = None,
    classes: opt.Classes = None,
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: opt.BatchSize = 16,
    lr: float = typer.Option(0.01, "--lr"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw"),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine or step"),
    warmup: float = typer.Option(0.0, "--warmup", help="Warm-up epochs."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    distill_weight: float = typer.Option(1.0, "--lambda", help="Weight of the distillation terms."),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 (CUDA)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels-last memory format for conv weights."),
    workers: opt.Workers = 0,
    crop: opt.Crop = 112,
    resize: opt.Resize = 128,
    flip: bool = typer.Option(False, "--flip", help="Random horizontal flips (not for left/right classes)."),
    out_dir: Path = typer.Option(Path("runs/fan"), "--out-dir", help="Checkpoints, log.jsonl and the trained model."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Steps between checkpoints (0: each epoch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT_DIR/last.safetensors."),
    device: opt.Device = "auto",
    seed: opt.Seed = 0,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Fine-tune a FAN with mutual distillation (CPU, GPU, or `torchrun ... -m fan_convert train`)."""
    with step(f"loading {model_file} ..."):
        from ..data import skip_report
        from ..io import load, save
        from ..train.trainer import TrainConfig, Trainer

        fan = load(model_file, trust_factory=trust_factory)
        frames = fan.fan_plan.frames
        dataset = _dataset(data, list_file, classes, frames, train=True, crop=crop, resize=resize, flip=flip, model=fan)
        config = TrainConfig(frames=frames, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                             schedule=schedule, warmup_epochs=warmup, weight_decay=weight_decay, distill_weight=distill_weight,
                             amp=amp, compile=compile_model, channels_last=channels_last, num_workers=workers, seed=seed,
                             out_dir=str(out_dir),
                             checkpoint_every=checkpoint_every, device=device)
        trainer = Trainer(fan, dataset, config)
        if resume:
            if not trainer.checkpoint_path.exists():
                raise ValueError(f"nothing to resume: '{trainer.checkpoint_path}' does not exist; run without --resume")
            trainer.resume(trainer.checkpoint_path)
    with step(None):
        history = trainer.fit()
        if trainer.rank == 0:
            written = save(trainer.model.cpu(), out_dir / "fan.safetensors", overwrite=True)
    if trainer.rank == 0:
        last = history[-1] if history else {}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith(("loss", "acc")))
        console.print(f"trained {config.epochs} epochs ({shown}); wrote {written}", highlight=False)
        if trainer.skipped_videos:
            console.print(skip_report(trainer.skipped_videos), highlight=False, markup=False)


@app.command(name="eval")
def evaluate_command(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN or specialized .safetensors, or a checkpoint with --arch."),
    data: opt.Data = ...,
    list_file: opt.ListFile = None,
    classes: opt.Classes = None,
    frames: opt.Frames = [2, 4, 6, 8, 12, 16],  # noqa: B006
    arch: opt.Arch = None,
    temporal: opt.Temporal = None,
    num_classes: opt.NumClasses = None,
    batch_size: opt.BatchSize = 16,
    crop: opt.Crop = 112,
    resize: opt.Resize = 128,
    as_json: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy vs frames as PNG (needs matplotlib)."),
    device: opt.Device = "cpu",
    workers: opt.Workers = 0,
    trust_pickle: opt.TrustPickle = False,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Accuracy at each frame count: the Temporal Deviation table, for a FAN or any plain model."""
    with step(f"loading {model_file} ...", ImportError):
        from ..context import check_frames
        from ..data import skip_report
        from ..train.evaluate import deviation_table, evaluate, plot_results, save_results

        frames = check_frames(frames)
        model = _load_any(model_file, arch, _arch_kwargs(num_classes, temporal, None), trust_pickle, trust_factory)
        dataset = _dataset(data, list_file, classes, frames, train=False, crop=crop, resize=resize, split="val", model=model)
    with step(None, ImportError):
        results = {model_file.name: evaluate(model, dataset, frames, batch_size=batch_size, device=device,
                                                  num_workers=workers)}
        keys = model.fan_plan.frames if hasattr(model, "fan_plan") else ()
        if as_json:
            save_results(results, as_json)
        if plot:
            plot_results(results, plot, keys)
    console.print(deviation_table(results, keys))
    skipped = skip_report(results[model_file.name][frames[0]]["skipped_videos"])
    if skipped:
        console.print(skipped, highlight=False, markup=False)


@app.command()
def calibrate(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN .safetensors."),
    data: opt.Data = ...,
    list_file: opt.ListFile = None,
    classes: opt.Classes = None,
    batches: int = typer.Option(10, "--batches", help="Batches of each frame count's views."),
    batch_size: opt.BatchSize = 16,
    crop: opt.Crop = 112,
    resize: opt.Resize = 128,
    output: opt.Output("MODEL.calibrated.safetensors") = None,
    device: opt.Device = "cpu",
    workers: opt.Workers = 0,
    force: opt.Force = False,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Recompute every key's batch-norm statistics on that key's views (no training)."""
    with step(f"loading {model_file} ..."):
        from ..io import check_output, load, save
        from ..train.evaluate import calibrate as recalibrate

        output = output or model_file.with_name(model_file.name.split(".")[0] + ".calibrated.safetensors")
        check_output(output, overwrite=force)
        fan = load(model_file, trust_factory=trust_factory)
        dataset = _dataset(data, list_file, classes, fan.fan_plan.frames, train=False, crop=crop, resize=resize, model=fan)
    with step(None):
        recalibrate(fan, dataset, batches=batches, batch_size=batch_size, device=device, num_workers=workers)
        written = save(fan.cpu(), output, overwrite=force)
    console.print(f"wrote {written}", highlight=False)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("fan-demo"), "--out-dir", help="Where the FAN file and results go."),
    quick: bool = typer.Option(False, "--quick", help="A smaller smoke run (320 clips, 1 epoch) to check the installation."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Also train the plain model here instead of loading the shipped one."),
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier run's results in --out-dir."),
    seed: opt.Seed = 0,
) -> None:
    """The whole journey on the built-in benchmark: Temporal Deviation, convert, fine-tune, compare.

    Five steps: the plain TSM trained at 16 frames (shipped, SHA-256 checked; --from-scratch trains
    it), its Temporal Deviation, conversion with fan_convert.adapt, fine-tuning with mutual
    distillation, and the before/after table; writes OUT_DIR/fan.safetensors and results.json.
    """
    with step("starting the demo ..."):
        from ..train.demo import run_demo

    with step(None):  # an earlier run in --out-dir, a damaged shipped checkpoint: one line, exit 2
        run_demo(str(out_dir), quick=quick, seed=seed, from_scratch=from_scratch, force=force)
