"""The fixed-T sites of ``transformers`` video models, found by rule (type and shape).

A ``transformers`` model records its training clip length in its config (``num_frames``;
V-JEPA 2: ``frames_per_clip``). Modules tied to that length, and the adapter each becomes:

- a forward that reads ``self.config.num_frames`` (TimeSformer's divided space-time layers):
  :class:`~fan_convert.nn.frame_count_config.FrameCountConfig`;
- a fixed sinusoidal ``position_embeddings`` table that is not a parameter (VideoMAE):
  :class:`~fan_convert.nn.sinusoid_positions.SinusoidFramePositions`;
- a learned ``(1, T, C)`` embedding with one entry per frame (TimeSformer's ``time_embeddings``,
  VideoPrism's temporal ``position_embeddings``):
  :class:`~fan_convert.nn.learned_time_embedding.LearnedTimeEmbedding`;
- a learned joint space-time ``position_embeddings`` beside a tubelet embedding (ViViT):
  :class:`~fan_convert.nn.space_time_positions.SpaceTimePositions`;
- a tubelet embedding with a temporal stride k > 1 (VideoMAE, ViViT, V-JEPA 2):
  :class:`~fan_convert.nn.tubelet.TubeletFrames`; every frame count must then be a multiple of
  k, checked here, when the plan is made.

The config's frame count itself is reported as a skipped site on the model's root.
"""

from __future__ import annotations

import inspect
from typing import Sequence

from torch import nn

from ..nn.frame_count_config import FrameCountConfig
from ..nn.frame_following import FrameFollowing, frame_field
from ..nn.learned_time_embedding import LearnedTimeEmbedding
from ..nn.sinusoid_positions import SinusoidFramePositions
from ..nn.space_time_positions import SpaceTimePositions
from ..nn.tubelet import TubeletFrames, tubelet_conv
from ..surgery.plan import CONVERTED, SKIPPED, Site

__all__ = ["hf_fixed_t_sites", "hf_time_adapter", "recorded_frames", "ADAPTERS"]

FIXED_T = "fixed_t"
ADAPTERS = {cls.__name__: cls for cls in (
    FrameCountConfig, SinusoidFramePositions, LearnedTimeEmbedding, SpaceTimePositions, TubeletFrames)}


def _from_transformers(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.")


def recorded_frames(model: nn.Module) -> int | None:
    """The training clip length a ``transformers`` model's config records, else None."""
    if not _from_transformers(model):
        return None
    config = getattr(model, "config", None)
    field = frame_field(config)
    return getattr(config, field) if field else None


def _tubelet(module: nn.Module) -> int:
    """The temporal stride of the tubelet embedding inside ``module`` (1 without one)."""
    for child in module.modules():
        conv = tubelet_conv(child)
        if conv is not None:
            return conv.stride[0]
    return 1


def _reads_frame_field(module: nn.Module, field: str) -> bool:
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return f"config.{field}" in source


def _rule(module: nn.Module, trained: int, field: str) -> tuple[str, str] | None:
    """(adapter name, reason) for a module tied to ``trained`` frames, or None."""
    params = module._parameters
    table = module.__dict__.get("position_embeddings")
    config = module.__dict__.get("config")
    if config is not None and frame_field(config) == field and not hasattr(module, "base_model_prefix") \
            and _reads_frame_field(module, field):
        return "FrameCountConfig", (f"its forward reads config.{field} ({trained}) to reshape tokens; "
                                    "it reads the running clip's frame count instead")
    if table is not None and "position_embeddings" not in params and getattr(table, "dim", lambda: 0)() == 3:
        return "SinusoidFramePositions", (f"fixed sinusoid position table for {table.shape[1]} patches at {trained} frames; "
                                          "cut or regenerated for the running clip (the same table at the training length)")
    time = params.get("time_embeddings")
    if time is None and "Temporal" in type(module).__name__:
        time = params.get("position_embeddings")
    if time is not None and time.dim() == 3 and time.shape[1] == trained:
        name = "time_embeddings" if "time_embeddings" in params else "position_embeddings"
        return "LearnedTimeEmbedding", (f"learned {name} with one entry per frame ({trained}); "
                                        "interpolated linearly to the running clip's frame count")
    joint = params.get("position_embeddings")
    k = _tubelet(module)
    if joint is not None and joint.dim() == 3 and k > 1 and tubelet_conv(module) is None and "cls_token" in params:
        return "SpaceTimePositions", (f"learned joint space-time positions for {trained // k} tubelet steps; "
                                      "interpolated along time only to the running clip")
    if tubelet_conv(module) is not None:
        return "TubeletFrames", (f"tubelet embedding with temporal stride {tubelet_conv(module).stride[0]}: "
                                 "clips must hold whole tubelets (checked before the embedding)")
    return None


def hf_fixed_t_sites(model: nn.Module, frames: Sequence[int]) -> list[Site]:
    """The fixed-T sites of a ``transformers`` video model (none for other models). Raises
    ValueError when a frame count of ``frames`` is not a multiple of a tubelet size."""
    trained = recorded_frames(model)
    if trained is None:
        return []
    field = frame_field(model.config)
    sites = [Site("", FIXED_T, type(model).__name__, "", SKIPPED, 0, (
        f"config.{field}={trained}: the training clip length; the sites below read the running clip's instead, "
        f"and specialize(T) writes T here"))]
    for path, module in model.named_modules():
        if not path or not _from_transformers(module) or isinstance(module, FrameFollowing):
            continue
        found = _rule(module, trained, field)
        if found is None:
            continue
        name, reason = found
        if name == "TubeletFrames":
            k = tubelet_conv(module).stride[0]
            bad = [t for t in frames if t % k]
            if bad:
                near = sorted({k * max(1, t // k) for t in bad} | {k * (t // k + 1) for t in bad})
                raise ValueError(
                    f"{type(model).__name__} embeds tubelets of {k} frames ({type(module).__name__} at '{path}'), so every "
                    f"frame count must be a multiple of {k}; {', '.join(map(str, bad))} is not: use e.g. "
                    f"{' or '.join(map(str, near))}")
        sites.append(Site(path, FIXED_T, type(module).__name__, name, CONVERTED, 0, reason))
    return sites


def hf_time_adapter(model: nn.Module, site: Site, module: nn.Module) -> nn.Module:
    """The adapter ``site`` (from :func:`hf_fixed_t_sites`) puts in place of ``module``."""
    trained = recorded_frames(model)
    config = model.config
    if site.becomes == "FrameCountConfig":
        return FrameCountConfig.for_module(module)
    if site.becomes == "SinusoidFramePositions":
        return SinusoidFramePositions.for_module(module, trained, _tubelet(module), config=config)
    if site.becomes == "LearnedTimeEmbedding":
        name = "time_embeddings" if "time_embeddings" in module._parameters else "position_embeddings"
        return LearnedTimeEmbedding.for_module(module, name, config=config)
    if site.becomes == "SpaceTimePositions":
        return SpaceTimePositions.for_module(module, trained, _tubelet(module), config=config)
    if site.becomes == "TubeletFrames":
        return TubeletFrames.for_module(module, trained, config=config)
    raise TypeError(f"no frame-count adapter named {site.becomes!r}")
