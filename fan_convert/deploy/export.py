"""Deployable artifacts for one frame count: the FAN specialized to T (the plain architecture,
alterations folded), exported with :func:`torch.export.export` to a ``.pt2`` file or to ONNX,
written atomically and verified by loading the artifact back and comparing it with the FAN.

    path = export_specialized(fan, 8, "r3d_8.pt2", input_size=112)
    path = export_specialized(fan, 8, "r3d_8.onnx", format="onnx")   # needs onnx, onnxscript, onnxruntime
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from ..clips import fresh
from ..context import check_frame_count, infer_frames, nearest_key
from ..context import frames as select_frames
from ..errors import describe
from ..io.atomic import atomic_write, check_output
from ..surgery import get_plan, specialize
from .clips import make_clip

__all__ = [
    "FORMATS", "WRITERS", "ExportError", "format_for", "ExportOptions", "ExportResult", "VerificationError", "Writer", "export_specialized",
    "export_verified", "make_clip",
]


class ExportError(ValueError):
    """The specialized model could not be exported."""


class VerificationError(ValueError):
    """The exported artifact does not compute what the FAN computes at that frame count."""


@dataclass(frozen=True)
class ExportResult:
    """One verified artifact: where it is, what it serves, and how close it is to the FAN."""

    path: Path
    frames: int  # the frame count the artifact takes
    key: int  # the trained key (sub-network) serving it
    format: str
    bytes: int  # size on disk
    max_diff: float  # max |artifact(x) - fan(x)| on the verification clip
    input_shape: tuple  # shape(s) of the verification clip
    seconds: float  # specialize + export + write + verify


def _max_diff(got: Any, want: Any) -> float:
    got, want = tree_leaves(got), tree_leaves(want)
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, want, strict=True):
        a, b = torch.as_tensor(a).detach().cpu().float(), torch.as_tensor(b).detach().cpu().float()
        if a.shape != b.shape:
            return float("inf")
        diff = (a - b).abs().max().item() if a.numel() else 0.0
        if diff != diff:  # NaN
            return float("nan")
        worst = max(worst, diff)
    return worst


def _check_packages(format: str) -> None:
    writer = WRITERS[format]
    missing = []
    for name in writer.packages:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"{format} export needs {', '.join(writer.packages)} (missing: {', '.join(missing)}); install them with: {writer.install}"
        )


def _check_example(example: Any, t: int, frame_axis: int) -> Any:
    leaves = tree_leaves(example)
    if not leaves or not all(isinstance(v, torch.Tensor) for v in leaves):
        raise ValueError("example_input must be a tensor or a list of tensors (SlowFast: [slow, fast])")
    seen = infer_frames((example,), {}, frame_axis)
    if seen is not None and seen != t:
        raise ValueError(f"example_input has {seen} frames but frames={t}; give a clip of {t} frames")
    return example


def _batch_of(example: Any) -> int:
    return tree_leaves(example)[0].shape[0]


def _grow_batch(example: Any, batch: int) -> Any:
    """The same clip repeated to ``batch`` videos (noise added so videos differ)."""
    def grow(v: torch.Tensor) -> torch.Tensor:
        reps = -(-batch // v.shape[0])
        out = v.repeat(reps, *([1] * (v.dim() - 1)))[:batch].clone()
        out[v.shape[0]:] += 0.1 * torch.randn_like(out[v.shape[0]:])
        return out

    return tree_map(grow, example)


def _export_program(plain: nn.Module, example: Any, dynamic_batch: bool, t: int):
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = (tree_map(lambda v: {0: batch}, example),)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(plain, (fresh(example),), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as err:
        raise ExportError(f"torch.export could not export the {t}-frame model ({describe(err)})") from err


def _readable(temp: str) -> None:
    """Give the temporary file the mode a plain ``open()`` would (mkstemp makes it owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)


def _without_debug_info(program):
    """The program without what running it never reads: each node's Python stack trace and
    module path (only ``torch.export.unflatten`` uses those) and the stored example inputs (a
    whole clip). Half of a small model's file was these; the graph, the weights and the input
    signature are unchanged."""
    for node in program.graph.nodes:
        for key in ("stack_trace", "nn_module_stack"):
            node.meta.pop(key, None)
    program.example_inputs = None
    return program


def _write_pt2(program, example: Any, temp: str, metadata: dict[str, str] | None = None) -> Any:
    program = _without_debug_info(program)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=dict(metadata or {}))
    Path(temp).write_bytes(buffer.getvalue())
    loaded = torch.export.load(io.BytesIO(Path(temp).read_bytes())).module()
    return lambda x: loaded(fresh(x))


