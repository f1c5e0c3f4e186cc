"""Commands that convert, specialise and inspect checkpoints."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer

from . import options as opt
from ._app import _arch_kwargs, _targets, app, console, served_by, step


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint file, or a save_pretrained folder."),
    frames: opt.Frames = ...,
    arch: opt.Arch = None,
    temporal: opt.Temporal = None,
    num_classes: opt.NumClasses = None,
    arch_kwarg: Optional[List[str]] = typer.Option(None, "--arch-kwarg", help="Extra architecture argument KEY=VALUE (JSON value)."),
    trained_at: Optional[int] = typer.Option(None, "--trained-at", help="Training frame count (default: max --frames)."),
    targets: opt.Targets = ["default"],  # noqa: B006  (typer reads the default, never mutates it)
    exclude: opt.Exclude = None,
    kernel_size: opt.KernelSize = 1,
    allow_missing: Optional[List[str]] = typer.Option(
        None, "--allow-missing", help="Model keys the checkpoint may lack or have with another shape (a key, key prefix or regex)."),
    allow_unexpected: Optional[List[str]] = typer.Option(None, "--allow-unexpected", help="Checkpoint keys to ignore."),
    class_names: Optional[Path] = typer.Option(None, "--classes", help="Class names, one per line in index order, recorded in the file."),
    output: opt.Output("CHECKPOINT.fan.safetensors") = None,
    force: opt.Force = False,
    trust_pickle: opt.TrustPickle = False,
    input_size: opt.InputSize(224) = None,
) -> None:
    """Convert a pretrained checkpoint into a FAN checkpoint (.safetensors with manifest).

    --num-classes N with a checkpoint whose classifier has another size gives a new N-class head
    (found by its shape; no pattern needed). --input-size is the clip size used to count GFLOPs per key.
    """
    started = time.perf_counter()
    with step(f"converting {checkpoint} ..."):
        from ..context import check_frames

        check_frames(frames)
        from ..io import check_output, save
        from ..pipeline import from_checkpoint

        output = output or checkpoint.with_name(checkpoint.name.split(".")[0] + ".fan.safetensors")
        check_output(output, overwrite=force)
        names = None
        if class_names is not None:
            from ..data.task import read_class_names

            names = read_class_names(class_names)
            if num_classes is not None and len(names) != num_classes:
                raise ValueError(f"--classes '{class_names}' names {len(names)} classes but --num-classes is {num_classes}; "
                                 "give one name per class")
        fan = from_checkpoint(checkpoint, arch, frames, arch_kwargs=_arch_kwargs(num_classes, temporal, arch_kwarg),
                              allow_missing=allow_missing or (), allow_unexpected=allow_unexpected or (),
                              trust_pickle=trust_pickle, targets=_targets(targets), exclude=exclude,
                              kernel_size=kernel_size, trained_at=trained_at, new_head=num_classes is not None)
        if names is not None:
            size = (getattr(fan, "fan_head", None) or {}).get("classes")
            if size is not None and size != len(names):
                raise ValueError(f"--classes '{class_names}' names {len(names)} classes but the classifier has {size}; "
                                 f"give --num-classes {len(names)} for a new head, or one name per class")
            fan.fan_classes = names
        written = save(fan, output, overwrite=force)
    _summary(fan, fan.fan_source["notes"], written, opt.input_size(input_size, fan, 224), time.perf_counter() - started)


def _summary(fan, notes, written: Path, input_size: int, seconds: float) -> None:
    conversion = fan.fan_plan
    from rich.table import Table

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
    from ..deploy.cost import gflops

    for t in conversion.frames:
        flops = gflops(fan, t, input_size)
        table.add_row(f"GFLOPs at {t} frames ({input_size}x{input_size})", "n/a" if flops is None else f"{flops:.2f}")
    table.add_row("analysis", conversion.analysis)
    table.add_row("time", f"{seconds:.1f} s")
    console.print(table)
    for note in notes:
        console.print(f"checkpoint: {note}", highlight=False)


@app.command()
def specialize(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN .safetensors written by `fan-convert convert`."),
    frames: int = typer.Option(..., "--frames", "-f", help="The frame count to specialise for."),
    output: opt.Output("MODEL.plainT.safetensors") = None,
    force: opt.Force = False,
    keep_unfoldable: opt.KeepUnfoldable = False,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Fold a FAN checkpoint into the plain architecture for one frame count."""
    with step(f"specializing {model_file} to {frames} frames ..."):
        from ..io import check_output, load, save_specialized
        from ..nn.counting import count_parameters

        output = output or model_file.with_name(model_file.name.split(".")[0] + f".plain{frames}.safetensors")
        check_output(output, overwrite=force)
        fan = load(model_file, trust_factory=trust_factory)
        written = save_specialized(fan, frames, output, overwrite=force, unfoldable="keep" if keep_unfoldable else "error")
    served = served_by([frames], fan.fan_plan.frames)
    if served:
        console.print(served, highlight=False)
    console.print(f"wrote {written}: the plain architecture for {frames} frames "
                  f"({count_parameters(fan) - fan.fan_plan.params_added:,} parameters)", highlight=False)


