"""Architecture specs: one string names a model, always built with random weights.

``timm:NAME`` (a 2D backbone), ``pytorchvideo:NAME`` (a hub builder), ``torchvision:NAME``
(``torchvision.models.video``) or ``package.module:factory`` (any callable returning a model).
Weights come from the user's checkpoint; nothing is downloaded.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

from torch import nn


class UnknownArchError(ValueError):
    """An architecture spec that names nothing buildable."""


def _available(source: str) -> tuple[Callable[[str], Callable], list[str]]:
    if source == "timm":
        import timm

        return (lambda name: lambda **kw: timm.create_model(name, pretrained=False, **kw)), timm.list_models()
    if source == "pytorchvideo":
        from pytorchvideo.models import hub

        names = [n for n in dir(hub) if not n.startswith("_") and callable(getattr(hub, n)) and n.islower()]
        return (lambda name: lambda **kw: getattr(hub, name)(pretrained=False, **kw)), names
    if source == "torchvision":
        import torchvision.models.video as video

        names = [n for n in dir(video) if n.islower() and not n.startswith("_") and callable(getattr(video, n))]
        names = [n for n in names if n not in ("get_model", "get_weight", "list_models")]
        return (lambda name: lambda **kw: getattr(video, name)(weights=None, **kw)), names
    raise KeyError(source)


def build(spec: str, **kwargs) -> nn.Module:
    """Build the model ``spec`` names, with random weights and ``kwargs`` passed through.

    Example::

        model = fan_convert.zoo.build("torchvision:r3d_18", num_classes=174)
    """
    source, sep, name = spec.partition(":")
    if not sep or not name:
        raise UnknownArchError(
            f"architecture spec {spec!r} has no source: use timm:NAME, pytorchvideo:NAME, torchvision:NAME or module.path:factory"
        )
    try:
        factory_for, names = _available(source)
    except KeyError:
        try:
            factory = getattr(importlib.import_module(source), name)
        except (ImportError, AttributeError) as err:
            raise UnknownArchError(f"cannot import factory {spec!r} ({err}); check the module path and name") from None
        return factory(**kwargs)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'{source}:{c}' for c in close)}?" if close else ""
        raise UnknownArchError(f"unknown {source} architecture {name!r}{hint}")
    return factory_for(name)(**kwargs)