def _write_onnx(program, example: Any, temp: str, metadata: dict[str, str] | None = None) -> Any:
    import onnxruntime

    single = isinstance(example, torch.Tensor)
    names = {"input_names": ["clip"], "output_names": ["logits"]} if single else {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            onnx_program = torch.onnx.export(program, (fresh(example),), dynamo=True, verbose=False, **names)
        except Exception as err:
            raise ExportError(f"torch.onnx could not convert the exported program ({describe(err)})") from err
        for node in onnx_program.model.graph.all_nodes():  # per-node debug records (stack traces, fx names): up to 3 KB a node
            node.metadata_props.clear()
        onnx_program.model.metadata_props.update(metadata or {})
        try:  # one self-contained file (the weights inside: ONNX's protobuf limit is 2 GB)
            onnx_program.save(temp, external_data=False)
        except (ValueError, RuntimeError) as err:
            raise ExportError(f"could not write a single-file ONNX model ({describe(err)}); "
                              "models over 2 GB need --format torch-export") from err
    options = onnxruntime.SessionOptions()  # torch's thread count (onnxruntime's default pins a thread to every core)
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(temp, options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]

    def run(x):
        leaves = [v.detach().cpu().numpy() for v in tree_leaves(x)]
        if len(leaves) != len(inputs):
            raise VerificationError(f"the ONNX model takes {len(inputs)} inputs, the clip has {len(leaves)} tensors")
        return [torch.from_numpy(o) for o in session.run(None, dict(zip(inputs, leaves, strict=True)))]

    return run


@dataclass(frozen=True)
class Writer:
    """One export format: the file suffix, the function that writes the exported program to a
    path and returns a runner of the written artifact, and the packages it needs."""

    suffix: str
    write: Callable[..., Callable[[Any], Any]]  # (program, example, path, metadata) -> run(clip)
    packages: tuple[str, ...] = ()
    install: str = ""


WRITERS: dict[str, Writer] = {
    "torch-export": Writer(".pt2", _write_pt2),
    "onnx": Writer(".onnx", _write_onnx, ("onnx", "onnxscript", "onnxruntime"),
                   "pip install 'fan-convert[onnx]' (or: pip install onnx onnxscript onnxruntime)"),
}
FORMATS = tuple(WRITERS)


def format_for(path: str | os.PathLike, format: str | None = None) -> str:
    """The export format for ``path``: ``format`` when given (it must agree with a ``.pt2`` or
    ``.onnx`` suffix), else the one the suffix names, else ``"torch-export"``.

    Example::

        format_for("r3d_8.onnx")                  # "onnx"
        format_for("r3d_8.pt2", "onnx")           # ValueError: the suffix says torch-export
    """
    if format is not None and format not in WRITERS:
        raise ValueError(f"format {format!r} is not supported: use one of {', '.join(WRITERS)}")
    suffix = Path(path).suffix.lower()
    named = next((name for name, writer in WRITERS.items() if writer.suffix == suffix), None)
    if format is not None and named is not None and named != format:
        kind = {"onnx": "an ONNX file", "torch-export": "a torch.export (.pt2) file"}.get(named, f"a {named} file")
        raise ValueError(f"--format {format} (format=) contradicts the output name '{Path(path).name}', which is {kind}; "
                         f"name it {Path(path).stem}{WRITERS[format].suffix}, or leave --format out")
    return format or named or "torch-export"


@dataclass(frozen=True)
class ExportOptions:
    """How to export and verify (shared by :func:`export_verified` and :func:`export_specialized`).

    Attributes:
        format: a key of :data:`WRITERS` (default: the output's suffix, ``.onnx`` or ``.pt2``;
            else torch-export): ``"torch-export"`` (:func:`torch.export.export`, saved
            with :func:`torch.export.save`, ``.pt2``) or ``"onnx"`` (the dynamo ONNX exporter, one
            self-contained file; needs ``pip install 'fan-convert[onnx]'``).
        example_input: the clip to export and verify with: a tensor ``(B, 3, T, H, W)``, or a
            list for multi-pathway models (SlowFast: ``[slow, fast]``). Default: a random clip of
            ``batch`` videos at ``input_size``.
        input_size: spatial size of the default clip, an int or ``(H, W)``.
        batch: videos in the default clip.
        dynamic_batch: export with a dynamic batch dimension (traced at batch 2 at least, and
            verified at two batch sizes); otherwise every input shape is fixed.
        overwrite: replace an existing output file.
        atol: the largest allowed ``max |artifact(x) - fan(x)|``.
        unfoldable: ``"error"`` or ``"keep"`` for kernel > 1 alterations (see :func:`fan_convert.specialize`).
        metadata: strings stored in the artifact (ONNX ``metadata_props``; ``.pt2`` extra files,
            read with ``torch.export.load(path, extra_files={name: ""})``).
    """

    format: str | None = None
    example_input: Any = None
    input_size: int | Sequence[int] = 224
    batch: int = 1
    dynamic_batch: bool = False
    overwrite: bool = False
    atol: float = 1e-4
    unfoldable: str = "error"
    metadata: dict | None = None


@contextlib.contextmanager
def full_fp32():
    """TF32 off inside (CUDA convolutions use it by default): the verification reference must be
    fp32, as onnxruntime's CPU run is, or TF32's rounding alone exceeds the tolerance."""
    try:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    except RuntimeError:  # precision set through torch's newer fp32_precision API: leave it as chosen
        yield
        return
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def export_verified(fan: nn.Module, frames: int, path: str | os.PathLike, *, options: ExportOptions | None = None,
                    **overrides: Any) -> ExportResult:
    """Like :func:`export_specialized`, returning an :class:`ExportResult` (path, key, size on
    disk, max difference from the FAN). ``options`` and keyword ``overrides``: see :class:`ExportOptions`.

    Example::

        result = export_verified(fan, 8, "r3d_8.pt2", input_size=112)
        print(result.key, result.bytes, result.max_diff)
    """
    o = replace(options or ExportOptions(), **overrides)
    format, example_input, input_size, batch = o.format, o.example_input, o.input_size, o.batch
    dynamic_batch, overwrite, atol, unfoldable = o.dynamic_batch, o.overwrite, o.atol, o.unfoldable
    started = time.perf_counter()
    plan = get_plan(fan)
    t = check_frame_count(frames, "frames")
    format = format_for(path, format)
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol!r}")
    path = check_output(path, overwrite)
    _check_packages(format)
    if example_input is None:
        device = next((p.device for p in fan.parameters()), torch.device("cpu"))
        example_input = make_clip(fan, t, input_size, batch=batch, device=device)
    example = _check_example(example_input, t, plan.frame_axis)
    trace_example = _grow_batch(example, 2) if dynamic_batch and _batch_of(example) == 1 else example
    checks = [example] + ([_grow_batch(example, _batch_of(example) + 1)] if dynamic_batch else [])

    was_training = fan.training
    fan.eval()
    try:
        with torch.no_grad(), select_frames(t), full_fp32():
            want = [fan(fresh(x)) for x in checks]
    finally:
        fan.train(was_training)
    plain = specialize(fan, t, unfoldable=unfoldable).eval()
    program = _export_program(plain, trace_example, dynamic_batch, t)
    del plain
    report: dict[str, float] = {}

    def write(temp: str) -> None:
        run = WRITERS[format].write(program, trace_example, temp, o.metadata)
        _readable(temp)
        with torch.no_grad(), full_fp32():
            diff = max(_max_diff(run(x), w) for x, w in zip(checks, want, strict=True))
        report["max_diff"] = diff
        if not diff <= atol:
            raise VerificationError(
                f"verification failed: the exported {t}-frame model differs from the FAN at {t} frames by "
                f"{diff:.3g} (max |diff|, tolerance {atol:g}); {path} was not written"
            )

    written = atomic_write(path, write, overwrite)
    shapes = tuple(tuple(v.shape) for v in tree_leaves(example))
    return ExportResult(
        path=written, frames=t, key=nearest_key(t, plan.frames), format=format, bytes=written.stat().st_size,
        max_diff=report["max_diff"], input_shape=shapes[0] if len(shapes) == 1 else shapes,
        seconds=time.perf_counter() - started,
    )