@app.command()
def inspect(
    target: str = typer.Argument("timm:resnet50", metavar="TARGET", help="An architecture spec (dry run) or a FAN .safetensors file."),
    frames: opt.Frames = [4, 8, 16],  # noqa: B006
    temporal: opt.Temporal = None,
    targets: opt.Targets = ["default"],  # noqa: B006
    exclude: opt.Exclude = None,
    kernel_size: opt.KernelSize = 1,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    all_sites: bool = typer.Option(False, "--all", help="List every site, not only the converted ones."),
) -> None:
    """Show what converting an architecture would do, or what a FAN file holds, per site."""
    with step(f"inspecting {target} ..."):
        import warnings

        from ..io import read_manifest
        from ..surgery import ConversionPlan, plan
        from ..zoo import build

        if Path(target).is_dir():  # a transformers save_pretrained folder: its config.json names the model
            target = f"hf:{target}"
        manifest, head = None, None
        if target.endswith(".safetensors") or Path(target).is_file():
            manifest = read_manifest(target)
            if "plan" not in manifest:
                raise ValueError(f"'{target}' is a specialized file (frames {manifest['frames']}); inspect the FAN file it came from")
            conversion = ConversionPlan.from_dict(manifest["plan"])
        else:
            from ..zoo import find_head

            kwargs = {"temporal": temporal} if temporal else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = build(target, **kwargs)
            conversion = plan(model, frames, targets=_targets(targets), exclude=exclude, kernel_size=kernel_size)
            head = find_head(target, **kwargs)
            shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if as_json:
        sys.stdout.write(conversion.to_json(indent=2) + "\n")
        return
    from rich.console import Console

    out = console if console.is_terminal else Console(width=10_000, soft_wrap=True)  # piped: no name wrapped mid-word
    out.print(conversion.table(status=None if all_sites else "converted"))
    out.print(str(conversion), highlight=False)
    if head is not None:
        keys = ", ".join(f"{k} {shapes[k]}" for k in head.keys)
        temporal_flag = f" --temporal {temporal}" if temporal else ""
        out.print(f"classifier: {', '.join(head.modules)} ({keys}); "
                  f"`fan-convert CHECKPOINT --arch {target}{temporal_flag} --num-classes N` gives a new N-class head", highlight=False)
    elif manifest is None:
        out.print(f"classifier: none found ({target} takes no num_classes, or nothing depends on it)", highlight=False)
    for line in _task_lines(manifest or {}):
        out.print(line, highlight=False, markup=False)


def _task_lines(manifest: dict) -> list[str]:
    """What a FAN file says about its task: classes, classifier, preprocessing, training."""
    lines = []
    if manifest.get("classes"):
        names = manifest["classes"]
        lines.append(f"classes ({len(names)}): " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
    elif manifest:
        lines.append("classes: not recorded (`fan-convert train` records the class folders' names; `convert --classes FILE` too)")
    if manifest.get("head"):
        head = manifest["head"]
        lines.append(f"classifier: {', '.join(head['keys'])} ({head.get('classes')} classes)")
    pre = manifest.get("preprocessing")
    if pre:
        layout = "(B, T, C, H, W)" if pre.get("layout") == "BTCHW" else "(B, C, T, H, W)"
        lines.append(f"preprocessing: short side resized to {pre.get('resize')}, centre crop {pre.get('crop')}x{pre.get('crop')}, "
                     f"RGB in [0, 1] normalised with mean {pre.get('mean')} std {pre.get('std')}, clips {layout}, "
                     "T frames: one per equal segment (the centre frame at evaluation)")
    elif manifest:
        lines.append("preprocessing: not recorded (train or calibrate record it; eval then uses --crop 112 --resize 128)")
    if manifest.get("training"):
        run = manifest["training"]
        lines.append(f"trained: frames {run.get('frames')}, {run.get('epochs')} epoch(s) on '{run.get('data')}' "
                     f"({run.get('videos')} videos)" + (f", validated on '{run['val']}'" if run.get("val") else ""))
    return lines
