"""fan-convert: turn any pretrained PyTorch video model into a Frame Adaptive Network (FAN).

    import fan_convert
    fan = fan_convert.adapt(model, frames=(4, 8, 16))
    with fan_convert.frames(8):
        logits = fan(clip)

The whole journey is here: build or read a model, adapt it, fine-tune and evaluate it, save and
load it, specialise and export it. Layers and surgery internals live in their modules
(``fan_convert.nn``, ``fan_convert.surgery``, ``fan_convert.io`` ...). Names are loaded on first
use, so ``import fan_convert`` stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from typing import TYPE_CHECKING, Any

from . import extensions as _extensions
from ._version import __version__

# public name -> the module that defines it
_JOURNEY = {
    # the model: by spec, from a checkpoint
    "build": "fan_convert.zoo", "read_checkpoint": "fan_convert.io", "from_checkpoint": "fan_convert.pipeline",
    "load_pretrained": "fan_convert.pipeline",
    # conversion
    "adapt": "fan_convert.surgery", "plan": "fan_convert.surgery", "apply_plan": "fan_convert.surgery",
    "get_plan": "fan_convert.surgery", "register_norm": "fan_convert.surgery", "register_rule": "fan_convert.surgery",
    "Rule": "fan_convert.surgery", "ConversionPlan": "fan_convert.surgery",
    "UnsupportedNormWarning": "fan_convert.surgery",
    # choosing the frame count
    "frames": "fan_convert.context", "active_frames": "fan_convert.context", "nearest_key": "fan_convert.context",
    "NoActiveFrames": "fan_convert.context",
    # fine-tuning and evaluation
    "Trainer": "fan_convert.train.trainer", "TrainConfig": "fan_convert.train.trainer",
    "evaluate": "fan_convert.train.evaluate", "calibrate": "fan_convert.train.evaluate",
    # files
    "save": "fan_convert.io", "load": "fan_convert.io", "save_specialized": "fan_convert.io", "read_manifest": "fan_convert.io",
    # deployment
    "specialize": "fan_convert.surgery", "NotFoldableError": "fan_convert.nn",
    "export_specialized": "fan_convert.deploy", "export_verified": "fan_convert.deploy", "choose_frames": "fan_convert.deploy",
    "export": "fan_convert.deploy.dynamic",  # one artifact for every frame count
}

# names that were exported here before and now live only in their modules: still importable
_MOVED = {
    "NormBank": "fan_convert.nn", "WeightAlteration": "fan_convert.nn", "ResidualAlteration": "fan_convert.nn",
    "fold_alteration": "fan_convert.nn", "Site": "fan_convert.surgery",
}

_SUBPACKAGES = (
    "clips", "context", "data", "deploy", "integrations", "io", "nn", "outputs", "pipeline", "surgery", "testing", "train", "zoo",
)


def _load_integrations() -> None:
    """The integrations with other model libraries: each registers its rules with the rule table
    when imported. Declared here, above every layer, so that the table never names them."""
    importlib.import_module("fan_convert.integrations.transformers")


_extensions.declare(_load_integrations)  # run when the rule table first loads: `import fan_convert` stays light


def _available(name: str) -> bool:
    module = _JOURNEY[name]
    return module != "fan_convert.pipeline" or importlib.util.find_spec(module) is not None


__all__ = [name for name in _JOURNEY if _available(name)] + ["zoo", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _JOURNEY:
        value = getattr(importlib.import_module(_JOURNEY[name]), name)
    elif name in _MOVED:
        warnings.warn(
            f"fan_convert.{name} moved: import it from {_MOVED[name]} (from {_MOVED[name]} import {name})",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"fan_convert.{name}")
    else:
        raise AttributeError(f"module 'fan_convert' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from . import zoo  # noqa: F401
    from .context import NoActiveFrames, active_frames, frames, nearest_key  # noqa: F401
    from .deploy import choose_frames, export_specialized, export_verified  # noqa: F401
    from .deploy.dynamic import export  # noqa: F401
    from .io import load, read_checkpoint, read_manifest, save, save_specialized  # noqa: F401
    from .nn import NotFoldableError  # noqa: F401
    from .pipeline import from_checkpoint, load_pretrained  # noqa: F401
    from .surgery import (  # noqa: F401
        ConversionPlan,
        Rule,
        UnsupportedNormWarning,
        adapt,
        apply_plan,
        get_plan,
        plan,
        register_norm,
        register_rule,
        specialize,
    )
    from .train.evaluate import calibrate, evaluate  # noqa: F401
    from .train.trainer import TrainConfig, Trainer  # noqa: F401
    from .zoo import build  # noqa: F401
