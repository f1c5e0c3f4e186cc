"""What an exported artifact says about itself: the ``fan_convert`` metadata (frame count or range,
trained keys, classes, preprocessing, input shape) that `fan-convert export` and
:func:`fan_convert.export` store in every ``.onnx`` (``metadata_props``) and ``.pt2`` (an extra
file), and that :func:`fan_convert.deploy.artifact.read_artifact` and `fan-convert budget` read.
"""

from __future__ import annotations

import json
from typing import Sequence

from torch import nn

from ..clips import frame_size
from ..context import nearest_key
from ..surgery import get_plan

__all__ = ["METADATA_KEY", "artifact_metadata", "every_frame_count_metadata", "input_size_of", "metadata_props"]

METADATA_KEY = "fan_convert"  # ONNX metadata_props key / .pt2 extra file name


def input_size_of(fan: nn.Module, fallback: int = 224) -> int:
    """The frame size an artifact of ``fan`` takes unless told otherwise: the crop its file
    records (``fan_preprocessing``, from training), else the model's own (a ``transformers``
    video model's config), else ``fallback``."""
    from ..integrations.transformers import frame_size as model_frame_size

    crop = (getattr(fan, "fan_preprocessing", None) or {}).get("crop")
    return crop or model_frame_size(fan) or fallback


def artifact_metadata(fan: nn.Module, t: int, size: int | Sequence[int], batch: int = 1, dynamic_batch: bool = False,
                      source: str | None = None) -> dict:
    """The metadata of an artifact specialized to ``t`` frames: its frame count and key, classes,
    preprocessing and input (shape, layout, dtype, batch); ``source``: the FAN file it came from."""
    pre = getattr(fan, "fan_preprocessing", None)
    layout = (pre or {}).get("layout", "BCTHW")
    shape = [batch, t, 3, *frame_size(size)] if layout == "BTCHW" else [batch, 3, t, *frame_size(size)]
    return {"frames": t, "key": nearest_key(t, get_plan(fan).frames), "exported_from": source,
            "classes": getattr(fan, "fan_classes", None), "preprocessing": pre,
            "input": {"shape": shape, "layout": layout, "dtype": "float32", "batch": "dynamic" if dynamic_batch else batch}}


def every_frame_count_metadata(fan: nn.Module, size: int | Sequence[int], frame_range: tuple[int, int], frame_multiple: int,
                               batch: int = 1, dynamic_batch: bool = False, source: str | None = None) -> dict:
    """The metadata of the one artifact for every frame count: ``frames: "any"``, the range and
    multiple of T it takes, the trained keys, and the input shape with ``"T"`` on the frame axis."""
    keys = list(get_plan(fan).frames)
    metadata = artifact_metadata(fan, keys[-1], size, batch, dynamic_batch, source)
    del metadata["key"]
    metadata.update(frames="any", frame_range=list(frame_range), frame_multiple=frame_multiple, keys=keys)
    metadata["input"]["shape"][1 if metadata["input"]["layout"] == "BTCHW" else 2] = "T"
    return metadata


def metadata_props(metadata: dict) -> dict[str, str]:
    """The strings an artifact stores: ``{"fan_convert": json}``."""
    return {METADATA_KEY: json.dumps(metadata)}