def export_specialized(fan: nn.Module, frames: int, path: str | os.PathLike, *, options: ExportOptions | None = None,
                       **overrides: Any) -> Path:
    """Export the FAN specialized to ``frames`` (the plain architecture, alterations folded) as a
    deployable artifact, verified, and return its path.

    Args:
        fan: an adapted model (:func:`fan_convert.adapt` or :func:`fan_convert.load`).
        frames: the frame count T the artifact takes (an untrained T uses the nearest key).
        path: output file; ``.pt2`` for ``"torch-export"``, ``.onnx`` for ``"onnx"`` by convention.
        options / overrides: how to export and verify, an :class:`ExportOptions` and/or its
            fields as keywords (``format="onnx"``, ``input_size=112``, ``atol=1e-3``, ...).

    The artifact is written to a temporary file next to ``path``, loaded back
    (:func:`torch.export.load` / onnxruntime) and run on the clip; its output must match
    ``with fan_convert.frames(T): fan(clip)`` within ``atol``. Only then is it renamed onto
    ``path``: a failure (export, verification, full disk) leaves no file behind and never
    replaces an existing one.

    Raises:
        ExportError: the model does not export; VerificationError: the outputs differ;
        ImportError: ONNX packages missing; ValueError / OutputError: bad arguments or output path.

    Example::

        fan_convert.deploy.export_specialized(fan, 8, "r3d_8.pt2", input_size=112)
        model = torch.export.load("r3d_8.pt2").module()
    """
    return export_verified(fan, frames, path, options=options, **overrides).path
