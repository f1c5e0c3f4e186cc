"""Finding a model's classifier: the parameters whose shape depends on the number of classes.

The architecture is built twice with two class counts (on the meta device when it can be: no
memory, no initialisation) and the state-dict entries whose shapes differ are the head. Exact
for any spec that takes ``num_classes``, whatever the head is called (``fc``, ``classifier.1``,
``blocks.5.proj``, ``head``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

__all__ = ["Head", "find_head"]
_PROBES = (7, 11)


@dataclass(frozen=True)
class Head:
    """The classifier of an architecture: its state-dict keys, and which axis of the first key
    counts the classes."""

    keys: tuple[str, ...]
    axis: int

    def classes(self, state: dict) -> int | None:
        """The number of classes the head in ``state`` (a state dict) has, None if it is absent."""
        tensor = state.get(self.keys[0])
        return int(tensor.shape[self.axis]) if tensor is not None and tensor.dim() > self.axis else None

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules the keys belong to (``backbone.classifier.1``), in order, each once."""
        return tuple(dict.fromkeys(key.rpartition(".")[0] or key for key in self.keys))


def _shapes(spec: str, kwargs: dict, num_classes: int) -> dict[str, tuple[int, ...]]:
    from .specs import build

    kwargs = {**kwargs, "num_classes": num_classes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                model = build(spec, **kwargs)
        except Exception:  # a factory that computes on its tensors while building: build it for real
            model = build(spec, **kwargs)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def find_head(spec: str, **kwargs) -> Head | None:
    """The classifier of the architecture ``spec`` (built with ``kwargs``), or None when the
    spec takes no ``num_classes`` or no parameter depends on it.

    Example::

        find_head("torchvision:mobilenet_v2", temporal="tsm").keys
        # ('backbone.classifier.1.weight', 'backbone.classifier.1.bias')
    """
    kwargs = {k: v for k, v in kwargs.items() if k != "num_classes"}
    try:
        first, second = (_shapes(spec, kwargs, n) for n in _PROBES)
    except Exception:
        return None
    keys = tuple(k for k in first if k in second and first[k] != second[k])
    if not keys:
        return None
    axis = next((d for d, (a, b) in enumerate(zip(first[keys[0]], second[keys[0]], strict=True))
                 if (a, b) == _PROBES), 0)
    return Head(keys, axis)
