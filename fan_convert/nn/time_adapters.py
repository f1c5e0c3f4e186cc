"""Adapters for modules that bake the training frame count into a model ("fixed-T sites").

Two kinds of layer tie a video model to the clip length it was trained at:

- a **head pool** whose temporal kernel equals the number of time steps reaching it at the
  training T (pytorchvideo's ResNet/X3D/SlowFast heads: ``AvgPool3d((8, 7, 7))``; torchvision's
  S3D: ``AvgPool3d((2, 7, 7))``). Fewer frames crash it; more frames make it slide.
  :class:`AdaptiveTimePool3d` pools over *all* of time at any T and keeps the spatial kernel.
- a **temporal positional embedding** sized to the training number of temporal patches
  (pytorchvideo's ``SpatioTemporalClsPositionalEncoding``, torchvision's MViT
  ``PositionalEncoding``). The adapters interpolate it linearly along time to the current
  number of temporal patches, read from the token count.

Every adapter computes exactly what the module it replaces computed at the training length
(same operations, so the same bits), holds the same parameters under the same names (so the
model's ``state_dict`` keys do not change), reads T from its input (no frame context needed)
and converts back to a plain module of the original class with ``specialize(frames)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveTimePool3d",
    "TemporalPositionAdapter",
    "InterpolatedMViTPositionalEncoding",
    "InterpolatedSpatioTemporalClsPositionalEncoding",
    "interpolate_time",
    "token_frames",
    "time_adapter_for",
    "known_position_encodings",
]


def _triple(value: Any) -> tuple[int, int, int]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3
    if len(values) != 3:
        raise ValueError(f"expected 3 values (T, H, W), got {value!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]  # numpy ints (X3D) become ints


class _FrameUnits:
    """Shared conversion between clip frames and a module's own temporal length.

    ``trained_len`` is the number of time steps the module saw at the training clip length
    ``trained_frames`` (e.g. 8 temporal patches for a 16-frame MViT clip). ``specialize(t)``
    takes ``t`` in clip frames, like :meth:`NormBank.specialize`; ``length=`` gives the module's
    own temporal length directly (needed when ``trained_frames`` is unknown)."""

    trained_len: int
    trained_frames: int | None

    def length_for(self, frames: int | None = None, *, length: int | None = None) -> int:
        if (frames is None) == (length is None):
            raise ValueError("give exactly one of frames (clip length) or length (this module's time steps)")
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
                raise ValueError(f"length must be a positive integer, got {length!r}")
            return length
        if isinstance(frames, bool) or not isinstance(frames, int) or frames <= 0:
            raise ValueError(f"frames must be a positive integer, got {frames!r}")
        if self.trained_frames is None:
            raise ValueError(
                f"{type(self).__name__} does not know the clip length it was trained at; pass length= "
                f"(its own number of time steps, {self.trained_len} at training) or build it with trained_frames=")
        steps = frames * self.trained_len
        if steps % self.trained_frames:
            raise ValueError(
                f"{frames} frames do not map to a whole number of time steps here "
                f"({self.trained_len} steps at {self.trained_frames} frames)")
        return steps // self.trained_frames


class AdaptiveTimePool3d(_FrameUnits, nn.Module):
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
        kernel = (t,) + self.kernel_size[1:]
        if self.mode == "max":
            return F.max_pool3d(x, kernel, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)
        pooled = F.avg_pool3d(x, kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override)
        if self.divisor_override is None:
            return pooled
        return pooled * (self.trained_len / t)  # divisor d for trained_len steps -> d * t / trained_len

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


def interpolate_time(embed: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``embed`` resampled linearly along ``dim`` to ``length`` entries (sample centres aligned,
    ``align_corners=False``: entry i of the result sits at (i + 0.5) * old / new - 0.5 of the
    original). Returns ``embed`` itself when the length already matches (exact identity)."""
    old = embed.shape[dim]
    if old == length:
        return embed
    moved = embed.movedim(dim, -1)
    rows = moved.reshape(1, -1, old)
    dtype = embed.dtype if embed.dtype in (torch.float32, torch.float64) else torch.float32
    out = F.interpolate(rows.to(dtype), size=length, mode="linear", align_corners=False).to(embed.dtype)
    return out.reshape(moved.shape[:-1] + (length,)).movedim(-1, dim)


