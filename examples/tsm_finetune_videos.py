"""TSM on a timm ResNet: train at 16 frames, see the Temporal Deviation, convert, fine-tune with
mutual distillation on a folder of videos, and compare before/after.

The script writes its own small video folder with PyAV (squares moving left or right, so a
single frame cannot tell the class). About a minute on 2 CPU cores. With so few clips the
accuracies are noisy: the point is the journey on real video files; `fan-convert demo` shows the
effect on the built-in benchmark.
    python examples/tsm_finetune_videos.py
"""

import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import fan_convert
from fan_convert.data import MultiViewClips, video_folder
from fan_convert.testing import write_video
from fan_convert.train.evaluate import deviation_table, evaluate, plot_results
from fan_convert.train.trainer import TrainConfig, Trainer

work = Path(tempfile.mkdtemp(prefix="fan-tsm-"))
rng = np.random.default_rng(0)
torch.manual_seed(0)


def moving_square(direction: int, frames: int = 32, size: int = 40):
    """Frames of a bright square moving left (-1) or right (+1) over noise."""
    y, speed = rng.integers(4, size - 14), rng.uniform(0.7, 0.9)
    start = 2 if direction > 0 else size - 12
    for i in range(frames):
        img = (rng.random((size, size, 3)) * 40).astype(np.uint8)
        left = int(start + direction * speed * i)
        img[y : y + 10, left : left + 10] = 230
        yield img


# 1. A folder of videos per class: root/<class>/<video>.mp4
for split, count in (("train", 16), ("val", 8)):
    for name, direction in (("left", -1), ("right", 1)):
        (work / split / name).mkdir(parents=True)
        for i in range(count):
            write_video(work / split / name / f"{i}.mp4", moving_square(direction), fps=15)
train_items, classes = video_folder(work / "train")
val_items, _ = video_folder(work / "val")
eval_frames = (2, 4, 6, 8, 12, 16)
val = MultiViewClips(val_items, eval_frames, train=False, crop_size=32, resize=32)

# 2. The "pretrained" model: a TSM ResNet-18 trained at 16 frames only.
model = fan_convert.build("timm:resnet18", temporal="tsm", num_classes=len(classes))
Trainer(model, MultiViewClips(train_items, (16,), train=True, crop_size=32, resize=32, scale=(0.8, 1.0)),
        TrainConfig(frames=(16,), epochs=6, batch_size=8, optimizer="adamw", lr=3e-3, progress=False)).fit()
before = evaluate(model, val, eval_frames)

# 3. Convert and fine-tune with mutual distillation on 4/8/16-frame views of the same clips.
fan = fan_convert.adapt(model, frames=(4, 8, 16))
Trainer(fan, MultiViewClips(train_items, train=True, crop_size=32, resize=32, scale=(0.8, 1.0)),  # views at fan's keys
        TrainConfig(epochs=2, batch_size=8, lr=0.005, progress=False)).fit()
after = evaluate(fan, val, eval_frames)

# 4. The Temporal Deviation table, before and after (untrained counts use the nearest key).
results = {"TSM trained at 16": before, "FAN (4/8/16)": after}
Console().print(deviation_table(results, keys=(4, 8, 16)))
try:
    print("plot:", plot_results(results, work / "deviation.png", keys=(4, 8, 16)))
except ImportError as err:
    print(f"no plot: {err}")
print("saved:", fan_convert.save(fan, work / "tsm_r18.fan.safetensors"))
