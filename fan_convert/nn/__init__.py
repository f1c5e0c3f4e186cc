"""The layers a Frame Adaptive Network is made of, one concept per module: norm banks
(:mod:`.norm_bank`), weight alterations (:mod:`.alteration`), the temporal shift
(:mod:`.temporal`), and the fixed-T layers that make a model length-agnostic: the head pool
(:mod:`.time_pool`) and temporal position encodings (:mod:`.position_encodings`), both converting
clip frames to their own time steps with :mod:`.frame_units`."""

from .alteration import NotFoldableError, ResidualAlteration, WeightAlteration, alter_weight, fold_alteration
from .frame_units import FrameUnits
from .norm_bank import NormBank
from .position_encodings import (
    InterpolatedMViTPositionalEncoding,
    InterpolatedSpatioTemporalClsPositionalEncoding,
    interpolate_time,
)
from .time_pool import AdaptiveTimePool3d

__all__ = [
    "NormBank", "WeightAlteration", "ResidualAlteration", "alter_weight", "fold_alteration", "NotFoldableError",
    "AdaptiveTimePool3d", "InterpolatedMViTPositionalEncoding",
    "InterpolatedSpatioTemporalClsPositionalEncoding", "FrameUnits", "interpolate_time",
]
