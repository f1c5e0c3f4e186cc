"""An exported artifact (`fan-convert export`'s ``.onnx`` or ``.pt2``): the ``fan_convert``
metadata it carries, and a CPU runner for it.

    artifact = read_artifact("r3d.onnx")     # metadata only: nothing is loaded or unpickled
    artifact.every_frame_count, artifact.keys, artifact.frame_range     # True, (4, 8, 16), (2, 64)
    run = load_runner(artifact, threads=2)   # onnxruntime; a .pt2 needs trust_pickle=True
    logits = run(torch.randn(artifact.clip_shape(8)))

Reading the metadata never runs the model's code: an ONNX file's ``metadata_props`` are read
from its protobuf directly, a ``.pt2``'s extra file from its zip archive. Loading a ``.pt2``
(:func:`torch.export.load`) can unpickle — torch falls back to ``torch.load(weights_only=False)``
when the weights-only read fails — so it needs ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import mmap
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import describe
from .export import WRITERS
from .metadata import METADATA_KEY

__all__ = ["Artifact", "read_artifact", "load_runner", "METADATA_KEY"]



@dataclass(frozen=True)
class Artifact:
    """What an exported artifact says about itself (its ``fan_convert`` metadata)."""

    path: Path
    format: str  # "onnx" or "torch-export"
    metadata: dict

    @property
    def every_frame_count(self) -> bool:
        """One artifact for every frame count (exported without --frames), not one T."""
        return self.metadata.get("frames") == "any"

    @property
    def keys(self) -> tuple[int, ...]:
        """The trained keys (sub-networks) it holds."""
        keys = self.metadata.get("keys")
        return tuple(keys) if keys else (self.metadata["key"],)

    @property
    def frame_range(self) -> tuple[int, int]:
        low, high = self.metadata.get("frame_range") or (self.metadata["frames"],) * 2
        return int(low), int(high)

    @property
    def frame_multiple(self) -> int:
        """The frame counts it takes are multiples of this (a tubelet model's tubelet)."""
        return int(self.metadata.get("frame_multiple", 1))

    @property
    def batch(self) -> int | None:
        """The batch it was exported for; None: any batch (``--dynamic-batch``)."""
        batch = self.metadata["input"].get("batch")
        return None if batch == "dynamic" else int(batch)

    @property
    def frame_axis(self) -> int:
        return 1 if self.metadata["input"].get("layout") == "BTCHW" else 2

    @property
    def size(self) -> tuple[int, int]:
        """The clips' (H, W), as exported."""
        shape = self.metadata["input"]["shape"]
        return int(shape[-2]), int(shape[-1])

    def check_frames(self, frames: Sequence[int]) -> None:
        """ValueError, one line, unless every T of ``frames`` is one the artifact takes."""
        low, high = self.frame_range
        outside = [t for t in frames if not low <= t <= high]
        if outside:
            raise ValueError(f"{_counts(outside)} outside the range {self.path.name} takes, {low}..{high} "
                             "(recorded at export); pick frame counts within it (--frames), or export again with a "
                             "larger --max-frames")
        unit = self.frame_multiple
        odd = [t for t in frames if t % unit]
        if odd:
            near = sorted({max(low, t - t % unit) for t in odd} | {min(high - high % unit, t - t % unit + unit) for t in odd})
            raise ValueError(f"{_counts(odd)} not {'a multiple' if len(odd) == 1 else 'multiples'} of {unit}: "
                             f"{self.path.name} takes whole tubelets "
                             f"of {unit} frames; pick multiples of {unit} (e.g. {', '.join(map(str, near))})")

    def clip_shape(self, t: int, batch: int | None = None) -> tuple[int, ...]:
        """The input's shape for ``t`` frames: the recorded shape with T filled in, and ``batch``
        where the batch is dynamic (default 1; a fixed batch other than the recorded one: ValueError)."""
        recorded = self.batch
        if recorded is not None and batch is not None and batch != recorded:
            raise ValueError(f"{self.path.name} was exported for batch {recorded} (fixed); use batch={recorded} "
                             f"(--batch {recorded}), or export with --dynamic-batch for other batch sizes")
        shape = list(self.metadata["input"]["shape"])
        shape[0] = recorded if recorded is not None else batch or 1
        shape[self.frame_axis] = t
        return tuple(int(d) for d in shape)


def _counts(values: Sequence[int]) -> str:
    """'frame count 5 is' / 'frame counts 5, 7 are'."""
    if len(values) == 1:
        return f"frame count {values[0]} is"
    return f"frame counts {', '.join(map(str, values))} are"


def read_artifact(path: str | os.PathLike) -> Artifact:
    """The metadata of an artifact written by ``fan-convert export`` (``.onnx`` or ``.pt2``),
    read without loading the model or unpickling anything.

    Raises ValueError (one line) for a missing file, another suffix, a file that is not an ONNX
    model / ``.pt2`` archive, or one without fan-convert metadata.

    Example::

        read_artifact("r3d.onnx").metadata["classes"]
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"artifact '{path}' does not exist" if not path.exists() else f"'{path}' is not a file")
    suffix = path.suffix.lower()
    format = next((name for name, writer in WRITERS.items() if writer.suffix == suffix), None)
    if format is None:
        raise ValueError(f"'{path}' is neither an .onnx nor a .pt2 artifact (from `fan-convert export`)")
    text = _onnx_metadata(path) if format == "onnx" else _pt2_metadata(path)
    if text is None:
        raise ValueError(f"'{path}' is not a fan-convert artifact: it has no '{METADATA_KEY}' metadata; export the model "
                         "with `fan-convert export`, or pass its FAN file")
    try:
        metadata = json.loads(text)
        if not isinstance(metadata, dict) or "frames" not in metadata or not isinstance(metadata.get("input"), dict):
            raise ValueError
        artifact = Artifact(path=path, format=format, metadata=metadata)
        _ = artifact.keys, artifact.frame_range, artifact.batch, artifact.size  # each must read
    except (ValueError, TypeError, KeyError, IndexError):
        raise ValueError(f"'{path}': its '{METADATA_KEY}' metadata is damaged or from another version; export the model "
                         "again with `fan-convert export`") from None
    return artifact


def _pt2_metadata(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_KEY}")
                         or n == f"extra/{METADATA_KEY}"), None)
            return None if name is None else archive.read(name).decode("utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"'{path}' is not a readable .pt2 archive ({describe(err)})") from None


def _varint(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _fields(data: Any, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited field) of one protobuf message."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = (pos, pos + length), pos + length
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end or number == 0:
            raise ValueError("truncated")
        yield number, wire, value


def _onnx_metadata(path: Path) -> str | None:
    """ModelProto.metadata_props (field 14: key = 1, value = 2), read from the file's top level
    without parsing the graph."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            seen_graph = False
            for number, wire, value in _fields(data, 0, len(data)):
                seen_graph |= number == 7 and wire == 2
                if number == 14 and wire == 2:
                    entry = {n: bytes(data[v[0]:v[1]]).decode("utf-8") for n, w, v in _fields(data, *value) if w == 2}
                    if entry.get(1) == METADATA_KEY:
                        return entry.get(2, "")
            if not seen_graph:
                raise ValueError("no graph")
    except (ValueError, IndexError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"'{path}' is not a readable ONNX model ({describe(err)})") from None
    return None


def load_runner(artifact: Artifact, *, threads: int | None = None, trust_pickle: bool = False) -> Callable[[torch.Tensor], Any]:
    """A function running ``artifact`` on the CPU: ``run(clip) -> outputs``.

    ``.onnx``: an onnxruntime session (``threads``: its intra-op threads; default onnxruntime's).
    ``.pt2``: ``torch.export.load(path).module()`` (run it under the torch thread count you want);
    since that can unpickle, it needs ``trust_pickle=True`` — only for files you trust.

    Raises:
        ImportError: onnxruntime missing (for ``.onnx``); ValueError: an untrusted ``.pt2``, or a
        file that does not load.
    """
    path = artifact.path
    if artifact.format == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ImportError(f"running an ONNX artifact needs onnxruntime; install it with: {WRITERS['onnx'].install}") from None
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ValueError(f"onnxruntime could not load '{path}' ({describe(err)})") from None
        name = session.get_inputs()[0].name
        return lambda clip: session.run(None, {name: clip.numpy()})
    if not trust_pickle:
        raise ValueError(f"loading '{path}' can unpickle (torch.export.load falls back to torch.load(weights_only=False), "
                         "which runs code from the file); pass trust_pickle=True (--trust-pickle) if you trust the file, "
                         "or use the .onnx artifact")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(str(path)).module()
    except Exception as err:
        raise ValueError(f"torch.export could not load '{path}' ({describe(err)})") from None
    return module
