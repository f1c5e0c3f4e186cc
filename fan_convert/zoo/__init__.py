"""Building architectures by name."""

from .head import Head, find_head
from .specs import build

__all__ = ["build", "find_head", "Head"]
