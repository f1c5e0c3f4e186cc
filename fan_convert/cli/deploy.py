"""Commands for deployment: export specialized models, choose T for a latency budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import options as opt
from ._app import _fail, app, console, progress, served_by, step


def _load_fan(path: Path, trust_factory: bool, command: str):
    """A FAN file (not a specialized one), rebuilt from its manifest."""
    from ..io import load, read_manifest

    manifest = read_manifest(path)
    if manifest.get("kind") != "fan":
        raise ValueError(f"{path} is a specialized file (frames {manifest.get('frames')}); `fan-convert {command}` "
                         f"needs the FAN file it was specialized from (frames {manifest.get('specialized_from')})")
    return load(path, trust_factory=trust_factory)


def stored_input_size(given: Optional[int], fan, fallback: int) -> int:
    """--input-size as given, else the crop the FAN file records, else the model's own, else ``fallback``."""
    from ..deploy.metadata import input_size_of

    return given if given is not None else input_size_of(fan, fallback)


def _import_if_installed(packages) -> None:
    for name in packages:
        try:
            __import__(name)
        except ImportError:
            pass  # the export names what is missing, and how to install it


def input_line(fan, size: int) -> str:
    """What the exported model expects, in one line."""
    pre = getattr(fan, "fan_preprocessing", None)
    if not pre:
        return (f"input: float32 clips of {size}x{size} frames; the FAN file records no preprocessing "
                "(train or calibrate record it), so normalise as the model was trained")
    layout = "(B, T, 3, H, W)" if pre.get("layout") == "BTCHW" else "(B, 3, T, H, W)"
    return (f"input: float32 {layout} clips, RGB frames resized to short side {pre['resize']} and centre-cropped to "
            f"{pre['crop']}x{pre['crop']}, scaled to [0, 1], normalised with mean {pre['mean']} std {pre['std']}; "
            "T frames one per equal segment of the video; output: logits over the classes in the artifact's metadata")


