"""One artifact for every frame count: the FAN exported once with a dynamic frame axis, picking
the sub-network of the nearest trained key from the input's frame count at run time.

    result = export(fan, "model.onnx", input_size=112)      # or "model.pt2"
    result.checked     # {T: max |artifact - FAN|} at every key and at untrained T between and outside them

How: :func:`dynamic_form` turns a copy of the FAN into its branch-free form (every norm bank a
:class:`~fan_convert.nn.stacked.StackedNorm`, every alteration a stacked one, gathering the active
key's row by an index computed from T; see :mod:`fan_convert.nn.stacked`), which
:func:`torch.export.export` traces once with the frame axis a ``Dim``. The artifact is written
atomically and verified, loaded back, against the FAN at every T checked.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.fx.experimental._config as fx_config
from torch import nn

from ..clips import fresh
from ..context import check_frame_count, nearest_key
from ..errors import describe
from ..io.atomic import atomic_write, check_output
from ..nn.alteration import ResidualAlteration, WeightAlteration
from ..nn.frame_following import FrameFollowing
from ..nn.norm_bank import NormBank
from ..nn.stacked import FrameIndexed, StackedAlteration, StackedNorm, StackedResidualAlteration
from ..nn.time_pool import AdaptiveTimePool3d
from ..surgery import get_plan, replace_module
from ..surgery import rules as surgery_rules
from .clips import make_clip
from .export import WRITERS, ExportError, VerificationError, _check_packages, _max_diff, format_for, full_fp32
from .guards import GuardLog
from .metadata import every_frame_count_metadata, input_size_of, metadata_props

__all__ = ["dynamic_form", "export", "DynamicExportResult", "check_frames_for", "frame_range", "frame_multiple"]


@dataclass(frozen=True)
class DynamicExportResult:
    """One verified all-frame-counts artifact."""

    path: Path
    format: str
    keys: tuple[int, ...]  # the trained keys it holds
    frames: tuple[int, int]  # the frame counts it takes: (min, max)
    bytes: int  # size on disk
    checked: dict[int, float] = field(default_factory=dict)  # T -> max |artifact(x) - fan(x)|
    skipped: dict[int, str] = field(default_factory=dict)  # default T the FAN itself does not run at -> why
    input_shape: tuple = ()  # the traced clip's shape
    seconds: float = 0.0

    @property
    def max_diff(self) -> float:
        return max(self.checked.values())


def dynamic_form(fan: nn.Module, max_frames: int | None = None) -> FrameIndexed:
    """The branch-free form of ``fan`` for export (a deep copy; ``fan`` is left alone): every
    :class:`~fan_convert.nn.NormBank` becomes a :class:`~fan_convert.nn.stacked.StackedNorm`,
    every :class:`~fan_convert.nn.WeightAlteration` a
    :class:`~fan_convert.nn.stacked.StackedAlteration` (or, its scales equal at every key, the
    layer with them folded in), every ``ResidualAlteration`` a stacked one, under a
    :class:`~fan_convert.nn.stacked.FrameIndexed` root that reads T from the input. Position
    tables that grow with the clip are made long enough for ``max_frames`` (default: the top of
    :func:`frame_range`) and sliced.

    Raises ValueError naming the layer when a part cannot take a dynamic frame count.

    Example::

        form = dynamic_form(fan)
        form(clip_6) == fan(clip_6)   # key 8's sub-network, chosen by a gather instead of a branch
    """
    plan = get_plan(fan)
    for path, m in fan.named_modules():
        if isinstance(m, AdaptiveTimePool3d) and m.mode == "max" and m.return_indices:
            raise ValueError(f"'{path}' is a max pool over time that returns indices; its indices depend on the "
                             "traced T, so it cannot be exported with a dynamic frame axis (export one T: --frames)")
    model = copy.deepcopy(fan).eval()
    longest = frame_range(plan.frames, max_frames)[1]
    for path, m in list(model.named_modules()):
        if callable(getattr(type(m), "extend_to", None)):
            m.extend_to(longest)
        if isinstance(m, NormBank):
            replace_module(model, path, StackedNorm(m))
        elif isinstance(m, WeightAlteration):
            stacked = StackedAlteration(m)
            replace_module(model, path, stacked if stacked._stacked else m.specialize(m.keys[0]))
        elif isinstance(m, ResidualAlteration):
            replace_module(model, path, StackedResidualAlteration(m))
    keyed = surgery_rules.fan_layer_types("norm", "alteration")
    left = [p for p, m in model.named_modules() if isinstance(m, keyed)]
    if left:
        raise ValueError(f"'{left[0]}' ({type(model.get_submodule(left[0])).__name__}) has no branch-free form: "
                         "it cannot be exported for every frame count; export one T at a time (--frames)")
    return FrameIndexed(model, plan.frames, plan.frame_axis).eval()


def frame_range(keys: Sequence[int], max_frames: int | None = None, multiple: int = 1) -> tuple[int, int]:
    """The frame counts an artifact takes by default: 2 to four times the largest key (at least
    32); with tubelets of ``multiple`` frames (:func:`frame_multiple`), two tubelets to the last
    whole tubelet within that.

    Not one step: a one-frame clip (or one tubelet) makes size-1 axes whose strides torch.export
    specialises on (a (B, C, T, H, W) clip folded to (B*T, C, H, W) is a view only when T != 1),
    so one graph cannot serve one time step and more alike; a one-frame video is no video for
    these models anyway."""
    high = check_frame_count(max_frames if max_frames is not None else max(4 * max(keys), 32), "max_frames")
    low = 2 * multiple
    if high < low:
        raise ValueError(f"max_frames={high} is below the smallest clip this model takes as a video ({low} frames)")
    return low, high - high % multiple


def check_frames_for(keys: Sequence[int], high: int, low: int = 2, multiple: int = 1) -> list[int]:
    """The frame counts to verify by default: every key, each tie between neighbours (which goes
    to the higher key) and the count just below it, half the smallest key, and past the largest
    (those in ``low..high`` that are whole multiples of ``multiple``).

    Example::

        check_frames_for((4, 8, 16), 64)   # [2, 4, 5, 6, 8, 11, 12, 16, 20]
    """
    keys = sorted(keys)
    ts = set(keys) | {max(2, keys[0] // 2), min(high, keys[-1] + max(1, keys[-1] // 4))}
    for a, b in zip(keys, keys[1:], strict=False):
        if (a + b) % 2 == 0:
            ts |= {(a + b) // 2, (a + b) // 2 - 1}
        else:
            ts |= {(a + b) // 2, (a + b) // 2 + 1}
    return sorted(t for t in ts if low <= t <= high and t % multiple == 0)


def _reason(err: BaseException) -> str:
    """The first line of an export error, and for a violated frame-axis constraint the first
    guard that fixed T (the line that says which size expression the model specialised on)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    guard = next((line.lstrip("- ") for line in lines[1:] if line.startswith("- ")), None)
    return describe(err) + (f": {guard[:300]}" if guard else "")


