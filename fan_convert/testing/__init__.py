"""What tests, benchmarks and examples share: norm statistics a lost copy would show, random clips
in a model's input layout, an adapted model that looks fine-tuned, which key owns which piece of
state, a PyAV video writer and parameter counts.

    from fan_convert.testing import as_if_fine_tuned, randomize_norms, random_clip

    model = randomize_norms(build("torchvision:r3d_18")).eval()
    fan = as_if_fine_tuned(fan_convert.adapt(model, frames=(4, 8, 16)))
    logits = fan(random_clip(8, size=64))
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..clips import fresh, random_clip  # noqa: F401  (public test helpers)
from ..nn.counting import count_parameters  # noqa: F401

_AFFINE = ("weight", "gamma", "bias", "beta", "running_mean")


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm non-trivial statistics and affine parameters (in place; returns ``model``):
    running variances in [0.5, 1.5), running means, scales and shifts moved by up to ±0.1.
    A freshly built model has mean 0 / variance 1 / scale 1 / shift 0 (and timm zero-initialises
    some scales), which a fresh norm would reproduce: a converter that lost the copied
    statistics would pass on it. This one it cannot.

    Every 1-D floating-point parameter or buffer with a norm's name is changed, in whatever
    module holds it (biases of convolutions and linear layers too: harmless, and they help)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        named = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for name, tensor in named:
            if tensor is None or not tensor.is_floating_point() or tensor.dim() != 1:
                continue
            noise = torch.rand(tensor.shape, generator=g).to(tensor)
            if "var" in name:
                tensor.copy_(0.5 + noise)
            elif name in _AFFINE:
                tensor.add_(0.2 * (noise - 0.5))
    return model


def tiny_tsm(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """The small TSM(tiny_resnet) that tests and benchmarks share: random weights (seeded), eval mode."""
    import warnings

    from ..zoo import build

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build("fan_convert:tiny_resnet", temporal="tsm", num_classes=num_classes).eval()


def assert_same_at_every_key(fan: nn.Module, other: nn.Module, clip: torch.Tensor, keys) -> None:
    """``other`` computes exactly what ``fan`` computes at each key (and with T read from the clip)."""
    from ..context import frames

    for k in keys:
        with frames(k):
            assert torch.equal(other(clip), fan(clip)), f"differs at key {k}"
    assert torch.equal(other(clip), fan(clip)), "differs with T read from the clip"


@torch.no_grad()
def as_if_fine_tuned(fan: nn.Module, std: float = 0.05, seed: int = 0, *, statistics: float = 0.0) -> nn.Module:
    """Move every per-key parameter (norm copies, weight alterations) by Gaussian noise of
    ``std`` (in place; returns ``fan``), so that the keys differ from each other and from the
    original as they do after fine-tuning; ``statistics > 0`` also scales each per-key running
    variance by ``1 + statistics * U[0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    owners = per_key_state(fan)
    for name, p in fan.named_parameters():
        if name in owners:
            p.add_(std * torch.randn(p.shape, generator=g).to(p))
    if statistics:
        for name, b in fan.named_buffers():
            if name in owners and name.endswith("running_var"):
                b.mul_(1 + statistics * torch.rand(b.shape, generator=g).to(b))
    return fan


def per_key_state(fan: nn.Module) -> dict[str, int]:
    """State-dict name -> the frame count (key) it belongs to, for every per-key parameter and
    buffer of an adapted model (norm copies, weight alterations). Shared state is not listed."""
    from ..nn import NormBank, ResidualAlteration, WeightAlteration

    owners: dict[str, int] = {}
    for path, module in fan.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, NormBank):
            per_key = {k: module.norms[k].state_dict() for k in module.norms}
            owners |= {f"{prefix}norms.{k}.{n}": int(k) for k, state in per_key.items() for n in state}
        elif isinstance(module, WeightAlteration):
            owners |= {f"{prefix}scales.{k}": int(k) for k in module.scales}
        elif isinstance(module, ResidualAlteration):
            per_key = {k: module.adapters[k].state_dict() for k in module.adapters}
            owners |= {f"{prefix}adapters.{k}.{n}": int(k) for k, state in per_key.items() for n in state}
    return owners


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], *, fps: int = 10, codec: str = "libx264",
    pix_fmt: str | None = None, gop: int | None = None, b_frames: int | None = None,
) -> Path:
    """Encode RGB frames (``(H, W, 3)`` uint8 arrays, H and W even) as a video file with PyAV.

    ``pix_fmt`` defaults to ``yuv420p`` (``yuvj420p`` for ``mjpeg``); ``gop``: frames between key
    frames; ``b_frames``: the most B-frames in a row, for codecs that have them."""
    import av

    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"no frames to write to '{path}'; give at least one (H, W, 3) uint8 frame")
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else "yuv420p")
        if gop is not None:
            if codec == "libx264":
                stream.options = {"g": str(gop)}
            else:
                stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        for image in itertools.chain([first], frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