def _file_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@app.command(name="export")
def export_command(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN .safetensors written by `fan-convert convert` (or train)."),
    frames: Optional[List[str]] = typer.Option(
        None, "--frames", "-f", help="Frame count(s) to export one specialized artifact each (--frames 8; --frames keys: every "
        "trained key); leave it out (or --frames all) for ONE artifact that serves every frame count."),
    max_frames: Optional[int] = typer.Option(
        None, "--max-frames", help="Without --frames: the most frames the artifact takes (default 4x the largest key, >= 32)."),
    fmt: Optional[str] = typer.Option(
        None, "--format", help="torch-export (.pt2) or onnx (needs the onnx extra); default: from the -o suffix, else torch-export."),
    output: opt.Output("MODEL_T.pt2; OUT_T.ext each for several T") = None,
    input_size: opt.InputSize(224) = None,
    batch: opt.Batch = 1,
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Export with a dynamic batch dimension."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest allowed max |artifact - FAN| on the verification clip."),
    force: opt.Force = False,
    keep_unfoldable: opt.KeepUnfoldable = False,
    trust_factory: opt.TrustFactory = False,
) -> None:
    """Export the FAN as one artifact for every frame count, or (--frames) the plain model per frame count; verified against the FAN."""
    results = []
    done = lambda: f" (already written: {', '.join(str(r.path) for r in results)})" if results else ""  # noqa: E731
    with step(f"loading {model_file} ...", ImportError, after=done) as say:
        from dataclasses import replace

        from ..context import check_frames
        from ..deploy.export import WRITERS, ExportOptions, export_verified, format_for
        from ..deploy.metadata import artifact_metadata, metadata_props
        from ..io import check_output

        if fmt is not None and fmt not in WRITERS:
            raise ValueError(f"--format {fmt!r} is not supported: use one of {', '.join(WRITERS)}")
        fmt = format_for(output, fmt) if output is not None else fmt or "torch-export"
        fan = _load_fan(model_file, trust_factory, "export")
        if fmt == "onnx":  # importing onnx holds the GIL for 1-2 s (ml_dtypes): a line before it, not one late after it
            say("loading the ONNX exporter (onnx, onnxscript, onnxruntime) ...", now=True)
            _import_if_installed(WRITERS[fmt].packages)
        every_key = [f.lower() for f in frames or ()] == ["keys"]
        if frames is None or [f.lower() for f in frames] == ["all"]:
            say("exporting one artifact for every frame count and checking it against the FAN ...")
            _export_every_frame_count(fan, model_file, output, fmt, stored_input_size(input_size, fan, 224), batch,
                                      dynamic_batch, max_frames, atol, force, say)
            return
        if max_frames is not None:
            raise ValueError("--max-frames is for the one artifact of every frame count: leave out --frames, or drop --max-frames")
        if every_key:
            counts = tuple(fan.fan_plan.frames)
        else:
            bad = [f for f in frames if not f.lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"--frames got {bad[0]!r}: give frame counts (e.g. --frames 8), keys (one file per trained "
                                 "key) or all (one file for every frame count)")
            counts = check_frames([int(f) for f in frames])
        suffix = WRITERS[fmt].suffix
        if output is None:
            outputs = {t: model_file.with_name(f"{model_file.name.split('.')[0]}_{t}{suffix}") for t in counts}
        elif len(counts) == 1 and not every_key:
            outputs = {counts[0]: output}
        else:
            outputs = {t: output.with_name(f"{output.stem}_{t}{output.suffix or suffix}") for t in counts}
        for path in outputs.values():
            check_output(path, overwrite=force)
        size = stored_input_size(input_size, fan, 224)
        options = ExportOptions(format=fmt, input_size=size, batch=batch, dynamic_batch=dynamic_batch, overwrite=force,
                                atol=atol, unfoldable="keep" if keep_unfoldable else "error")
        served = served_by(counts, fan.fan_plan.frames)
        if served:
            console.print(served, highlight=False)
        for t, path in outputs.items():
            say(f"exporting {t} frames to {path} and checking it against the FAN ...")
            metadata = metadata_props(artifact_metadata(fan, t, size, batch, dynamic_batch, model_file.name))
            results.append(export_verified(fan, t, path, options=replace(options, metadata=metadata)))
    from rich.table import Table

    table = Table(title=f"{model_file.name} exported ({fmt}), each artifact reloaded and checked against the FAN")
    for column in ("frames", "key", "artifact", "size on disk", "max |diff|", "input", "time"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for r in results:
        table.add_row(str(r.frames), str(r.key), str(r.path), _file_size(r.bytes), f"{r.max_diff:.1e}",
                      "x".join(str(d) for d in r.input_shape) if isinstance(r.input_shape[0], int) else str(r.input_shape),
                      f"{r.seconds:.1f} s")
    console.print(table)
    batches = "any batch size (--dynamic-batch)" if dynamic_batch else (
        f"batch fixed at {batch}: a batch of another size fails (torch.export: 'Guard failed: x.size()[0] == {batch}'); "
        "export with --dynamic-batch for any batch size")
    console.print(f"all within --atol {atol:g}; {batches}", highlight=False)
    console.print(input_line(fan, size), highlight=False)


def _export_every_frame_count(fan, model_file: Path, output, fmt: str, size: int, batch: int, dynamic_batch: bool,
                              max_frames, atol: float, force: bool, say) -> None:
    """`fan-convert export` without --frames: one verified artifact with a dynamic frame axis, its
    size measured against one specialized export (of the largest key) made alongside."""
    import tempfile

    from ..deploy.dynamic import export, frame_multiple, frame_range
    from ..deploy.export import WRITERS, export_verified
    from ..deploy.metadata import every_frame_count_metadata, metadata_props
    from ..io import check_output

    keys = tuple(fan.fan_plan.frames)
    path = output if output is not None else model_file.with_name(f"{model_file.name.split('.')[0]}{WRITERS[fmt].suffix}")
    check_output(path, overwrite=force)
    multiple = frame_multiple(fan)
    low, high = frame_range(keys, max_frames, multiple)
    metadata = every_frame_count_metadata(fan, size, (low, high), multiple, batch, dynamic_batch, model_file.name)
    result = export(fan, path, format=fmt, input_size=size, batch=batch, dynamic_batch=dynamic_batch, max_frames=max_frames,
                    overwrite=force, atol=atol, metadata=metadata_props(metadata))
    say(f"measuring one specialized export ({keys[-1]} frames) for the size comparison ...")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        one = export_verified(fan, keys[-1], Path(tmp) / f"one{WRITERS[fmt].suffix}", format=fmt, input_size=size, batch=batch,
                              dynamic_batch=dynamic_batch, atol=atol).bytes
    from rich.table import Table

    table = Table(title=f"{model_file.name} exported ({fmt}) once for every frame count, reloaded and checked against the FAN")
    for column in ("frames", "key", "max |diff|"):
        table.add_column(column, justify="right")
    for t, diff in result.checked.items():
        table.add_row(str(t), f"{min(keys, key=lambda k: (abs(k - t), -k))}" + ("" if t in keys else " (nearest)"), f"{diff:.1e}")
    console.print(table)
    skipped = "".join(f"; not checked at {t} frames: the FAN itself fails there ({why})" for t, why in result.skipped.items())
    console.print(f"{result.path}: {_file_size(result.bytes)}, {result.bytes / one:.3f}x one specialized export "
                  f"({_file_size(one)} at {keys[-1]} frames; one per key: about {_file_size(one * len(keys))}); takes {low} to "
                  f"{high} frames{f' (multiples of {multiple})' if multiple > 1 else ''}, runs the nearest key of "
                  f"{', '.join(map(str, keys))} (a tie: the higher); all within --atol "
                  f"{atol:g}{skipped}", highlight=False)
    console.print(input_line(fan, size).replace("T frames", "T frames (any T in range)"), highlight=False)


@app.command()
def budget(
    model_file: Path = typer.Argument(..., metavar="MODEL_FILE", help="A FAN .safetensors, or the one artifact for every frame "
                                      "count (.onnx or .pt2 from `fan-convert export` without --frames)."),
    latency_ms: float = typer.Option(..., "--latency-ms", help="Latency budget for one forward of --batch clips, in ms."),
    device: opt.Device = "cpu",
    batch: Optional[int] = typer.Option(
        None, "--batch", help="Clips per forward (default 1; an artifact: the batch it was exported for, any with --dynamic-batch)."),
    input_size: opt.InputSize(112) = None,
    threads: Optional[int] = typer.Option(
        None, "--threads", help="torch.set_num_threads (an .onnx: onnxruntime's intra-op threads) while measuring (default: theirs)."),
    accuracy: Optional[Path] = typer.Option(None, "--accuracy", help="`fan-convert eval --json` results: the most accurate T."),
    frames: opt.Frames = None,
    warmup: int = typer.Option(3, "--warmup", help="Untimed forwards per frame count."),
    repeats: int = typer.Option(20, "--repeats", help="Timed forwards per frame count (the median is used)."),
    as_json: bool = typer.Option(False, "--json", help="Print the table and the choice as JSON."),
    trust_factory: opt.TrustFactory = False,
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Load a .pt2 artifact: torch.export.load can fall back to unpickling (runs code from the file)."),
) -> None:
    """Measure the specialized model (or the all-frame-counts artifact) at each T; choose the largest (or most accurate) that fits.

    --frames: the candidates (default: the trained keys and every T in --accuracy). Frame counts
    already over the budget are not measured further, nor are larger ones. Given the one artifact
    for every frame count (model.onnx / model.pt2), that file is run at each T on the CPU, at the
    clip size recorded in it (a .pt2 needs --trust-pickle).
    """
    artifact = model_file.suffix.lower() in (".onnx", ".pt2")
    with step(f"loading {model_file} ...", ImportError):
        from ..deploy.budget import choose_frames, choose_frames_for_artifact, read_accuracy

        table = read_accuracy(accuracy) if accuracy is not None else None
        if artifact:
            from ..deploy.artifact import read_artifact

            recorded = read_artifact(model_file)
            if device != "cpu":
                raise ValueError(f"--device {device} does not apply to an artifact: {model_file.name} runs on the CPU "
                                 "(onnxruntime / torch.export); leave --device out, or pass the FAN file")
            size = recorded.size
            if input_size is not None and (input_size, input_size) != size:
                raise ValueError(f"--input-size {input_size} does not apply: {model_file.name} takes {size[0]}x{size[1]} clips "
                                 "(recorded at export); leave --input-size out, or export again at that size")
        else:
            fan = _load_fan(model_file, trust_factory, "budget")
    with step("measuring ...", ImportError):
        if artifact:
            result = choose_frames_for_artifact(recorded, latency_ms, candidates=frames or None, batch=batch, threads=threads,
                                                accuracy=table, warmup=warmup, repeats=repeats, progress=progress,
                                                trust_pickle=trust_pickle)
        else:
            size = stored_input_size(input_size, fan, 112)
            result = choose_frames(fan, latency_ms, candidates=frames or None, batch=1 if batch is None else batch, size=size,
                                   device=device, threads=threads, accuracy=table, warmup=warmup, repeats=repeats,
                                   progress=progress)
    if result.chosen is None:
        _fail(result.message)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    from rich.table import Table

    view = Table(title=f"{model_file.name}: latency budget {latency_ms:g} ms")
    for column in ("frames", "key", "latency (ms)", "top-1", "fits"):
        view.add_column(column, justify="right")
    for r in result.rows:
        style = "bold green" if r.t == result.chosen else None
        latency = "not measured" if r.latency_ms is None else f"{r.latency_ms:.1f}"
        view.add_row(str(r.t), str(r.key) + ("" if r.trained else " (nearest)"), latency,
                     "-" if r.accuracy is None else f"{r.accuracy:.2f}", "yes" if r.fits else "no", style=style)
    console.print(view)
    console.print(f"chosen: {result.message}", highlight=False)
