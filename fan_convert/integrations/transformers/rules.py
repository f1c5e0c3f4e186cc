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

The config's frame count itself is reported as a skipped site on the model's root. Each is an
entry of the rule table (:data:`HF_RULES`, registered with the built-in rules by the package): ``find`` decides
from the module's type and tensor shapes, ``build`` makes the adapter (given the model, for its
shared config), the adapter's ``specialize`` gives the plain module back.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ...nn.frame_count_config import FrameCountConfig
from ...nn.frame_following import FrameFollowing, frame_field
from ...nn.learned_time_embedding import LearnedTimeEmbedding
from ...nn.sinusoid_positions import SinusoidFramePositions
from ...nn.space_time_positions import SpaceTimePositions
from ...nn.tubelet import TubeletFrames, tubelet_conv
from ...surgery.conversion import CONVERTED, FIXED_T, SKIPPED, Site
from ...surgery.rules import BuildContext, Rule

__all__ = ["HF_RULES", "recorded_frames", "plan_defaults"]


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


def _time_embedding_name(module: nn.Module) -> str | None:
    params = module._parameters
    if "time_embeddings" in params:
        return "time_embeddings"
    return "position_embeddings" if "Temporal" in type(module).__name__ and "position_embeddings" in params else None


# Each: (is this module such a site, given the training clip length) and the plan's note.
def _reads_config_frames(module: nn.Module, trained: int) -> str | None:
    config = module.__dict__.get("config")
    field = frame_field(config) if config is not None else None
    if field and not hasattr(module, "base_model_prefix") and _reads_frame_field(module, field):
        return f"its forward reads config.{field} ({trained}) to reshape tokens; it reads the running clip's frame count instead"
    return None


def _sinusoid_table(module: nn.Module, trained: int) -> str | None:
    table = module.__dict__.get("position_embeddings")
    if table is not None and "position_embeddings" not in module._parameters and getattr(table, "dim", lambda: 0)() == 3:
        return (f"fixed sinusoid position table for {table.shape[1]} patches at {trained} frames; cut or regenerated "
                "for the running clip (the same table at the training length)")
    return None


def _time_embedding(module: nn.Module, trained: int) -> str | None:
    name = _time_embedding_name(module)
    embedding = module._parameters[name] if name else None
    if embedding is not None and embedding.dim() == 3 and embedding.shape[1] == trained:
        return f"learned {name} with one entry per frame ({trained}); interpolated linearly to the running clip's frame count"
    return None


def _space_time_positions(module: nn.Module, trained: int) -> str | None:
    params, k = module._parameters, _tubelet(module)
    joint = params.get("position_embeddings")
    if joint is not None and joint.dim() == 3 and k > 1 and tubelet_conv(module) is None and "cls_token" in params:
        return (f"learned joint space-time positions for {trained // k} tubelet steps; "
                "interpolated along time only to the running clip")
    return None


def _tubelet_embedding(module: nn.Module, trained: int) -> str | None:
    conv = tubelet_conv(module)
    if conv is not None:
        return (f"tubelet embedding with temporal stride {conv.stride[0]}: every frame count must be a multiple of "
                f"{conv.stride[0]} (checked at conversion, and before the embedding at run time)")
    return None


def _finder(test: Callable[[nn.Module, int], str | None], layer: type, name: str) -> Callable:
    def find(path: str, module: nn.Module, trained_at: int, observed) -> Site | None:
        if not path or not _from_transformers(module) or isinstance(module, FrameFollowing):
            return None
        note = test(module, trained_at)
        return None if note is None else Site(path, FIXED_T, type(module).__name__, layer.__name__, CONVERTED, 0, note, rule=name)
    return find


def _report_config(path: str, module: nn.Module, trained_at: int, observed) -> Site | None:
    trained = recorded_frames(module) if not path else None
    if trained is None:
        return None
    field = frame_field(module.config)
    return Site("", FIXED_T, type(module).__name__, "", SKIPPED, 0, (
        f"config.{field}={trained}: the training clip length; the sites below read the running clip's instead, "
        "and specialize(T) writes T here"), rule="fixed_t.hf_config_frames")


def _config(ctx: BuildContext):
    return getattr(ctx.root, "config", None) if ctx.root is not None else None


def _trained(module: nn.Module, ctx: BuildContext) -> int:
    recorded = recorded_frames(ctx.root) if ctx.root is not None else None
    if recorded is None and ctx.trained_at is None:
        raise ValueError(f"{type(module).__name__}: the training clip length is unknown; give trained_at")
    return recorded or ctx.trained_at


def _check_tubelet(module: nn.Module, ctx: BuildContext) -> None:
    k = tubelet_conv(module).stride[0]
    bad = [t for t in ctx.keys if t % k]
    if bad:
        near = sorted({k * max(1, t // k) for t in bad} | {k * (t // k + 1) for t in bad})
        owner = type(ctx.root).__name__ if ctx.root is not None else type(module).__name__
        raise ValueError(
            f"{owner} embeds tubelets of {k} frames ({type(module).__name__} at '{ctx.path}'), so every frame count must "
            f"be a multiple of {k}; {', '.join(map(str, bad))} is not: use e.g. {' or '.join(map(str, near))}")


def _build_tubelet(module: nn.Module, ctx: BuildContext) -> nn.Module:
    _check_tubelet(module, ctx)
    return TubeletFrames.for_module(module, _trained(module, ctx), config=_config(ctx))


def _rule(name: str, test, layer: type, build: Callable, check: Callable | None = None) -> Rule:
    return Rule(name, FIXED_T, nn.Module, subclasses=True, layer=layer, build=build, find=_finder(test, layer, name),
                check=check)


HF_RULES: tuple[Rule, ...] = (
    Rule("fixed_t.hf_config_frames", FIXED_T, nn.Module, subclasses=True, find=_report_config),
    _rule("fixed_t.hf_config_frame_count", _reads_config_frames, FrameCountConfig,
          lambda m, ctx: FrameCountConfig.for_module(m)),
    _rule("fixed_t.hf_sinusoid_positions", _sinusoid_table, SinusoidFramePositions,
          lambda m, ctx: SinusoidFramePositions.for_module(m, _trained(m, ctx), _tubelet(m), config=_config(ctx))),
    _rule("fixed_t.hf_time_embedding", _time_embedding, LearnedTimeEmbedding,
          lambda m, ctx: LearnedTimeEmbedding.for_module(m, _time_embedding_name(m), config=_config(ctx))),
    _rule("fixed_t.hf_space_time_positions", _space_time_positions, SpaceTimePositions,
          lambda m, ctx: SpaceTimePositions.for_module(m, _trained(m, ctx), _tubelet(m), config=_config(ctx))),
    _rule("fixed_t.hf_tubelet", _tubelet_embedding, TubeletFrames, _build_tubelet, _check_tubelet),
)


def plan_defaults(model: nn.Module) -> dict:
    """What a transformers video model implies for a plan: the clip length its config records
    (``trained_at``) and its ``(B, T, C, H, W)`` input (``frame_axis=1``); empty for other models."""
    from .models import is_hf_video_model

    trained = recorded_frames(model)
    found = {"trained_at": trained} if trained else {}
    return {**found, "frame_axis": 1} if is_hf_video_model(model) else found
