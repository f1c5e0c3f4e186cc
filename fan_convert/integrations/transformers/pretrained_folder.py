"""A ``transformers`` ``save_pretrained`` folder read as a checkpoint (by
:func:`fan_convert.io.read_checkpoint`, which gives a folder to :func:`read_pretrained_folder`).

The folder holds ``config.json`` and the weights: ``model.safetensors``, the shards named by
``model.safetensors.index.json``, or ``pytorch_model.bin``, read by ``transformers``' own loader
from the local folder (it maps saved key names to the model's; every key must fit). The architecture is the video classifier of the config's
``model_type``, built from the config's fields (``hf:<model_type>`` with the config as
arguments), so a FAN file made from the folder rebuilds without it. Nothing from the folder is
executed: ``auto_map``/remote code is never used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import CheckpointError, first_line
from .models import config_fields, hf_config, read_config_file, video_classifiers

__all__ = ["is_pretrained_folder", "read_pretrained_folder"]

_SAFETENSORS, _INDEX, _PICKLE = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"


def is_pretrained_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (a ``save_pretrained`` folder)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def read_pretrained_folder(path: str | Path) -> tuple[nn.Module, list[str]]:
    """The classifier of a ``save_pretrained`` folder, built and loaded while reading (in eval
    mode, so that nothing builds it a second time), and notes on what was read. ``model.fan_arch``
    is its architecture: ``{"spec": "hf:<model_type>", "kwargs": <config fields>}``, what
    :func:`fan_convert.zoo.build` rebuilds it from. Raises
    :class:`~fan_convert.errors.CheckpointError` for a folder that cannot be read.

    Example::

        model, notes = read_pretrained_folder("videomae-ssv2/")
        model.fan_arch["spec"]   # 'hf:videomae'
    """
    path = Path(path)
    try:
        saved = read_config_file(path).get("architectures") or []
        config = hf_config(str(path / "config.json"))
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"cannot read the config of '{path}': {err}") from None
    wanted = video_classifiers()[config.model_type]
    saved = [a for a in saved if a != wanted]
    if saved:
        raise CheckpointError(
            f"'{path}' holds a {saved[0]}, not a {wanted}; fan-convert converts video classifiers: "
            f"save the {wanted} (e.g. after fine-tuning a classification head) and convert that folder")
    import transformers

    normalisation = _normalisation(path)
    for name, value in normalisation.items():
        setattr(config, name, value)
    model, notes = _read_weights(path, getattr(transformers, wanted), config)
    notes.append(f"read the save_pretrained folder of a {wanted} ({config.model_type})")
    if normalisation:
        notes.append(f"normalisation from the preprocessor config: mean {normalisation['image_mean']}, std {normalisation['image_std']}")
    model.fan_arch = {"spec": f"hf:{config.model_type}", "kwargs": config_fields(config)}
    return model.eval(), notes


def _normalisation(path: Path) -> dict:
    """``image_mean``/``image_std`` of the folder's (video) preprocessor config, when it has them."""
    import json

    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        mean, std = data.get("image_mean"), data.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return {"image_mean": [float(v) for v in mean], "image_std": [float(v) for v in std]}
    return {}


def _read_weights(path: Path, model_class, config) -> tuple[nn.Module, list[str]]:
    """The model of ``config`` with the folder's weights. ``transformers`` renames keys between
    the saved layout and the model (VideoMAE's ``q_bias`` is ``query.bias``), so its own loader
    reads them; anything it reports missing, unexpected or mismatched is an error here."""
    if not any((path / name).is_file() for name in (_SAFETENSORS, _INDEX, _PICKLE)):
        raise CheckpointError(
            f"'{path}' has a config.json but no weights ({_SAFETENSORS}, {_INDEX} or {_PICKLE}); "
            "copy the whole save_pretrained folder")
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        model, info = model_class.from_pretrained(
            str(path), config=config, local_files_only=True, trust_remote_code=False, output_loading_info=True, dtype=torch.float32,
            ignore_mismatched_sizes=True)
    except Exception as err:  # damaged file, bad index: transformers raises many kinds
        raise CheckpointError(f"cannot read the weights of '{path}' ({type(err).__name__}: {first_line(err)})") from None
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    problems = [f"{len(keys)} {label} key(s), e.g. {_key(keys)!r}" for label, keys in (
        ("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys")),
        ("shape-mismatched", info.get("mismatched_keys"))) if keys]
    if problems:
        raise CheckpointError(f"the weights in '{path}' do not fit its config: {'; '.join(problems)}")
    files = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    return model, [f"read {', '.join(files)}"]


def _key(keys) -> str:
    first = sorted(keys, key=str)[0]
    return first[0] if isinstance(first, tuple) else first
