"""Attribute reads a wrapper module does not own go to the module it wraps."""

from torch import nn


def delegate(wrapper: nn.Module, name: str, child: str):
    """``nn.Module.__getattr__``, falling back to the attribute of the child module ``child``."""
    try:
        return nn.Module.__getattr__(wrapper, name)
    except AttributeError:
        inner = wrapper.__dict__["_modules"].get(child)
        if inner is None or name.startswith("__"):
            raise
        return getattr(inner, name)
