"""Specialized Normalization: one private copy of a normalisation layer per frame count."""

from __future__ import annotations

import copy
from typing import Sequence

from torch import nn

from ..context import active_frames, nearest_key, select_key


class NormBank(nn.Module):
    """A bank of private copies of ``norm``, one per trained frame count.

    Each copy starts as an exact deep copy of the pretrained layer (parameters, running
    statistics, eps, momentum, affine flags and any subclass behaviour such as timm's fused
    activation), so the bank computes exactly what the original did at every key.
    ``forward`` runs the copy for the active frame count (see :mod:`fan_convert.context`).

    Attribute reads the bank does not own (``num_features``, ``normalized_shape``,
    ``weight`` ...) are answered by the active copy, or by the default key's copy outside a
    forward, so host code that reads its norm keeps working. The bank is deliberately not an
    instance of the norm's class: converters such as ``nn.SyncBatchNorm.convert_sync_batchnorm``
    then recurse into the copies instead of flattening the bank back into one norm.

    Example::

        bank = NormBank(nn.BatchNorm2d(64), keys=(4, 8, 16))
        with fan_convert.frames(8):
            y = bank(x)                       # uses bank.norms["8"]
        plain = bank.specialize(8)            # a plain BatchNorm2d, ready for export
    """

    def __init__(self, norm: nn.Module, keys: Sequence[int], default_key: int | None = None, site: str = ""):
        super().__init__()
        self.keys = tuple(sorted(keys))
        self.default_key = nearest_key(default_key, self.keys) if default_key else self.keys[-1]
        self.site = site
        self.norms = nn.ModuleDict({str(k): copy.deepcopy(norm) for k in self.keys})

    def forward(self, *args, **kwargs):
        return self.norms[str(select_key(self.keys, self.site))](*args, **kwargs)

    def copy_for(self, t: int) -> nn.Module:
        """The private norm serving ``t`` frames."""
        return self.norms[str(nearest_key(t, self.keys))]

    def specialize(self, t: int) -> nn.Module:
        """A standalone copy of the norm serving ``t`` frames (the plain layer for export)."""
        return copy.deepcopy(self.copy_for(t))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            norms = self.__dict__["_modules"].get("norms")
            if norms is None or name.startswith("__"):
                raise
            t = active_frames()
            return getattr(self.copy_for(t if t is not None else self.default_key), name)

    def extra_repr(self) -> str:
        return f"keys={self.keys}"