def _copy_parameter(tensor: torch.Tensor | None, like: torch.Tensor | None) -> nn.Parameter | None:
    if tensor is None:
        return None
    requires_grad = like.requires_grad if isinstance(like, torch.Tensor) else True
    return nn.Parameter(tensor.detach().clone(), requires_grad=requires_grad)


def token_frames(tokens: torch.Tensor, spatial_patches: int, owner: str = "encoding") -> int:
    """Temporal patches in a ``(B, N, C)`` token sequence of ``spatial_patches`` tokens per frame."""
    n = tokens.shape[1]
    if n == 0 or n % spatial_patches:
        raise ValueError(
            f"{owner}: {n} tokens are not a whole number of frames of {spatial_patches} spatial patches; "
            "this encoding was built for a fixed spatial size (inputs must keep the trained height and width)")
    return n // spatial_patches


def _mvit_encode(x, t, class_token, spatial_pos, temporal_pos, class_pos):
    # torchvision's PositionalEncoding.forward, op for op, with temporal_pos resampled to t.
    class_token = class_token.expand(x.size(0), -1).unsqueeze(1)
    x = torch.cat((class_token, x), dim=1)
    if spatial_pos is not None and temporal_pos is not None and class_pos is not None:
        hw_size, embed_size = spatial_pos.shape
        pos_embedding = torch.repeat_interleave(interpolate_time(temporal_pos, t, dim=0), hw_size, dim=0)
        pos_embedding.add_(spatial_pos.unsqueeze(0).expand(t, -1, -1).reshape(-1, embed_size))
        pos_embedding = torch.cat((class_pos.unsqueeze(0), pos_embedding), dim=0).unsqueeze(0)
        x.add_(pos_embedding)
    return x


def _cls_embedding(t, spatial, cls_on, pos_embed, pos_embed_spatial, pos_embed_temporal, pos_embed_class):
    # pytorchvideo's SpatioTemporalClsPositionalEncoding embedding, resampled to t temporal patches.
    if pos_embed is None:  # separate spatial and temporal embeddings
        embedding = pos_embed_spatial.repeat(1, t, 1) + torch.repeat_interleave(
            interpolate_time(pos_embed_temporal, t, dim=1), spatial, dim=1)
        return torch.cat([pos_embed_class, embedding], 1) if pos_embed_class is not None else embedding
    trained = (pos_embed.shape[1] - int(cls_on)) // spatial
    if t == trained:
        return pos_embed
    cls, grid = (pos_embed[:, :1], pos_embed[:, 1:]) if cls_on else (None, pos_embed)
    c = grid.shape[-1]
    grid = interpolate_time(grid.reshape(1, trained, spatial, c), t, dim=1).reshape(1, t * spatial, c)
    return grid if cls is None else torch.cat([cls, grid], 1)


def _cls_encode(x, t, spatial, cls_token, pos_embed, pos_embed_spatial, pos_embed_temporal, pos_embed_class):
    # pytorchvideo's SpatioTemporalClsPositionalEncoding.forward, op for op, resampled to t.
    if cls_token is not None:
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    return x + _cls_embedding(
        t, spatial, cls_token is not None, pos_embed, pos_embed_spatial, pos_embed_temporal, pos_embed_class)


# torch.fx records these as single calls: the token count decides the length at run time, so a
# traced model (fan_convert's analysis, fx-based tools) keeps working at every T.
torch.fx.wrap("token_frames")
torch.fx.wrap("_mvit_encode")
torch.fx.wrap("_cls_encode")