def frame_multiple(fan: nn.Module) -> int:
    """The frame counts the FAN takes are multiples of this: the least common multiple of its
    tubelet sizes (layers that embed several frames as one time step), 1 when there are none."""
    unit = 1
    for m in fan.modules():
        if isinstance(m, FrameFollowing):
            unit = math.lcm(unit, m.frame_unit)
    return unit


def _dynamic_shapes(example: Any, axis: int, low: int, high: int, dynamic_batch: bool, unit: int = 1) -> tuple:
    if unit == 1:
        frames = torch.export.Dim("frames", min=low, max=high)
    else:  # whole tubelets only: T = unit * steps
        frames = unit * torch.export.Dim("steps", min=low // unit, max=high // unit)
    dims = {axis: frames}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    return ((dims,),)  # FrameIndexed.forward(*args): one entry, the tuple of positional inputs


def export(fan: nn.Module, path: str | os.PathLike, *, format: str | None = None, frames: Sequence[int] | None = None,
           input_size: int | Sequence[int] | None = None, batch: int = 1, dynamic_batch: bool = False, max_frames: int | None = None,
           overwrite: bool = False, atol: float = 1e-4, metadata: dict[str, str] | None = None) -> DynamicExportResult:
    """Export ``fan`` once, for every frame count: one ``.onnx`` or ``.pt2`` file whose frame axis
    is dynamic (2 to ``max_frames``, default four times the largest key) and that runs, at each
    input's T, the sub-network of the nearest trained key (a tie to the higher key), as the FAN
    does. Shared weights are stored once; per-key norm tensors and alteration scales once per key.

    Verified before it is written: loaded back (onnxruntime / :func:`torch.export.load`) and run
    at every T of ``frames`` (default: :func:`check_frames_for`, every key and untrained counts
    between and outside them), each output within ``atol`` of the FAN's (fp32, max |diff|).
    Written atomically: a failure leaves no file and never replaces an existing one.

    ``input_size``: the frame size (an int or ``(H, W)``); default the crop the FAN's file
    records, else the model's own, else 224 (as `fan-convert export`). ``metadata``: the strings
    stored in the artifact; default the ``fan_convert`` record `fan-convert export` writes (frame
    range, keys, classes, preprocessing, input), which `fan-convert budget` and
    :func:`~fan_convert.deploy.artifact.read_artifact` read.

    Raises:
        ExportError: the model does not export with a dynamic frame axis (with the reason);
        VerificationError: the artifact differs from the FAN at some T; ImportError: ONNX
        packages missing; ValueError / OutputError: bad arguments or output path.

    Example::

        result = fan_convert.export(fan, "r3d.onnx", input_size=112)
        session = onnxruntime.InferenceSession("r3d.onnx")
        session.run(None, {"clip": clip_of_any_length})
    """
    started = time.perf_counter()
    plan = get_plan(fan)
    input_size = input_size_of(fan) if input_size is None else input_size
    format = format_for(path, format)
    if not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol!r}")
    check_frame_count(batch, "batch")
    path = check_output(path, overwrite)
    _check_packages(format)
    keys = tuple(plan.frames)
    multiple = frame_multiple(fan)
    low, high = frame_range(keys, max_frames, multiple)
    if high < keys[-1]:
        raise ValueError(f"max_frames={high} is below the largest trained key {keys[-1]}; give at least {keys[-1]}")
    given = frames is not None
    ts = sorted({check_frame_count(t, "each of frames") for t in frames}) if given else check_frames_for(keys, high, low, multiple)
    outside = [t for t in ts if not low <= t <= high]
    if outside:
        raise ValueError(f"frames {outside} are outside the artifact's range {low}..{high}; raise max_frames or drop them")
    device = next((p.device for p in fan.parameters()), torch.device("cpu"))
    clips = {t: make_clip(fan, t, input_size, batch=batch, device=device, seed=t) for t in ts}
    if any(not isinstance(c, torch.Tensor) for c in clips.values()):
        raise ExportError("multi-pathway models (a list of clips, e.g. SlowFast) have no all-frame-counts export yet; "
                          "export one T at a time (--frames)")

    was_training = fan.training
    fan.eval()
    want, skipped = {}, {}
    try:
        with torch.no_grad(), full_fp32():
            for t in ts:
                try:
                    want[t] = fan(fresh(clips[t]))
                except Exception as err:
                    if given or t in keys:
                        raise ValueError(f"the FAN itself does not run at {t} frames ({describe(err)})") from err
                    skipped[t] = describe(err)
    finally:
        fan.train(was_training)
    for t in skipped:
        del clips[t]

    try:
        form = dynamic_form(fan, high)
    except ValueError as err:
        raise ExportError(str(err)) from err
    trace = make_clip(fan, keys[-1], input_size, batch=2 if dynamic_batch and batch == 1 else batch, device=device)
    shapes = _dynamic_shapes(trace, plan.frame_axis, low, high, dynamic_batch, multiple)
    try:
        # Size-oblivious: a time axis that strided layers bring down to 1 step at small T (R3D's at
        # T <= 8) is not specialised on; torch.onnx's own capture does the same. Every T is verified.
        with warnings.catch_warnings(), torch.no_grad(), fx_config.patch(backed_size_oblivious=True), GuardLog(form.model) as log:
            warnings.simplefilter("ignore")
            program = torch.export.export(form, (fresh(trace),), dynamic_shapes=shapes, strict=False)
    except Exception as err:
        culprit = log.culprit()
        why = culprit.describe() if culprit is not None else _reason(err)
        raise ExportError(f"torch.export could not export the model with a dynamic frame axis: {why}; "
                          "export one T at a time (--frames)") from err
    del form
    if metadata is None:  # what `fan-convert budget` and read_artifact need: classes, preprocessing, frame range, input
        metadata = metadata_props(every_frame_count_metadata(fan, input_size, (low, high), multiple, batch, dynamic_batch))
    checked: dict[int, float] = {}

    def write(temp: str) -> None:
        run = WRITERS[format].write(program, trace, temp, metadata)
        with torch.no_grad(), full_fp32():
            for t, x in clips.items():
                try:
                    got = run(x)
                except Exception as err:
                    raise VerificationError(f"the exported model does not run at {t} frames ({describe(err)}); "
                                            f"{path} was not written") from err
                checked[t] = diff = _max_diff(got, want[t])
                if not diff <= atol:
                    raise VerificationError(
                        f"verification failed: at {t} frames (key {nearest_key(t, keys)}) the exported model differs from "
                        f"the FAN by {diff:.3g} (max |diff|, tolerance {atol:g}); {path} was not written")

    written = atomic_write(path, write, overwrite)
    return DynamicExportResult(
        path=written, format=format, keys=keys, frames=(low, high), bytes=written.stat().st_size, checked=checked,
        skipped=skipped, input_shape=tuple(trace.shape), seconds=time.perf_counter() - started)
