"""Temporal positional embeddings made length-agnostic: each adapter interpolates its trained
embedding linearly along time to the number of temporal patches of each input.

- :class:`InterpolatedMViTPositionalEncoding` replaces torchvision's MViT ``PositionalEncoding``;
- :class:`InterpolatedSpatioTemporalClsPositionalEncoding` replaces pytorchvideo's
  ``SpatioTemporalClsPositionalEncoding``.

Both are frame-following adapters (:mod:`.frame_following`): instances of the class they replace,
holding its very parameters under the same names. They compute exactly what that module computed
at the trained length and turn back into the original class with ``specialize``. Unlike the
transformers adapters, their forward is written here (op for op the library's, the temporal
embedding resampled) so that torch.fx records the token count, not a constant, as the length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .frame_following import FrameFollowing

__all__ = [
    "InterpolatedMViTPositionalEncoding", "InterpolatedSpatioTemporalClsPositionalEncoding",
    "interpolate_time", "token_frames",
]


def interpolate_time(embed: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``embed`` resampled linearly along ``dim`` to ``length`` entries (sample centres aligned,
    ``align_corners=False``: entry i of the result sits at (i + 0.5) * old / new - 0.5 of the
    original). Returns ``embed`` itself when the length already matches (exact identity; a
    symbolic length, traced for any frame count, is resampled, which is exact at equal length too)."""
    old = embed.shape[dim]
    if not isinstance(length, torch.SymInt) and old == length:
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


class _TokenFrames:
    """What both encodings share: the number of temporal patches T' is read from the token count
    of each input (``tokens // spatial patches``; the spatial size must stay the trained one).
    Host models read the patch grid back from the encoding after calling it (``MViT.forward``
    reads ``pos_encoding.temporal_size`` / ``cls_positional_encoding.patch_embed_shape``), so
    those attributes report the grid of the **latest call** (the trained grid before the first
    one). That is per-module state: one model instance must not run clips of different lengths
    concurrently in several threads (separate instances, or sequential calls, are fine). Under
    torch.fx tracing the state is left alone and the host graph records the trained grid."""

    @property
    def current_len(self) -> int:
        """Temporal patches in the latest input (the trained count before the first call)."""
        return self.__dict__.get("_current_len", self.trained_len)

    def _frames_of(self, x: torch.Tensor, spatial_patches: int):
        t = token_frames(x, spatial_patches, type(self).__name__)
        if not isinstance(t, torch.fx.Proxy):
            self.__dict__["_current_len"] = t  # a plain int, not a buffer: never saved, never moved
        return t


class InterpolatedMViTPositionalEncoding(_TokenFrames, FrameFollowing):
    """Stands in for torchvision's MViT ``PositionalEncoding`` (``mvit_v1_b``, ``mvit_v2_s``): an
    instance of that class (see :mod:`.frame_following`) holding its very parameters.

    ``temporal_pos`` (``(trained_len, C)``) is interpolated linearly to the current number of
    temporal patches; the class token, spatial and class embeddings are unchanged. For MViTv2
    (relative positions, no absolute embedding) only the reported ``temporal_size`` changes:
    torchvision already interpolates ``rel_pos_t`` to the length it is given.

    Example::

        encoding = InterpolatedMViTPositionalEncoding.for_module(model.pos_encoding, trained_frames=16)
    """

    @classmethod
    def for_module(cls, encoding: nn.Module, trained_frames: int | None = None) -> "InterpolatedMViTPositionalEncoding":
        return cls.adopt(encoding, trained_frames, trained_len=int(encoding.temporal_size),
                         spatial_size=tuple(encoding.spatial_size))

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


class InterpolatedSpatioTemporalClsPositionalEncoding(_TokenFrames, FrameFollowing):
    """Stands in for pytorchvideo's ``SpatioTemporalClsPositionalEncoding`` (``mvit_base_16x4`` ...):
    an instance of that class (see :mod:`.frame_following`) holding its very parameters.

    With separate embeddings (``sep_pos_embed``) ``pos_embed_temporal`` is interpolated along
    time; with a joint ``pos_embed`` the patch part is viewed as ``(T', H'W', C)`` and
    interpolated along T' (the class position is kept). ``patch_embed_shape`` and
    ``num_temporal_patch`` report the latest input's grid (what the MViT forward reads).
    """

    _EMBEDDINGS = ("pos_embed", "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class")

    @classmethod
    def for_module(cls, encoding: nn.Module, trained_frames: int | None = None):
        return cls.adopt(encoding, trained_frames, trained_len=int(encoding.num_temporal_patch),
                         _trained_shape=encoding.patch_embed_shape)

    @property
    def num_temporal_patch(self) -> int:
        return self.current_len

    @property
    def patch_embed_shape(self):
        shape = [self.current_len] + [int(s) for s in list(self._trained_shape)[1:]]
        return type(self._trained_shape)(shape) if isinstance(self._trained_shape, (list, tuple)) else shape

    def _params(self) -> tuple:
        return tuple(getattr(self, name, None) for name in self._EMBEDDINGS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._frames_of(x, self.num_spatial_patch)
        return _cls_encode(x, t, self.num_spatial_patch, getattr(self, "cls_token", None), *self._params())

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
