import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm non-trivial statistics and affine parameters, so a wrong copy would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if tensor is None or not tensor.is_floating_point() or tensor.dim() != 1:
                    continue
                noise = torch.rand(tensor.shape, generator=g)
                if "var" in name:
                    tensor.copy_(0.5 + noise)
                elif name in ("weight", "gamma", "running_mean", "bias", "beta"):
                    tensor.add_(0.2 * (noise - 0.5))
    return model


@pytest.fixture
def seeded():
    torch.manual_seed(0)


def encode(path: Path, n: int, size=(48, 64), seed=0):
    """An H.264 clip whose frame i has brightness 8*i (so frames can be told apart)."""
    h, w = size
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for i in range(n):
        img = np.full((h, w, 3), 8 * i % 256, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path
