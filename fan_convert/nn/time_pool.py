"""A head pool made adaptive over time: pools all time steps into one at any clip length."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .frame_units import FrameUnits

__all__ = ["AdaptiveTimePool3d"]


def _triple(value: Any) -> tuple[int, int, int]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3
    if len(values) != 3:
        raise ValueError(f"expected 3 values (T, H, W), got {value!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]  # numpy ints (X3D) become ints


class AdaptiveTimePool3d(FrameUnits, nn.Module):
    """Replaces an ``AvgPool3d``/``MaxPool3d`` that pools the whole time axis at the training T.

    At any input length T it pools all T time steps into one, with the original spatial kernel,
    stride, padding, dilation, ``ceil_mode``, ``count_include_pad`` and ``return_indices``. At
    the trained length it makes the very call the original pool made, so the output is
    bit-identical. ``divisor_override`` (a fixed divisor for a ``trained_len``-step window)
    scales with T.

    The original pool's attributes stay readable (``kernel_size``, ``stride``, ``padding``,
    ...: the values at the trained length); ``original_class`` is its class.

    Example::

        pool = AdaptiveTimePool3d(nn.AvgPool3d((8, 7, 7), stride=1), trained_frames=8)
        pool(torch.randn(1, 2048, 4, 7, 7)).shape    # (1, 2048, 1, 1, 1)
        plain4 = pool.specialize(4)                   # nn.AvgPool3d((4, 7, 7), stride=1)
    """

    def __init__(self, pool: nn.Module, trained_frames: int | None = None):
        nn.Module.__init__(self)
        if not isinstance(pool, (nn.AvgPool3d, nn.MaxPool3d)):
            raise TypeError(f"AdaptiveTimePool3d replaces nn.AvgPool3d or nn.MaxPool3d, got {type(pool).__name__}")
        self.original_class = type(pool)
        self.mode = "max" if isinstance(pool, nn.MaxPool3d) else "avg"
        self.kernel_size = _triple(pool.kernel_size)
        self.stride = _triple(pool.stride if pool.stride is not None else pool.kernel_size)
        self.padding = _triple(pool.padding)
        self.ceil_mode = bool(pool.ceil_mode)
        if self.mode == "max":
            self.dilation = _triple(pool.dilation)
            self.return_indices = bool(pool.return_indices)
        else:
            self.count_include_pad = bool(pool.count_include_pad)
            self.divisor_override = pool.divisor_override
            self.dilation = (1, 1, 1)
        if self.padding[0] != 0 or self.dilation[0] != 1:
            raise ValueError(
                f"a pool with temporal padding {self.padding[0]} or dilation {self.dilation[0]} does not cover "
                "every time step with one window; only padding 0 and dilation 1 in time are supported")
        self.trained_len = self.kernel_size[0]
        self.trained_frames = trained_frames

    def forward(self, x: torch.Tensor) -> Any:
        t = x.shape[-3]
        # One window over all t steps (the temporal stride is irrelevant then: one output step).
        # At the trained length this is the original call, argument for argument. No branch on t,
        # so torch.fx traces it and torch.compile sees one graph per shape.
        if isinstance(t, torch.SymInt):  # traced with a dynamic frame axis: a pool's kernel must be an int
            return self._symbolic(x, t)
        kernel = (t,) + self.kernel_size[1:]
        if self.mode == "max":
            return F.max_pool3d(x, kernel, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)
        pooled = F.avg_pool3d(x, kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override)
        if self.divisor_override is None:
            return pooled
        return pooled * (self.trained_len / t)  # divisor d for trained_len steps -> d * t / trained_len

    def _symbolic(self, x: torch.Tensor, t: Any) -> Any:
        """The same pool for a symbolic T (torch.export with a dynamic frame axis): reduce time
        first (mean / max over all T steps: one window, no temporal padding), then the spatial
        pool with a temporal kernel of 1. Equal to the eager call up to float rounding."""
        kernel = (1,) + self.kernel_size[1:]
        if self.mode == "max":
            return F.max_pool3d(x.amax(dim=-3, keepdim=True), kernel, self.stride, self.padding, self.dilation,
                                self.ceil_mode, self.return_indices)
        pooled = F.avg_pool3d(x.mean(dim=-3, keepdim=True), kernel, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override)
        # avg_pool3d divided the time-mean by d (not by t * d): the eager call's d * t / trained_len is * trained_len
        return pooled if self.divisor_override is None else pooled * self.trained_len

    def specialize(self, frames: int | None = None, *, length: int | None = None) -> nn.Module:
        """The plain pool of the original class for clips of ``frames`` frames (or for inputs
        of ``length`` time steps): its temporal kernel is the time steps reaching it there."""
        t = self.length_for(frames, length=length)
        kernel = (t,) + self.kernel_size[1:]
        if self.mode == "max":
            return self.original_class(kernel, self.stride, self.padding, self.dilation, self.return_indices, self.ceil_mode)
        divisor = self.divisor_override
        if divisor is not None and t != self.trained_len:
            if (divisor * t) % self.trained_len:
                raise ValueError(f"divisor_override {divisor} does not scale to a whole divisor at {t} time steps")
            divisor = divisor * t // self.trained_len
        return self.original_class(kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad, divisor)

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, time=all (trained {self.trained_len}), spatial kernel_size={self.kernel_size[1:]}, "
                f"stride={self.stride[1:]}, padding={self.padding[1:]}")
