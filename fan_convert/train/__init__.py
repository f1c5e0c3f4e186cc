"""Fine-tuning a FAN: mutual distillation, the training loop, evaluation. The data pipeline (readers,
decoding, sampling, datasets) is :mod:`fan_convert.data`."""

from ._moved import forward
from .loss import mutual_distillation_loss

__all__ = ["mutual_distillation_loss"]

# moved to fan_convert.data; still importable from here, with a DeprecationWarning
__getattr__ = forward(__name__, "fan_convert.data", names=("multi_view_indices", "segment_indices"))
