"""Commands that train, evaluate and calibrate FAN models, and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import options as opt
from ._app import _arch_kwargs, app, console, served_by, step


def _model_classes(model) -> int | None:
    """The size of the model's classifier, as its file records it (None when it does not)."""
    head = getattr(model, "fan_head", None) or {}
    arch = getattr(model, "fan_arch", None) or {}
    return head.get("classes") or (arch.get("kwargs") or {}).get("num_classes")


def _preprocessing(model, crop: Optional[int], resize: Optional[int]) -> tuple[int, int, dict]:
    """--crop/--resize as given, else as the model's file records them, else 112/128; and the
    stored mean/std (a model trained with other normalisation constants keeps them)."""
    stored = getattr(model, "fan_preprocessing", None) or {} if model is not None else {}
    crop = crop if crop is not None else stored.get("crop", 112)
    resize = resize if resize is not None else stored.get("resize", 128)
    norm = {name: tuple(stored[name]) for name in ("mean", "std") if name in stored}
    return crop, resize, norm


def _dataset(data: str, list_file: Optional[Path], classes: Optional[Path], frames, *, train: bool, crop: Optional[int],
             resize: Optional[int], split: str = "train", flip: bool = False, model=None, summary: bool = False):
    """A multi-view dataset from a folder of videos per class, an annotation list, or 'builtin';
    its class names are checked against the model's (labels follow the model's order)."""
    from ..data import MultiViewClips, read_items
    from ..data.task import class_summary, match_classes
    from ..integrations.transformers import reader_settings

    settings = reader_settings(model) if model is not None else {}  # transformers: (B, T, C, H, W), own size/normalisation
    crop, resize, stored_norm = _preprocessing(model, crop, resize)
    settings.update(stored_norm)
    if settings.get("layout") and data == "builtin":
        raise ValueError("the built-in benchmark gives (B, C, T, H, W) clips of 32x32 frames; train transformers models on videos")
    size = settings.pop("crop_size", crop)
    if size != crop:
        raise ValueError(f"{type(model).__name__} takes {size}x{size} frames: pass --crop {size}")
    if data == "builtin":
        from ..data import TemporalBenchmark

        return TemporalBenchmark(split=split, frames=frames, train=train), None
    items, found = read_items(data, list_file, classes, report=lambda note: console.print(note, highlight=False))
    stored = getattr(model, "fan_classes", None)
    numeric = list_file is not None and classes is None and found == [str(i) for i in range(len(found))]
    where = f"'{list_file}'" if list_file is not None else f"'{data}'"
    items = match_classes(None if numeric else stored, found, items, where=where, by_name=classes is None,
                          num_classes=len(stored) if numeric and stored else _model_classes(model) if model is not None else None)
    names = list(stored) if stored and not numeric else found
    if summary:
        console.print(class_summary(names, items), highlight=False)
    return MultiViewClips(items, frames, train=train, crop_size=crop, resize=resize, flip=flip, **settings), names


def _weights(text: Optional[str]) -> tuple[float, ...]:
    """--key-weights 1,1,2 -> (1.0, 1.0, 2.0)."""
    try:
        return tuple(float(w) for w in text.split(",")) if text else ()
    except ValueError:
        raise ValueError(f"--key-weights takes numbers separated by commas, e.g. 1,1,2; got {text!r}") from None


_RUN_FILES = ("log.jsonl", "last.safetensors", "fan.safetensors")


def _check_run_folder(out_dir: Path, resume: bool, force: bool) -> list[Path]:
    """A run folder holding an earlier run is continued (--resume) or started over (--force:
    returns the files to clear), never mixed into silently."""
    if resume and force:
        raise ValueError("--resume continues the run in --out-dir and --force starts it over; give one of them")
    found = [out_dir / name for name in _RUN_FILES if (out_dir / name).exists()]
    if found and not resume and not force:
        raise ValueError(f"'{out_dir}' already holds a run ({', '.join(p.name for p in found)}); pass --resume to continue it, "
                         "--force to start over (clears its log and checkpoint), or choose another --out-dir")
    return [p for p in found if p.name != "fan.safetensors"] if force else []


def _validation(data, frames, batch_size: int, workers: int, device):
    """An epoch hook: top-1 on the validation videos at every key, printed and logged as val_top1@T."""
    import time

    from ..train.evaluate import evaluate

    def hook(trainer) -> dict:
        started = time.perf_counter()
        with step(f"epoch {trainer.epoch}: validating on {len(data)} videos ...") as say:
            results = evaluate(trainer.model, data, frames, batch_size=batch_size, device=device, num_workers=workers,
                               progress=lambda done, total: say(f"epoch {trainer.epoch}: validating, {done}/{total} batches ..."))
        record = {f"val_top1@{t}": round(r["top1"], 2) for t, r in results.items()}
        shown = ", ".join(f"{t} frames {r['top1']:.1f}" for t, r in results.items())
        console.print(f"epoch {trainer.epoch}/{trainer.config.epochs} validation top-1 (%): {shown} "
                      f"({results[frames[0]]['clips']} videos, {time.perf_counter() - started:.1f} s)", highlight=False)
        return record

    return hook


