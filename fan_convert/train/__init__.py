"""Fine-tuning a FAN: mutual distillation, multi-frame sampling."""

from .loss import mutual_distillation_loss
from .sampling import multi_view_indices, segment_indices

__all__ = ["mutual_distillation_loss", "segment_indices", "multi_view_indices"]
