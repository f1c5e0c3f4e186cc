"""The temporal shift of TSM (Lin et al., "TSM: Temporal Shift Module", ICCV 2019), for 2D
backbones that run on clips whose frames are folded into the batch.

A clip of ``T`` frames from each of ``B`` videos travels through a 2D backbone as one batch of
``B*T`` images, video-major (rows ``b*T .. b*T + T-1`` are video ``b``'s frames in order). The
shift moves a fraction of the channels one frame along time inside each video, so a 2D layer
applied after it sees its neighbours' features at zero extra cost:

- the first ``C // shift_div`` channels move one frame *backward* in time (frame ``t`` takes
  frame ``t+1``'s values; the last frame gets zeros),
- the next ``C // shift_div`` move one frame *forward* (frame ``t`` takes frame ``t-1``'s;
  the first frame gets zeros),
- the rest stay where they are.

``T`` is never stored: it is read at run time from :func:`fan_convert.context.clip_frames`,
which the video wrapper (:class:`fan_convert.zoo.wrappers.TSM`) declares for each call. The
same network therefore shifts correctly on 4-, 8- or 16-frame clips, and two videos in one
batch never exchange frames.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..context import NoActiveFrames, check_frame_count, clip_frames
from .delegate import delegate

__all__ = ["temporal_shift", "TemporalShift", "ShiftedInput"]


def temporal_shift(x: torch.Tensor, shift_div: int = 8, channel_dim: int = 1, frames: int | None = None) -> torch.Tensor:
    """Shift ``1/shift_div`` of ``x``'s channels one frame backward and as many forward in time.

    ``x`` holds frames folded into its first dimension, ``(B*T, ...)``; its channels are on
    ``channel_dim`` (1 for ``(B*T, C, H, W)`` conv features, -1 for ``(B*T, N, C)`` tokens).
    ``frames`` is T; by default the clip length declared by the running video wrapper
    (:func:`fan_convert.context.clip_frames`). Returns a new tensor of ``x``'s shape.
    """
    t = clip_frames() if frames is None else check_frame_count(frames, "frames")
    if t is None:
        raise NoActiveFrames(
            "temporal shift needs the clip length T, and none is declared: call the video wrapper "
            "(fan_convert.zoo.wrappers.TSM) on a (B, C, T, H, W) clip, or wrap the call in "
            "`with fan_convert.context.clip(T):` when you fold frames into the batch yourself"
        )
    if x.dim() < 2:
        raise ValueError(f"temporal shift expects a (B*T, ...) tensor with a channel dimension, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n % t:
        raise ValueError(
            f"temporal shift got a batch of {n}, which is not a whole number of {t}-frame clips; "
            f"fold frames into the batch video by video, (B, T, ...) -> (B*T, ...), with T={t}"
        )
    dim = channel_dim % x.dim()
    if dim == 0:
        raise ValueError("channel_dim cannot be the batch dimension (0): frames are folded into it")
    fold = x.shape[dim] // shift_div
    if fold == 0:
        return x
    clips = x.unflatten(0, (n // t, t))  # (B, T, ...): the channel dimension moves to dim + 1
    backward, forward, still = clips.split([fold, fold, x.shape[dim] - 2 * fold], dim=dim + 1)
    pad = torch.zeros_like(backward.narrow(1, 0, 1))
    # Pad, then take t frames: no tensor of t - 1 frames, which a symbolic T (dynamic export)
    # would have to guard (t - 1 != 1); the same copies as narrowing first.
    backward = torch.cat([backward, pad], dim=1).narrow(1, 1, t)  # frame i <- frame i+1
    forward = torch.cat([pad, forward], dim=1).narrow(1, 0, t)  # frame i <- frame i-1
    return torch.cat([backward, forward, still], dim=dim + 1).flatten(0, 1)


# torch.fx keeps the shift as one call (it reads T at run time, which a trace cannot see), so
# models containing it still trace: the graph shows the shift node and the layer it feeds.
fx.wrap("temporal_shift")


def check_shift_div(shift_div: int) -> int:
    if isinstance(shift_div, bool) or not isinstance(shift_div, int) or shift_div < 2:
        raise ValueError(f"shift_div must be an integer >= 2 (1/shift_div of the channels move each way), got {shift_div!r}")
    return shift_div


class TemporalShift(nn.Module):
    """The TSM shift as a parameter-free module; see :func:`temporal_shift`.

    Example::

        shift = TemporalShift(shift_div=8)             # conv features, channels on dim 1
        with fan_convert.context.clip(8):
            y = shift(x)                               # x: (B*8, C, H, W)
    """

    def __init__(self, shift_div: int = 8, channel_dim: int = 1):
        super().__init__()
        self.shift_div = check_shift_div(shift_div)
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.shift_div, self.channel_dim)

    def extra_repr(self) -> str:
        return f"shift_div={self.shift_div}, channel_dim={self.channel_dim}"


class ShiftedInput(nn.Module):
    """``net(temporal_shift(x))``: the TSM shift on the input of one layer.

    A permanent part of a TSM architecture (it has nothing to specialise or fold). The wrapped
    layer lives at ``self.net``, so state-dict keys read ``layer1.0.conv1.net.weight`` like
    official TSM and mmaction2 checkpoints. Attribute reads it does not own (``weight``,
    ``in_channels`` ...) go to ``net``.

    Args:
        net: the layer whose input is shifted (a convolution or Linear, usually).
        shift_div: 1/shift_div of the channels move backward in time, as many forward.
        channel_dim: where the channels of ``net``'s input are: 1 for conv features
            ``(B*T, C, H, W)``, -1 for tokens ``(B*T, N, C)`` fed to a Linear.
    """

    def __init__(self, net: nn.Module, shift_div: int = 8, channel_dim: int = 1):
        super().__init__()
        self.net = net
        self.shift_div = check_shift_div(shift_div)
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor, *args, **kwargs):
        return self.net(temporal_shift(x, self.shift_div, self.channel_dim), *args, **kwargs)

    def extra_repr(self) -> str:
        return f"shift_div={self.shift_div}, channel_dim={self.channel_dim}"

    def __getattr__(self, name: str):
        return delegate(self, name, "net")