def _summary(last: dict) -> str:
    """The last epoch's record in words, accuracies in percent with one decimal as `eval` and the
    validation line print them: "loss 1.127; training accuracy (%): 2 frames 50.0, 4 frames 25.0;
    validation top-1 (%): 2 frames 33.3, 4 frames 33.3"."""
    def by_frames(prefix: str, scale: float) -> str:
        found = sorted((int(k[len(prefix):]), v) for k, v in last.items() if k.startswith(prefix) and k[len(prefix):].isdigit())
        return ", ".join(f"{t} frames {scale * v:.1f}" for t, v in found)

    loss = " ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("loss"))
    acc, val = by_frames("acc@", 100), by_frames("val_top1@", 1)  # training accuracy: a fraction; val_top1: percent
    return "; ".join(filter(None, [loss, acc and f"training accuracy (%): {acc}", val and f"validation top-1 (%): {val}"]))


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
    epochs: int = typer.Option(15, "--epochs", help="Passes over the data (one frame count per step: 15 cost what 5 joint epochs do)."),
    batch_size: opt.BatchSize = 16,
    lr: float = typer.Option(0.01, "--lr"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw"),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine or step"),
    warmup: float = typer.Option(0.0, "--warmup", help="Warm-up epochs."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    distill_weight: float = typer.Option(1.0, "--lambda", help="Weight of the distillation terms."),
    key_schedule: str = typer.Option("rotate", "--key-schedule",
                                     help="rotate or random: one frame count per step; joint: every one each step (the paper's)."),
    key_weights: Optional[str] = typer.Option(None, "--key-weights", help="random: one weight per frame count, e.g. 1,1,2."),
    teacher_every: int = typer.Option(0, "--teacher-every",
                                      help="One frame count per step: distil from the highest (no gradients) every Kth round; 0: CE only."),
    amp: str = typer.Option("off", "--amp", help="off, bf16 or fp16 (CUDA)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels-last memory format for conv weights."),
    workers: opt.Workers = 0,
    crop: opt.Crop = None,
    resize: opt.Resize = None,
    flip: bool = typer.Option(False, "--flip", help="Random horizontal flips (not for left/right classes)."),
    val: Optional[str] = typer.Option(None, "--val", help="Validation videos (root/<class>/*.mp4), evaluated after every epoch."),
    out_dir: Path = typer.Option(Path("runs/fan"), "--out-dir", help="Checkpoints, log.jsonl and the trained model."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Steps between checkpoints (0: each epoch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT_DIR/last.safetensors."),
    force: bool = typer.Option(False, "--force", help="Start over in an OUT_DIR that holds a run (its log and checkpoint are cleared)."),
    device: opt.Device = "auto",
    seed: opt.Seed = 0,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Fine-tune a FAN, one frame count per step (--key-schedule joint: the paper's mutual distillation); CPU, GPU or torchrun."""
    with step(f"loading {model_file} ...") as say:
        earlier = _check_run_folder(out_dir, resume, force)
        from ..data import skip_report
        from ..data.task import preprocessing_of
        from ..io import load, save
        from ..train.trainer import TrainConfig, Trainer

        fan = load(model_file, trust_factory=trust_factory)
        frames = fan.fan_plan.frames
        dataset, names = _dataset(data, list_file, classes, frames, train=True, crop=crop, resize=resize, flip=flip, model=fan,
                                  summary=True)
        val_data = None if val is None else _dataset(val, None, None, frames, train=False, crop=crop, resize=resize, model=fan,
                                                     split="val")[0]
        config = TrainConfig(frames=frames, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                             schedule=schedule, warmup_epochs=warmup, weight_decay=weight_decay, distill_weight=distill_weight,
                             key_schedule=key_schedule, key_weights=_weights(key_weights), teacher_every=teacher_every,
                             amp=amp, compile=compile_model, channels_last=channels_last, num_workers=workers, seed=seed,
                             out_dir=str(out_dir),
                             checkpoint_every=checkpoint_every, device=device)
        say("preparing the model and optimizer ...")
        trainer = Trainer(fan, dataset, config)
        if resume:
            if not trainer.checkpoint_path.exists():
                missing = f"nothing to resume: '{trainer.checkpoint_path}' does not exist"
                if trainer.world > 1:
                    raise ValueError(f"{missing} on this machine; --out-dir must be on storage that every machine sees "
                                     "(a new run: run without --resume)")
                raise ValueError(f"{missing}; run without --resume")
            trainer.resume(trainer.checkpoint_path)
        if val_data is not None and trainer.rank == 0:
            trainer.epoch_hooks.append(_validation(val_data, frames, batch_size, workers, trainer.device))
        # --force: the old run's log and checkpoint go, now that the new run can start (rank 0: one shared folder)
        for path in earlier if trainer.rank == 0 else ():
            path.unlink(missing_ok=True)
    with step(None):
        history = trainer.fit()
        if trainer.rank == 0:
            model = trainer.model.cpu()
            model.fan_classes = names
            model.fan_preprocessing = preprocessing_of(dataset)
            model.fan_training = {"frames": list(config.frames), "epochs": config.epochs, "data": str(data),
                                  "videos": len(dataset), **({"val": str(val)} if val else {})}
            written = save(model, out_dir / "fan.safetensors", overwrite=True)
    if trainer.rank == 0:
        console.print(f"trained {config.epochs} epoch{'s' * (config.epochs != 1)} ({_summary(history[-1] if history else {})}); "
                      f"wrote {written} and {out_dir / 'log.jsonl'}", highlight=False)
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
    crop: opt.Crop = None,
    resize: opt.Resize = None,
    as_json: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy vs frames as PNG (needs matplotlib)."),
    device: opt.Device = "cpu",
    workers: opt.Workers = 0,
    trust_pickle: opt.TrustPickle = False,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Accuracy at each frame count: the Temporal Deviation table, for a FAN or any plain model.

    Clips are made as the model's file records (--crop/--resize override it); the class folders
    must be the model's classes."""
    with step(f"loading {model_file} ...", ImportError):
        from ..context import check_frames
        from ..data import skip_report
        from ..train.evaluate import deviation_table, evaluate, plot_results, save_results

        frames = check_frames(frames)
        model = _load_any(model_file, arch, _arch_kwargs(num_classes, temporal, None), trust_pickle, trust_factory)
        dataset, _ = _dataset(data, list_file, classes, frames, train=False, crop=crop, resize=resize, split="val", model=model)
        keys = model.fan_plan.frames if hasattr(model, "fan_plan") else ()
        served = served_by(frames, keys)
        if served:
            console.print(served, highlight=False)
    with step(f"evaluating {model_file.name} on {len(dataset)} videos at frames {list(frames)} ...", ImportError) as say:
        results = {model_file.name: evaluate(model, dataset, frames, batch_size=batch_size, device=device, num_workers=workers,
                                             progress=lambda done, total: say(f"evaluating: {done}/{total} batches ..."))}
        written = []
        if as_json:
            written.append(_write_via_temp(as_json, lambda temp: save_results(results, temp)))
        if plot:
            written.append(plot_results(results, plot, keys))
    console.print(deviation_table(results, keys))
    skipped = skip_report(results[model_file.name][frames[0]]["skipped_videos"])
    if skipped:
        console.print(skipped, highlight=False, markup=False)
    if written:
        console.print(f"wrote {' and '.join(str(p) for p in written)}", highlight=False)


def _write_via_temp(path: Path, write) -> Path:
    """Write ``path`` through a temporary file renamed on success (no partial file on failure)."""
    from ..io.atomic import atomic_write

    return atomic_write(path, write, overwrite=True)


@app.command()
def calibrate(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN .safetensors."),
    data: opt.Data = ...,
    list_file: opt.ListFile = None,
    classes: opt.Classes = None,
    batches: int = typer.Option(10, "--batches", help="Batches of each frame count's views."),
    batch_size: opt.BatchSize = 16,
    crop: opt.Crop = None,
    resize: opt.Resize = None,
    output: opt.Output("MODEL.calibrated.safetensors") = None,
    device: opt.Device = "cpu",
    workers: opt.Workers = 0,
    force: opt.Force = False,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Recompute every key's batch-norm statistics on that key's views (no training)."""
    with step(f"loading {model_file} ..."):
        from ..data.task import preprocessing_of
        from ..io import check_output, load, save
        from ..train.evaluate import calibrate as recalibrate

        output = output or model_file.with_name(model_file.name.split(".")[0] + ".calibrated.safetensors")
        check_output(output, overwrite=force)
        fan = load(model_file, trust_factory=trust_factory)
        dataset, names = _dataset(data, list_file, classes, fan.fan_plan.frames, train=False, crop=crop, resize=resize, model=fan)
    with step(f"calibrating {model_file.name} on {len(dataset)} videos ...") as say:
        recalibrate(fan, dataset, batches=batches, batch_size=batch_size, device=device, num_workers=workers,
                    progress=lambda done, total: say(f"calibrating: {done}/{total} batches ..."))
        fan.fan_preprocessing = getattr(fan, "fan_preprocessing", None) or preprocessing_of(dataset)
        fan.fan_classes = getattr(fan, "fan_classes", None) or names
        written = save(fan.cpu(), output, overwrite=force)
    console.print(f"wrote {written}: every key's batch-norm statistics recomputed on {len(dataset)} videos", highlight=False)


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
