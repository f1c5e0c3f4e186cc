"""The layers a Frame Adaptive Network is made of."""

from .alteration import NotFoldableError, ResidualAlteration, WeightAlteration, alter_weight, fold_alteration
from .norm_bank import NormBank

__all__ = ["NormBank", "WeightAlteration", "ResidualAlteration", "alter_weight", "fold_alteration", "NotFoldableError"]
