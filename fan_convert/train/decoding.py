"""Moved to :mod:`fan_convert.data.decoding`; this alias warns and forwards."""

from ._moved import forward

__getattr__ = forward(__name__, "fan_convert.data.decoding")
