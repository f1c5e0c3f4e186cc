"""Architecture specs: one string names a model, always built with random weights.

``timm:NAME`` (a 2D backbone wrapped into a video model: TSN or TSM), ``fan_convert:NAME``
(fan-convert's own small 2D backbones, e.g. ``tiny_resnet`` for the built-in benchmark, wrapped the same way), ``pytorchvideo:NAME`` (a hub
builder), ``torchvision:NAME`` (``torchvision.models.video``, or a 2D classification model such as
``resnet50``, wrapped like timm's), ``hf:NAME`` (a ``transformers`` video classifier built from a
config, see :mod:`fan_convert.integrations.transformers`) or ``package.module:factory`` (any callable returning a
model). Weights come from the user's checkpoint; nothing is downloaded.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

from torch import nn

from ..errors import UnknownArchError


def _available(source: str) -> tuple[Callable[[str], Callable], list[str]]:
    if source == "timm":
        import timm

        return (lambda name: lambda **kw: timm.create_model(name, pretrained=False, **kw)), timm.list_models()
    if source == "fan_convert":
        from . import tiny

        return (lambda name: getattr(tiny, name)), [n for n in tiny.__all__ if n.islower()]
    if source == "pytorchvideo":
        from pytorchvideo.models import hub

        names = [n for n in dir(hub) if not n.startswith("_") and callable(getattr(hub, n)) and n.islower()]
        return (lambda name: lambda **kw: getattr(hub, name)(pretrained=False, **kw)), names
    if source == "torchvision":
        import torchvision.models.video as video

        names = [n for n in dir(video) if n.islower() and not n.startswith("_") and callable(getattr(video, n))]
        names = [n for n in names if n not in ("get_model", "get_weight", "list_models")]
        images = _torchvision_image_models()
        def factory(name: str) -> Callable:
            return lambda **kw: (getattr(video, name) if name in names else images[name])(weights=None, **kw)

        return factory, names + sorted(images)
    raise KeyError(source)


def _torchvision_image_models() -> dict[str, Callable]:
    """torchvision's 2D image classifiers by name (``resnet50``, ``mobilenet_v2``, ...)."""
    import torchvision

    return {name: torchvision.models.get_model_builder(name) for name in torchvision.models.list_models(module=torchvision.models)}


def is_image_backbone(spec: str) -> bool:
    """Whether ``spec`` names a 2D image backbone, built wrapped as a video model (TSN/TSM)."""
    source, _, name = spec.partition(":")
    if source in IMAGE_SOURCES:
        return True
    return source == "torchvision" and name in _torchvision_image_models()


TEMPORAL = ("tsn", "tsm", "none")
IMAGE_SOURCES = ("timm", "fan_convert")  # 2D backbones, wrapped as video models (and torchvision's 2D classifiers)


def build(spec: str, *, temporal: str | None = None, shift_div: int = 8, **kwargs) -> nn.Module:
    """Build the model ``spec`` names, with random weights and ``kwargs`` passed through.

    A ``timm:`` backbone (or a torchvision 2D classifier) is 2D; it comes wrapped as a video model taking ``(B, C, T, H, W)``
    clips: ``temporal="tsn"`` (the default; :class:`~fan_convert.zoo.wrappers.TSN`),
    ``"tsm"`` (:class:`~fan_convert.zoo.wrappers.TSM`, temporal shift of ``1/shift_div`` of the
    channels each way) or ``"none"`` (the bare 2D backbone). Other sources are video models
    already and take neither ``temporal`` nor ``shift_div``.

    Example::

        model = fan_convert.zoo.build("torchvision:r3d_18", num_classes=174)
        tsm = fan_convert.zoo.build("timm:resnet50", temporal="tsm", num_classes=174)
        tsm = fan_convert.zoo.build("torchvision:resnet50", temporal="tsm", num_classes=174)
        videomae = fan_convert.zoo.build("hf:videomae", num_frames=8, image_size=64)
    """
    source, sep, name = spec.partition(":")
    if not sep or not name:
        raise UnknownArchError(
            f"architecture spec {spec!r} has no source: use timm:NAME, pytorchvideo:NAME, torchvision:NAME, hf:NAME or module.path:factory"
        )
    image = is_image_backbone(spec)
    if image:
        temporal = "tsn" if temporal is None else temporal
        if temporal not in TEMPORAL:
            raise ValueError(f"temporal must be one of {', '.join(repr(t) for t in TEMPORAL)}, got {temporal!r}")
        if temporal != "tsm" and shift_div != 8:
            raise ValueError(f"shift_div applies to temporal='tsm' only (got temporal={temporal!r})")
    elif temporal is not None or shift_div != 8:
        given = f"temporal={temporal!r}" if temporal is not None else f"shift_div={shift_div!r}"
        raise ValueError(
            f"{given} applies to 2D backbones (timm:, fan_convert:, torchvision 2D classifiers) only; "
            f"{spec!r} is built as the video model it is"
        )
    if source == "hf":
        from ..integrations.transformers import build_hf

        return build_hf(name, **kwargs)
    try:
        factory_for, names = _available(source)
    except KeyError:
        try:
            factory = getattr(importlib.import_module(source), name)
        except (ImportError, AttributeError) as err:
            raise UnknownArchError(f"cannot import factory {spec!r} ({err}); check the module path and name") from None
        return _record(factory(**kwargs), spec, kwargs)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(f'{source}:{c}' for c in close)}?" if close else ""
        raise UnknownArchError(f"unknown {source} architecture {name!r}{hint}")
    model = factory_for(name)(**kwargs)
    if image and temporal != "none":
        from .wrappers import TSM, TSN

        model = TSM(model, shift_div=shift_div) if temporal == "tsm" else TSN(model)
    if image:
        kwargs = {"temporal": temporal, **({"shift_div": shift_div} if temporal == "tsm" else {}), **kwargs}
    return _record(model, spec, kwargs)


def _record(model: nn.Module, spec: str, kwargs: dict) -> nn.Module:
    """Remember how the model was built, so a saved FAN file can rebuild it."""
    if not isinstance(model, nn.Module):
        raise UnknownArchError(f"{spec!r} returned a {type(model).__name__}, not an nn.Module")
    model.fan_arch = {"spec": spec, "kwargs": dict(kwargs)}
    return model