class TemporalPositionAdapter(_FrameUnits, nn.Module):
    """Base class of the positional-embedding adapters.

    The number of temporal patches T' is read from the token count of each input
    (``tokens // spatial patches``; the spatial size must stay the trained one). Host models read
    the patch grid back from the encoding after calling it (``MViT.forward`` reads
    ``pos_encoding.temporal_size`` / ``cls_positional_encoding.patch_embed_shape``), so those
    attributes report the grid of the **latest call** (the trained grid before the first one).
    That is per-module state: one model instance must not run clips of different lengths
    concurrently in several threads (separate instances, or sequential calls, are fine). Under
    torch.fx tracing the state is left alone and the host graph records the trained grid.
    """

    original_class: type

    @property
    def current_len(self) -> int:
        """Temporal patches in the latest input (the trained count before the first call)."""
        return getattr(self, "_current_len", self.trained_len)

    def _frames_of(self, x: torch.Tensor, spatial_patches: int):
        t = token_frames(x, spatial_patches, type(self).__name__)
        if not isinstance(t, torch.fx.Proxy):
            self._current_len = t  # a plain int, not a buffer: never saved, never moved
        return t


class InterpolatedMViTPositionalEncoding(TemporalPositionAdapter):
    """Replaces torchvision's MViT ``PositionalEncoding`` (``mvit_v1_b``, ``mvit_v2_s``).

    ``temporal_pos`` (``(trained_len, C)``) is interpolated linearly to the current number of
    temporal patches; the class token, spatial and class embeddings are unchanged. For MViTv2
    (relative positions, no absolute embedding) only the reported ``temporal_size`` changes:
    torchvision already interpolates ``rel_pos_t`` to the length it is given. ``temporal_size``
    reports the latest input's temporal patches (what ``MViT.forward`` reads right after).
    """

    def __init__(self, encoding: nn.Module, trained_frames: int | None = None):
        nn.Module.__init__(self)
        self.original_class = type(encoding)
        self.spatial_size = tuple(encoding.spatial_size)
        self.trained_len = int(encoding.temporal_size)
        self.trained_frames = trained_frames
        # The very same parameters under the same names: state_dict keys and sharing are kept.
        self.class_token = encoding.class_token
        for name in ("spatial_pos", "temporal_pos", "class_pos"):
            self.register_parameter(name, getattr(encoding, name))

    @property
    def temporal_size(self) -> int:
        return self.current_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._frames_of(x, self.spatial_size[0] * self.spatial_size[1])
        return _mvit_encode(x, t, self.class_token, self.spatial_pos, self.temporal_pos, self.class_pos)

    def specialize(self, frames: int | None = None, *, length: int | None = None) -> nn.Module:
        """A plain ``PositionalEncoding`` for ``frames`` clip frames (or ``length`` temporal
        patches), its ``temporal_pos`` interpolated (a copy; exact at the trained length)."""
        t = self.length_for(frames, length=length)
        plain = self.original_class(
            embed_size=self.class_token.shape[-1], spatial_size=self.spatial_size, temporal_size=t,
            rel_pos_embed=self.temporal_pos is None,
        )
        with torch.no_grad():
            plain.class_token = _copy_parameter(self.class_token, self.class_token)
            if self.temporal_pos is not None:
                plain.spatial_pos = _copy_parameter(self.spatial_pos, self.spatial_pos)
                plain.class_pos = _copy_parameter(self.class_pos, self.class_pos)
                plain.temporal_pos = _copy_parameter(interpolate_time(self.temporal_pos, t, 0), self.temporal_pos)
        return plain

    def extra_repr(self) -> str:
        kind = "absolute" if self.temporal_pos is not None else "relative (thw only)"
        return f"spatial_size={self.spatial_size}, temporal patches: trained {self.trained_len}, any; embedding {kind}"


