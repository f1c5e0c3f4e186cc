import warnings
from pathlib import Path

import numpy as np
import torch

from fan_convert.testing import randomize_norms, write_video

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(2)

__all__ = ["encode", "randomize_norms"]  # test modules import these from conftest


def encode(path: Path, n: int, size=(48, 64), seed=0):
    """An H.264 clip whose frame i has brightness 8*i (so frames can be told apart)."""
    h, w = size
    return write_video(path, (np.full((h, w, 3), 8 * i % 256, np.uint8) for i in range(n)), fps=10)
