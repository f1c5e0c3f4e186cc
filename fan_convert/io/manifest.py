"""The manifest of a fan-convert file, read and checked: the safetensors header against the
file's size, the manifest (JSON under the metadata key ``fan_convert``) field by field. A damaged
file stops here with a :class:`FanFileError` that names the file and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..surgery import ConversionPlan

MANIFEST_KEY = "fan_convert"
FORMAT = "fan-convert/1"


class FanFileError(ValueError):
    """A file that is not a readable fan-convert checkpoint."""


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a fan-convert file, checked field by field: a damaged file stops here
    with a :class:`FanFileError` that names the file.

    Example::

        manifest = fan_convert.read_manifest("r3d18_fan.safetensors")
        print(manifest["kind"], manifest["frames"], manifest["arch"])   # fan [4, 8, 16] {...}
    """
    path = Path(path)
    if not path.is_file():
        raise FanFileError(f"'{path}' does not exist or is not a file; check the path")
    metadata = read_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise FanFileError(f"'{path}' has a damaged safetensors header (its metadata is not an object); {_REDO}")
    if MANIFEST_KEY not in metadata:
        raise FanFileError(f"'{path}' has no fan-convert manifest; convert a checkpoint first with `fan-convert CHECKPOINT --frames ...`")
    try:
        manifest = json.loads(metadata[MANIFEST_KEY])
    except (json.JSONDecodeError, TypeError):
        raise FanFileError(f"'{path}' has a corrupt fan-convert manifest (not JSON); {_REDO}") from None
    if not isinstance(manifest, dict):
        raise FanFileError(f"'{path}' has a corrupt fan-convert manifest (a JSON {type(manifest).__name__}, not an object); {_REDO}")
    if manifest.get("format") != FORMAT:
        raise FanFileError(f"'{path}' uses format {manifest.get('format')!r}; this fan-convert reads {FORMAT!r} — upgrade fan-convert")
    problem = _manifest_problem(manifest)
    if problem:
        raise FanFileError(f"'{path}' has a damaged fan-convert manifest ({problem}); {_REDO}")
    return manifest


_REDO = "the file is damaged: write it again (fan-convert convert / specialize)"


def read_header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path`` (tensor names -> dtype, shape, offsets; ``__metadata__``),
    checked against the file's size so that a truncated or damaged file is named as such."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if size < 8 or length > size - 8:
            raise FanFileError(f"'{path}' is not a safetensors file, or is truncated (its header length says {length:,} bytes, "
                               f"{max(size - 8, 0):,} follow); give a file written by fan-convert, or write it again")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    entries = [v for k, v in header.items() if k != "__metadata__"] if isinstance(header, dict) else None
    if entries is None or not all(_tensor_entry(v) for v in entries):
        raise FanFileError(f"'{path}' has a damaged safetensors header; {_REDO}")
    needed = 8 + length + max((v["data_offsets"][1] for v in entries), default=0)
    if needed > size:
        raise FanFileError(f"'{path}' is truncated: its tensors need {needed:,} bytes, the file has {size:,}; write it again")
    if needed < size:
        raise FanFileError(f"'{path}' has a damaged safetensors header (its tensors end at byte {needed:,}, the file has "
                           f"{size:,}); {_REDO}")
    return header


def _tensor_entry(entry: Any) -> bool:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    return (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and isinstance(entry.get("shape"), list)
            and all(_count(d) or d == 0 for d in entry["shape"]) and isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets) and offsets[0] <= offsets[1])


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _counts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_count(v) for v in value)


def _arch_field(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and isinstance(value.get("spec"), str)
                             and isinstance(value.get("kwargs", {}), dict))


def _plan_field(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    try:
        ConversionPlan.from_dict(value)
    except Exception:
        return False
    return True


def _kept_field(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and isinstance(value.get("paths", []), list)
                             and all(isinstance(p, str) for p in value.get("paths", []))
                             and (not value.get("paths") or (_count(value.get("kernel_size")) and _count(value.get("key")))))


_COMMON = {
    "kind": (lambda v: v in ("fan", "specialized"), "'fan' or 'specialized'"),
    "arch": (_arch_field, "null or {spec: str, kwargs: object}"),
    "frames": (_counts, "a list of positive frame counts"),
    "trained_at": (_count, "a positive frame count"),
    "input": (lambda v: isinstance(v, dict), "an object"),
    "source": (lambda v: isinstance(v, dict), "an object"),
    "user_rules": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of rule names"),
    "classes": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) and n for n in v)
                and len(set(v)) == len(v), "a list of distinct class names"),
    "head": (lambda v: isinstance(v, dict) and isinstance(v.get("keys"), list) and (v.get("classes") is None or _count(v["classes"])),
             "{keys: [str], classes: int}"),
    "preprocessing": (lambda v: isinstance(v, dict), "an object"),
    "training": (lambda v: isinstance(v, dict), "an object"),
}
_BY_KIND = {
    "fan": {"plan": (_plan_field, "a conversion plan object")},
    "specialized": {
        "specialized_from": (_counts, "a list of positive frame counts"),
        "fixed_t": (lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v), "a list of site objects"),
        "kept_alterations": (_kept_field, "{paths: [str], kernel_size: int, key: int}"),
    },
}
_OPTIONAL = {"input", "source", "user_rules", "fixed_t", "kept_alterations", "classes", "head", "preprocessing", "training"}


def _manifest_problem(manifest: dict) -> str | None:
    """The first field that is missing or of the wrong type, described; None when all fit."""
    fields = dict(_COMMON)
    kind = manifest.get("kind")
    fields.update(_BY_KIND.get(kind, {}) if isinstance(kind, str) else {})
    for name, (fits, expected) in fields.items():
        if name not in manifest:
            if name in _OPTIONAL:
                continue
            return f"no {name!r} field"
        if not fits(manifest[name]):
            return f"{name!r} is {json.dumps(manifest[name])[:40]}, expected {expected}"
    if manifest["kind"] == "specialized" and len(manifest["frames"]) != 1:
        return f"'frames' is {manifest['frames']}, expected one frame count"
    return None