class InterpolatedSpatioTemporalClsPositionalEncoding(TemporalPositionAdapter):
    """Replaces pytorchvideo's ``SpatioTemporalClsPositionalEncoding`` (``mvit_base_16x4`` ...).

    With separate embeddings (``sep_pos_embed``) ``pos_embed_temporal`` is interpolated along
    time; with a joint ``pos_embed`` the patch part is viewed as ``(T', H'W', C)`` and
    interpolated along T' (the class position is kept). ``patch_embed_shape`` and
    ``num_temporal_patch`` report the latest input's grid (what the MViT forward reads).
    """

    _EMBEDDINGS = ("pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class")

    def __init__(self, encoding: nn.Module, trained_frames: int | None = None):
        nn.Module.__init__(self)
        self.original_class = type(encoding)
        self.cls_embed_on = bool(encoding.cls_embed_on)
        self.sep_pos_embed = bool(encoding.sep_pos_embed)
        self._trained_shape = encoding.patch_embed_shape
        self.num_spatial_patch = int(encoding.num_spatial_patch)
        self.trained_len = int(encoding.num_temporal_patch)
        self.trained_frames = trained_frames
        for name in ("cls_token",) + self._EMBEDDINGS:  # the same parameters, the same names
            self.register_parameter(name, getattr(encoding, name, None))

    @property
    def num_temporal_patch(self) -> int:
        return self.current_len

    @property
    def patch_embed_shape(self):
        shape = [self.current_len] + [int(s) for s in list(self._trained_shape)[1:]]
        return type(self._trained_shape)(shape) if isinstance(self._trained_shape, (list, tuple)) else shape

    def _params(self) -> tuple:
        return tuple(getattr(self, name) for name in self._EMBEDDINGS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._frames_of(x, self.num_spatial_patch)
        return _cls_encode(x, t, self.num_spatial_patch, self.cls_token, *self._params())

    def specialize(self, frames: int | None = None, *, length: int | None = None) -> nn.Module:
        """A plain ``SpatioTemporalClsPositionalEncoding`` for ``frames`` clip frames (or
        ``length`` temporal patches), its embeddings interpolated (copies; exact at training)."""
        t = self.length_for(frames, length=length)
        shape = [t] + [int(v) for v in list(self._trained_shape)[1:]]
        embed_dim = (self.pos_embed_spatial if self.sep_pos_embed else self.pos_embed).shape[-1]
        plain = self.original_class(
            embed_dim=embed_dim, patch_embed_shape=tuple(shape), sep_pos_embed=self.sep_pos_embed, has_cls=self.cls_embed_on)
        with torch.no_grad():
            if self.cls_embed_on:
                plain.cls_token = _copy_parameter(self.cls_token, self.cls_token)
            if self.sep_pos_embed:
                plain.pos_embed_spatial = _copy_parameter(self.pos_embed_spatial, self.pos_embed_spatial)
                plain.pos_embed_temporal = _copy_parameter(
                    interpolate_time(self.pos_embed_temporal, t, 1), self.pos_embed_temporal)
                if self.cls_embed_on:
                    plain.pos_embed_class = _copy_parameter(self.pos_embed_class, self.pos_embed_class)
            else:
                embedding = _cls_embedding(t, self.num_spatial_patch, self.cls_embed_on, *self._params())
                plain.pos_embed = _copy_parameter(embedding, self.pos_embed)
        return plain

    def extra_repr(self) -> str:
        return (f"spatial patches={self.num_spatial_patch}, temporal patches: trained {self.trained_len}, any; "
                f"sep_pos_embed={self.sep_pos_embed}, cls={self.cls_embed_on}")


def known_position_encodings() -> dict[type, type]:
    """The positional-encoding classes with a temporal size that have an adapter: class -> adapter."""
    known: dict[type, type] = {}
    try:
        from torchvision.models.video.mvit import PositionalEncoding as TorchvisionMViTEncoding
        known[TorchvisionMViTEncoding] = InterpolatedMViTPositionalEncoding
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    try:
        from pytorchvideo.layers.positional_encoding import SpatioTemporalClsPositionalEncoding
        known[SpatioTemporalClsPositionalEncoding] = InterpolatedSpatioTemporalClsPositionalEncoding
    except ImportError:  # pragma: no cover - pytorchvideo is a dependency
        pass
    return known


def time_adapter_for(module: nn.Module, trained_frames: int | None = None) -> nn.Module:
    """The adapter replacing ``module``: :class:`AdaptiveTimePool3d` for an exact
    ``nn.AvgPool3d``/``nn.MaxPool3d``, an interpolating encoding for a known positional encoding
    (exact class match: a subclass may have its own forward). Raises TypeError otherwise."""
    if type(module) in (nn.AvgPool3d, nn.MaxPool3d):
        return AdaptiveTimePool3d(module, trained_frames)
    adapter = known_position_encodings().get(type(module))
    if adapter is None:
        raise TypeError(f"no frame-count adapter for {type(module).__name__}")
    return adapter(module, trained_frames)

