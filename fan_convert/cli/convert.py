"""Commands that convert, specialise and inspect checkpoints."""

from __future__ import annotations

import copy
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ._app import _ERRORS, _arch_kwargs, _fail, _targets, app, console


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., help="Pretrained checkpoint: .safetensors, .pt/.pth/.pth.tar state dict."),
    frames: List[int] = typer.Option(..., "--frames", "-f", help="Frame counts to specialise for, e.g. --frames 4 8 16."),
    arch: Optional[str] = typer.Option(None, "--arch", "-a", help="Architecture spec, e.g. timm:resnet50, pytorchvideo:slow_r50."),
    temporal: Optional[str] = typer.Option(None, "--temporal", help="For timm: backbones: tsn (default) or tsm."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier size of the checkpoint."),
    arch_kwarg: Optional[List[str]] = typer.Option(None, "--arch-kwarg", help="Extra architecture argument KEY=VALUE (JSON value)."),
    trained_at: Optional[int] = typer.Option(None, "--trained-at", help="Training frame count (default: max --frames)."),
    targets: List[str] = typer.Option(["default"], "--targets", help="'default', 'paper', 'none' or module-name patterns."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Module-name patterns to leave untouched."),
    kernel_size: int = typer.Option(1, "--kernel-size", help="Alteration kernel (1 is foldable)."),
    allow_missing: Optional[List[str]] = typer.Option(None, "--allow-missing", help="Model keys the checkpoint may lack (a new head)."),
    allow_unexpected: Optional[List[str]] = typer.Option(None, "--allow-unexpected", help="Checkpoint keys to ignore."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output .safetensors (default: CHECKPOINT.fan.safetensors)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled whole nn.Module (runs code from the file)."),
    input_size: int = typer.Option(224, "--input-size", help="Spatial size used to count GFLOPs per key."),
) -> None:
    """Convert a pretrained checkpoint into a FAN checkpoint (.safetensors with manifest)."""
    from .. import adapt
    from ..io import check_output, load_into, read_checkpoint, save
    from ..surgery import check_frames
    from ..zoo import build

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

    from .. import frames

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
    from ..io import check_output, load, save_specialized

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
    from ..io import read_manifest
    from ..surgery import ConversionPlan, plan
    from ..zoo import build

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
