"""Building architectures by name."""

from .specs import build

__all__ = ["build"]
