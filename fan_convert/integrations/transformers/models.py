"""Hugging Face ``transformers`` video classifiers as architecture specs (``hf:NAME``).

``NAME`` is a model type with a ``...ForVideoClassification`` class in the installed
``transformers`` (``videomae``, ``timesformer``, ``vivit``, ``vjepa2``,
``videoprism_vision_model``), that class's name, or the path of a ``config.json`` (or of the
``save_pretrained`` folder holding one). The model is built from the model type's default
config, or the file's, with ``kwargs`` overriding single fields (``num_frames``,
``image_size``, ``hidden_size``, ``num_labels``; ``num_classes`` is taken as ``num_labels``).
Weights are random; nothing is downloaded. The model remembers its whole config, so a saved
FAN file rebuilds it without the original folder::

    model = fan_convert.zoo.build("hf:videomae", num_frames=8, image_size=64, num_labels=10)
    model = fan_convert.zoo.build("hf:./videomae-ssv2/config.json")

``transformers`` is the optional extra ``hf``: ``pip install 'fan-convert[hf]'``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ...errors import UnknownArchError

__all__ = [
    "MissingExtraError", "video_classifiers", "build_hf", "hf_config", "read_config_file", "config_fields", "video_input_name",
    "is_hf_video_model", "frame_size", "reader_settings",
]

# Input normalisation a config may carry (fan-convert adds them from a folder's preprocessor config).
NORMALISATION = ("image_mean", "image_std")
# What a saved config may carry that is not an architecture choice.
_NOT_ARCHITECTURE = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")


class MissingExtraError(ImportError, ValueError):
    """An ``hf:`` spec without the ``transformers`` package installed (a ValueError too: a bad input)."""


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(
            "hf: architectures need the transformers package: install the 'hf' extra with pip install 'fan-convert[hf]'"
        ) from None
    return transformers


def video_classifiers() -> dict[str, str]:
    """``{model_type: class name}`` of every ``...ForVideoClassification`` class ``transformers`` has."""
    _transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES

    return dict(MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES)


def read_config_file(path: Path) -> dict:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"'{file}' does not exist; give a config.json or the save_pretrained folder holding one")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"'{file}' is not valid JSON ({err}); give the config.json written by save_pretrained") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ValueError(f"'{file}' has no model_type; it is not a transformers config.json")
    return data


def hf_config(name: str, **overrides: Any):
    """The config ``hf:NAME`` builds from: the model type's defaults (or a config file's fields),
    then ``overrides``. Raises ValueError naming the known model types for an unknown one."""
    transformers = _transformers()
    classes = video_classifiers()
    by_class = {cls: model_type for model_type, cls in classes.items()}
    fields: dict = {}
    if name.endswith(".json") or "/" in name or Path(name).is_dir():
        fields = read_config_file(Path(name))
        model_type = fields["model_type"]
    else:
        model_type = by_class.get(name, name)
    if model_type not in classes:
        known = ", ".join(f"hf:{t}" for t in classes)
        raise UnknownArchError(f"unknown hf video classifier {name!r}; this transformers ({transformers.__version__}) has {known}")
    if "num_classes" in overrides:
        overrides["num_labels"] = overrides.pop("num_classes")
    config_class = transformers.AutoConfig.for_model(model_type).__class__
    data = {k: v for k, v in {**fields, **overrides}.items() if k not in _NOT_ARCHITECTURE and k != "model_type"}
    if "num_labels" in overrides:  # label names sized for another head would override num_labels
        data.pop("id2label", None)
        data.pop("label2id", None)
    default = config_class()
    unknown = sorted(k for k in overrides if k not in default.to_dict() and not hasattr(default, k) and k not in NORMALISATION)
    if unknown:
        raise ValueError(f"{config_class.__name__} has no field {unknown[0]!r}; check arch_kwargs (--arch-kwarg)")
    return config_class.from_dict(data)


def build_hf(name: str, **overrides: Any) -> nn.Module:
    """The ``...ForVideoClassification`` model ``hf:NAME`` names, with random weights, in eval
    mode (as ``from_pretrained`` returns it). It records its full config in ``model.fan_arch``."""
    transformers = _transformers()
    config = hf_config(name, **overrides)
    model_class = getattr(transformers, video_classifiers()[config.model_type])
    model = model_class(config).eval()
    model.fan_arch = {"spec": f"hf:{config.model_type}", "kwargs": config_fields(config)}
    return model


def config_fields(config) -> dict:
    """A config as JSON-ready fields that rebuild it (``hf_config(model_type, **fields)``)."""
    return {k: v for k, v in config.to_dict().items() if k not in _NOT_ARCHITECTURE and k != "model_type"}


def is_hf_video_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers`` model taking ``(B, T, C, H, W)`` video."""
    return video_input_name(model) is not None


def video_input_name(model: nn.Module) -> str | None:
    """The keyword a ``transformers`` video model takes its clip by (``pixel_values`` or V-JEPA 2's
    ``pixel_values_videos``), or None for other models."""
    name = getattr(model, "main_input_name", None)
    if name in ("pixel_values", "pixel_values_videos") and type(model).__module__.startswith("transformers."):
        return name
    return None


def frame_size(model: nn.Module) -> int | None:
    """The square frame size a ``transformers`` video model was built for (its config's
    ``image_size`` or ``crop_size``: position embeddings fix it); None for other models."""
    if not is_hf_video_model(model):
        return None
    size = getattr(model.config, "image_size", None) or getattr(model.config, "crop_size", None)
    return size if isinstance(size, int) else None


def reader_settings(model: nn.Module) -> dict:
    """What the video readers (:class:`~fan_convert.data.MultiViewClips`) must give
    ``model``: for a ``transformers`` video model ``(B, T, C, H, W)`` clips (``layout``), its
    frame size (``crop_size``) and, when its config carries them, its normalisation constants
    (``mean``, ``std``). Empty for other models."""
    if not is_hf_video_model(model):
        return {}
    config = model.config
    size = frame_size(model)
    settings: dict = {"layout": "BTCHW"}
    if size is not None:
        settings["crop_size"] = size
    mean, std = (getattr(config, name, None) for name in NORMALISATION)
    if isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) == 3:
        settings["mean"], settings["std"] = tuple(mean), tuple(std)
    return settings
