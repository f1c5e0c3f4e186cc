"""Branch-free forms of the frame-keyed layers, for one artifact that serves every frame count.

A FAN picks its sub-network in Python (``self.norms[str(key)]``), which a trace cannot keep: it
records the branch taken at the traced T. The stacked forms here hold every key's tensors on a
leading key axis and pick the active key's row with a gather (``index_select``) by a **key-index
tensor** computed once per call from the input's frame count, so one traced graph serves every
T and the frame count stays symbolic:

    idx = sum_i [2T >= k_i + k_(i+1)]     (keys k_0 < k_1 < ...: the nearest key, a tie to the higher)

:class:`FrameIndexed` is the root: it reads T from the input's shape (a ``torch.SymInt`` while
torch.export traces a dynamic frame axis), declares it for the run (:func:`frame_index`), and
every stacked layer reads the index with :func:`key_index`. Tensors equal at every key are stored
once, unstacked; a weight alteration whose scales are equal at every key is folded into its
layer. Built from a FAN by :func:`fan_convert.deploy.dynamic.dynamic_form`; export only (eval
mode, no training: the stacked tensors are buffers).

    model = FrameIndexed(stacked_copy_of_fan, keys=(4, 8, 16))
    model(clip_of_6_frames)   # key 8's norms and alterations, chosen by a gather
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..context import NoActiveFrames, model_frames
from .alteration import ResidualAlteration, WeightAlteration, alter_weight, weight_name
from .norm_bank import NormBank

__all__ = ["FrameIndexed", "StackedNorm", "StackedAlteration", "StackedResidualAlteration", "frame_index", "key_index",
           "key_index_for"]

_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Run:
    """The frame count of the running call, and the key index per key set (computed once)."""

    def __init__(self, frames: Any):
        self.frames = frames
        self.indices: dict[tuple[int, ...], torch.Tensor] = {}


_run: ContextVar[_Run | None] = ContextVar("fan_convert_key_index_run", default=None)


def key_index_for(frames: Any, keys: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """A ``(1,)`` int64 tensor: the position in sorted ``keys`` of the key serving ``frames``
    (nearest, a tie to the higher key), as ``sum_i [2T >= k_i + k_(i+1)]``. ``frames`` may be an
    int, a ``torch.SymInt`` (traced: the result follows the input's frame count) or a tensor.

    Example::

        key_index_for(6, (4, 8, 16))    # tensor([1]): key 8 (6 is a tie between 4 and 8)
        key_index_for(20, (4, 8, 16))   # tensor([2]): key 16
    """
    keys = sorted(keys)
    t = frames if isinstance(frames, torch.Tensor) else torch.scalar_tensor(frames, dtype=torch.int64, device=device)
    t = t.to(torch.int64).reshape(1)
    if len(keys) == 1:
        return torch.zeros_like(t)
    cuts = torch.tensor([a + b for a, b in zip(keys, keys[1:], strict=False)], dtype=torch.int64, device=t.device)
    return (2 * t >= cuts).to(torch.int64).sum().reshape(1)


def _refuse_empty_clips(frames: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Refuse a clip of 0 frames inside the graph, so that an exported artifact refuses it too.
    torch.export keeps no runtime check of a dynamic axis' lower bound (its input check lets 0
    and 1 through), ``torch._check(T >= 1)`` leaves nothing in the graph (T >= 2 is assumed), and
    ONNX has no assert: here the float inputs are multiplied by ``[1.0][T < 1]``, a one-element
    gather whose index is out of range at T = 0 (onnxruntime: "indices element out of data
    bounds"), after ``torch._assert_async`` (kept in a ``.pt2``, dropped from ONNX), which
    names the cause. Exact (x * 1.0) and one multiply per input."""
    clips = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not clips:
        return args, kwargs
    t = torch.scalar_tensor(frames, dtype=torch.int64, device=clips[0].device)
    torch._assert_async(t >= 1, "the clip has 0 frames: give at least one frame on the frame axis")
    gate = torch.ones(1, device=t.device).index_select(0, (t < 1).to(torch.int64).reshape(1))

    def gated(v: Any) -> Any:
        return v * gate.to(v.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    return tuple(gated(v) for v in args), {k: gated(v) for k, v in kwargs.items()}


@contextmanager
def frame_index(frames: Any) -> Iterator[Any]:
    """Run the stacked layers inside for clips of ``frames`` frames (an int or a SymInt)."""
    token = _run.set(_Run(frames))
    try:
        yield frames
    finally:
        _run.reset(token)


def key_index(keys: Sequence[int], site: str = "", device: torch.device | str | None = None) -> torch.Tensor:
    """The key index for ``keys`` in the running call (see :func:`frame_index`), computed once per key set."""
    run = _run.get()
    if run is None:
        where = f" '{site}'" if site else ""
        raise NoActiveFrames(f"the stacked layer{where} runs outside a FrameIndexed model: call the FrameIndexed root "
                             "(fan_convert.deploy.dynamic.dynamic_form(fan)) on a clip, not its inner layers")
    keys = tuple(sorted(keys))
    index = run.indices.get(keys)
    if index is None:
        index = run.indices[keys] = key_index_for(run.frames, keys, device)
    return index


def _pick(stacked: torch.Tensor, keys: Sequence[int], site: str) -> torch.Tensor:
    return stacked.index_select(0, key_index(keys, site, stacked.device)).squeeze(0)


def _buffer_name(name: str) -> str:
    return name.replace(".", "__")


class _Stack(nn.Module):
    """Per-key tensors of one layer: stacked on a key axis (buffer ``name``), or stored once
    (buffer ``name``, no key axis) when every key holds the same values."""

    def __init__(self, layer: nn.Module):
        """``layer``: the bank or alteration stacked (its keys and site name are kept)."""
        super().__init__()
        self.keys, self.site = layer.keys, layer.site
        self._shared: list[str] = []
        self._stacked: list[str] = []

    def _add(self, name: str, values: Sequence[torch.Tensor | None]) -> None:
        first = values[0]
        if first is None:
            return
        if any(v is None or v.shape != first.shape or v.dtype != first.dtype for v in values):
            raise ValueError(f"'{self.site}': '{name}' differs in shape or type between keys; it cannot be stacked")
        shared = all(torch.equal(v, first) for v in values[1:])
        self.register_buffer(_buffer_name(name), (first if shared else torch.stack(list(values))).detach().clone())
        (self._shared if shared else self._stacked).append(name)

    def _tensor(self, name: str) -> torch.Tensor:
        value = getattr(self, _buffer_name(name))
        return value if name in self._shared else _pick(value, self.keys, self.site)


class StackedNorm(_Stack):
    """A :class:`~fan_convert.nn.NormBank` as one norm whose parameters and statistics are
    gathered for the active key. The norm's own ``forward`` runs (any class: ``BatchNorm``,
    ``LayerNorm``, timm's ``BatchNormAct2d`` ...) on a parameter-less template with the gathered
    tensors substituted (:func:`torch.func.functional_call`)."""

    def __init__(self, bank: NormBank):
        super().__init__(bank)
        copies = [bank.norms[str(k)].eval() for k in self.keys]
        self.names = [n for n, _ in copies[0].named_parameters()] + [n for n, _ in copies[0].named_buffers()]
        for name in self.names:
            self._add(name, [c.get_parameter(name) if name in dict(c.named_parameters()) else c.get_buffer(name)
                             for c in copies])
        template = copy.deepcopy(copies[0]).to("meta")  # structure only: every tensor comes from the stack
        self.__dict__["template"] = template  # not a child: its (meta) tensors are not stored

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        tensors = {name: self._tensor(name) for name in self.names if hasattr(self, _buffer_name(name))}
        return functional_call(self.__dict__["template"], tensors, args, kwargs)

    def extra_repr(self) -> str:
        return f"{type(self.__dict__['template']).__name__}, keys={self.keys}, per key: {self._stacked or 'nothing'}"


class StackedAlteration(_Stack):
    """A :class:`~fan_convert.nn.WeightAlteration` with its scales stacked: the layer's weight
    (stored once) times ``1 + s_k`` for the active key, computed at run time."""

    def __init__(self, alteration: WeightAlteration):
        super().__init__(alteration)
        self.base_layer = alteration.base_layer
        self._add("scales", [alteration.scales[str(k)].detach() for k in self.keys])

    @property
    def groups(self) -> int:
        return getattr(self.base_layer, "groups", 1)

    def altered_weight(self) -> torch.Tensor:
        layer = self.base_layer
        return alter_weight(getattr(layer, weight_name(layer)), self._tensor("scales"), self.groups)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        layer = self.base_layer
        if type(layer) in _PLAIN_CONVS or type(layer) is nn.Linear:
            # Scale the input's channels instead of the weight: the same product (zero padding stays
            # zero), an activation-sized multiply instead of a weight-sized one each call, and the
            # weight stays a constant that a runtime can prepack and fuse (onnxruntime does).
            scale = 1 + self._tensor("scales")
            if type(layer) is not nn.Linear:
                scale = scale.reshape(-1, *[1] * len(layer.kernel_size))
            return layer(args[0] * scale)
        return functional_call(layer, {weight_name(layer): self.altered_weight()}, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        # A forward that reads the layer's weight directly (torchvision's Swin3D) gets the altered one.
        modules = self.__dict__["_modules"]
        base = modules.get("base_layer")
        if base is not None and name == weight_name(base) and _run.get() is not None:
            return self.altered_weight()
        try:
            return nn.Module.__getattr__(self, name)
        except AttributeError:
            if base is None or name.startswith("__"):
                raise
            return getattr(base, name)

    def extra_repr(self) -> str:
        return f"keys={self.keys}"


class StackedResidualAlteration(_Stack):
    """A :class:`~fan_convert.nn.ResidualAlteration`: ``layer(x + dw_k(x))`` with the depthwise
    kernels stacked and the active key's gathered."""

    def __init__(self, alteration: ResidualAlteration):
        super().__init__(alteration)
        self.base_layer = alteration.base_layer
        first = alteration.adapters[str(self.keys[0])]
        self.padding, self.channels, self.dims = first.padding, first.in_channels, len(first.kernel_size)
        self._add("kernel", [alteration.adapters[str(k)].weight.detach() for k in self.keys])

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return self.base_layer(x + conv(x, self._tensor("kernel"), None, 1, self.padding, 1, self.channels), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return nn.Module.__getattr__(self, name)
        except AttributeError:
            base = self.__dict__["_modules"].get("base_layer")
            if base is None or name.startswith("__"):
                raise
            return getattr(base, name)


class FrameIndexed(nn.Module):
    """The root of a stacked model: reads the frame count from the input (as the FAN does:
    ``x.shape[frame_axis]``, ``pixel_values`` as ``(B, T, C, H, W)``, the largest T of a list of
    clips) and runs ``model`` inside :func:`frame_index`, so every stacked layer gathers the
    key serving that T."""

    def __init__(self, model: nn.Module, keys: Sequence[int], frame_axis: int = 2):
        super().__init__()
        self.model = model
        self.keys = tuple(sorted(keys))
        self.frame_axis = frame_axis

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        t = model_frames(self.model, args, kwargs, self.frame_axis)
        if t is None:
            raise NoActiveFrames("the model's input has no frame axis: give a (B, C, T, H, W) clip")
        args, kwargs = _refuse_empty_clips(t, args, kwargs)
        with frame_index(t):
            return self.model(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"keys={self.keys}, frame_axis={self.frame_axis}"
