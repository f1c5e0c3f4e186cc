"""Moved to :mod:`fan_convert.data` (the dataset itself: :mod:`fan_convert.data.datasets`); this
alias warns and forwards."""

from ._moved import forward

__getattr__ = forward(__name__, "fan_convert.data")
