"""The FAN checkpoint: one ``.safetensors`` file with the weights of every key and a manifest
(JSON under the metadata key ``fan_convert``) holding everything needed to rebuild the model:
architecture spec and arguments, frame counts, the trained-at count, the conversion plan, and the
versions that wrote it. A *specialized* file holds the plain architecture for one frame count.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from .. import surgery
from ..errors import first_line
from ..zoo.layout import input_layout
from .atomic import atomic_write
from .manifest import FORMAT, MANIFEST_KEY, FanFileError, read_header, read_manifest

_SAFE_SOURCES = ("timm:", "pytorchvideo:", "torchvision:", "fan_convert:", "hf:")  # hf: builds from config fields


def _arch_of(model: nn.Module, arch: str | None, arch_kwargs: dict | None) -> dict | None:
    if arch is not None:
        return {"spec": arch, "kwargs": dict(arch_kwargs or {})}
    recorded = getattr(model, "fan_arch", None)
    return dict(recorded) if isinstance(recorded, dict) else None


def _input_of(model: nn.Module) -> dict:
    """The input layout beyond one (B, C, T, H, W) clip (SlowFast pathways), for tools that build clips."""
    layout = input_layout(model)
    return {"input": layout} if layout else {}


def _source_of(model: nn.Module) -> dict:
    """Where the weights came from (recorded by :func:`fan_convert.from_checkpoint`)."""
    source = getattr(model, "fan_source", None)
    return {"source": dict(source)} if isinstance(source, dict) else {}


_TASK_FIELDS = ("classes", "head", "preprocessing", "training")


def _task_of(model: nn.Module) -> dict:
    """What the model was trained for and on: class names (index order), its classifier (keys
    and size), clip preprocessing and the training run (``model.fan_classes``, ``.fan_head``,
    ``.fan_preprocessing``, ``.fan_training``)."""
    task = {name: getattr(model, f"fan_{name}", None) for name in _TASK_FIELDS}
    return {name: (list(value) if name == "classes" else dict(value)) for name, value in task.items() if value}


def _versions() -> dict[str, str]:
    from .._version import __version__

    return {"fan_convert": __version__, "torch": torch.__version__.split("+")[0]}


def _write(model: nn.Module, path, manifest: dict, overwrite: bool) -> Path:
    metadata = {MANIFEST_KEY: json.dumps(manifest)}
    return atomic_write(path, lambda temp: save_model(model, temp, metadata=metadata), overwrite)


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    overwrite: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write an adapted model to ``path`` (``.safetensors``) with its manifest, atomically.

    ``arch``/``arch_kwargs`` name the architecture to rebuild on load (defaults to what
    :func:`fan_convert.zoo.build` recorded on the model); without one, :func:`load` needs the
    unconverted model passed in.

    Example::

        fan_convert.save(fan, "r3d18_fan.safetensors", arch="torchvision:r3d_18", arch_kwargs={"num_classes": 174})
    """
    conversion = surgery.get_plan(model)
    manifest = {
        "format": FORMAT, "kind": "fan", "arch": _arch_of(model, arch, arch_kwargs),
        "frames": list(conversion.frames), "trained_at": conversion.trained_at,
        "plan": conversion.to_dict(), "versions": _versions(), **_input_of(model), **_source_of(model),
        **_user_rules(conversion.select()), **_task_of(model), **(extra or {}),
    }
    return _write(model, path, manifest, overwrite)


def save_specialized(
    model: nn.Module, frames: int, path: str | os.PathLike, *, arch: str | None = None,
    arch_kwargs: dict | None = None, overwrite: bool = False, unfoldable: str = "error",
) -> Path:
    """Specialize an adapted model to ``frames`` and write the plain architecture's weights.

    Example::

        fan_convert.save_specialized(fan, 8, "r3d18_8.safetensors", arch="torchvision:r3d_18", arch_kwargs={"num_classes": 174})
        plain8 = fan_convert.load("r3d18_8.safetensors")   # a plain r3d_18 for 8-frame clips
    """
    conversion = surgery.get_plan(model)
    plain = surgery.specialize(model, frames, unfoldable=unfoldable)
    fixed_t = conversion.select("fixed_t")
    manifest = {
        "format": FORMAT, "kind": "specialized", "arch": _arch_of(model, arch, arch_kwargs),
        "frames": [frames], "trained_at": conversion.trained_at, "specialized_from": list(conversion.frames),
        "kept_alterations": surgery.kept_alterations(plain, conversion, frames),
        "fixed_t": [asdict(site) for site in fixed_t],
        "versions": _versions(), **_input_of(model), **_user_rules(fixed_t), **_task_of(model),
    }
    return _write(plain, path, manifest, overwrite)


