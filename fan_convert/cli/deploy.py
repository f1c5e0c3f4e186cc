"""Commands for deployment: export specialized models, choose T for a latency budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ._app import _ERRORS, _fail, app, console


def _load_fan(path: Path, trust_factory: bool, command: str):
    """A FAN file (not a specialized one), rebuilt from its manifest."""
    from ..io import load, read_manifest

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
    from ..deploy.export import FORMATS, SUFFIXES, export_verified
    from ..io import check_output
    from ..surgery import check_frames

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
    from ..deploy.budget import choose_frames, read_accuracy

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
