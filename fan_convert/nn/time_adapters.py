"""The fixed-T layers under their former module path (kept for imports written against it).

The layers now live one concept per file (:mod:`.time_pool`, :mod:`.position_encodings`,
:mod:`.frame_units`); which module becomes which layer is decided by the rule table,
:mod:`fan_convert.surgery.rules`.
"""

from __future__ import annotations

from torch import nn

from .frame_units import FrameUnits
from .position_encodings import (
    InterpolatedMViTPositionalEncoding,
    InterpolatedSpatioTemporalClsPositionalEncoding,
    TemporalPositionAdapter,
    interpolate_time,
    token_frames,
)
from .time_pool import AdaptiveTimePool3d

__all__ = [
    "AdaptiveTimePool3d", "TemporalPositionAdapter", "InterpolatedMViTPositionalEncoding",
    "InterpolatedSpatioTemporalClsPositionalEncoding", "FrameUnits", "interpolate_time", "token_frames",
    "time_adapter_for", "known_position_encodings",
]


def known_position_encodings() -> dict[type, type]:
    """Positional-encoding classes that have a fixed-T rule: class -> the layer it becomes."""
    from ..surgery import rules

    return {cls: rule.layer for rule in rules.rules("fixed_t") if rule.layer is not None
            and not issubclass(rule.layer, AdaptiveTimePool3d) for cls in rule.types()}


def time_adapter_for(module: nn.Module, trained_frames: int | None = None) -> nn.Module:
    """The fixed-T layer the rule table puts in place of ``module`` (exact class match).
    Raises TypeError when no rule converts it."""
    from ..surgery import rules

    rule = rules.match(module, "fixed_t")
    if rule is None or rule.layer is None or not rule.exact_match(module):
        raise TypeError(f"no frame-count adapter for {type(module).__name__}")
    return rule.make(module, rules.BuildContext(trained_at=trained_frames))