def _user_rules(sites) -> dict:
    """The user rules (fan_convert.register_rule) the sites were converted by, for the manifest."""
    names = surgery.user_rule_names([site.rule for site in sites])
    return {"user_rules": names} if names else {}


def _check_user_rules(manifest: dict, path) -> None:
    missing = surgery.missing_rules(manifest.get("user_rules", []))
    if missing:
        raise FanFileError(
            f"'{path}' was converted with the rule {missing[0]!r}, which is not registered here; import the code "
            "that calls fan_convert.register_rule for it before loading")


def build_from_manifest(manifest: dict, *, trust_factory: bool = False, path: str | os.PathLike | None = None) -> nn.Module:
    """The unconverted architecture a manifest names, with random weights."""
    from ..zoo import build

    where = f"'{path}'" if path is not None else "the file"
    arch = manifest.get("arch")
    if not arch:
        raise FanFileError(f"{where} records no architecture; pass the unconverted model: fan_convert.load(path, model=...)")
    spec = arch["spec"]
    if not spec.startswith(_SAFE_SOURCES) and not trust_factory:
        raise FanFileError(
            f"{where} names the factory {spec!r}, which would run code imported from your environment; "
            "pass trust_factory=True (--trust-factory) if you trust the file, or pass the model yourself"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return build(spec, **arch.get("kwargs", {}))
    except Exception as err:
        raise FanFileError(f"{where} names an architecture that cannot be built here ({spec}: {first_line(err)}); "
                           "install what it needs, or write the file again") from None


def load(path: str | os.PathLike, *, model: nn.Module | None = None, trust_factory: bool = False) -> nn.Module:
    """Rebuild the model saved by :func:`save` (an adapted model) or :func:`save_specialized`
    (the plain architecture). ``model``: the unconverted architecture, when the file records
    none (it is modified in place). A damaged file or one that does not fit the architecture
    raises :class:`FanFileError`.

    Example::

        fan = fan_convert.load("r3d18_fan.safetensors")
    """
    manifest = read_manifest(path)
    _check_user_rules(manifest, path)
    if model is None:
        model = build_from_manifest(manifest, trust_factory=trust_factory, path=path)
    try:
        model = _rebuild(model, manifest)
    except Exception as err:
        raise FanFileError(f"'{path}' does not fit the rebuilt model ({first_line(err)}); "
                           "the file is damaged or was written for another version of the architecture") from None
    _check_shapes(model, read_header(Path(path)), path)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as err:
        raise FanFileError(f"'{path}' holds tensors that do not fit the rebuilt model ({first_line(err)}); "
                           "the file is damaged or was written for another version of the architecture") from None
    if missing or unexpected:
        example = sorted(missing or unexpected)[0]
        raise FanFileError(
            f"'{path}' does not fit the rebuilt model ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {example!r}); the file is damaged or was written for another version of the architecture"
        )
    if manifest.get("arch"):
        model.fan_arch = manifest["arch"]
    for name in ("input", "source", *_TASK_FIELDS):
        if name in manifest:
            setattr(model, f"fan_{name}", manifest[name])
    return model.eval()


def _check_shapes(model: nn.Module, header: dict, path) -> None:
    own = model.state_dict()
    for name, entry in header.items():
        if name in own and list(own[name].shape) != entry["shape"]:
            raise FanFileError(f"'{path}' does not fit the rebuilt model (tensor {name!r} is {entry['shape']} in the file, "
                               f"{list(own[name].shape)} in the model); the file is damaged or was written for another "
                               "version of the architecture")


def _rebuild(model: nn.Module, manifest: dict) -> nn.Module:
    """Turn the plain architecture into what the file holds: the adapted model, or the plain
    one with its time adapters fixed to the file's frame count."""
    if manifest["kind"] == "fan":
        return surgery.apply_plan(model, surgery.ConversionPlan.from_dict(manifest["plan"]), inplace=True)
    surgery.restore_specialized(
        model, manifest["frames"][0], manifest["trained_at"], manifest.get("fixed_t", []), manifest.get("kept_alterations"))
    return model
