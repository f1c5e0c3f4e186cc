"""Edge deployment: keep one FAN file, materialise the plain model for the frame count the
device can afford, export it, and pick that frame count from a latency budget.

    python examples/edge_deployment.py
"""

import tempfile
from pathlib import Path

import torch
from rich.console import Console

import fan_convert
from fan_convert.deploy import choose_frames, export_verified
from fan_convert.testing import count_parameters

work = Path(tempfile.mkdtemp(prefix="fan-edge-"))
console = Console()
torch.manual_seed(0)

# One FAN file (here converted from a randomly initialised R3D-18; yours comes from training).
fan = fan_convert.adapt(fan_convert.build("torchvision:r3d_18", num_classes=10), frames=(4, 8, 16))
fan_file = fan_convert.save(fan, work / "r3d.fan.safetensors")
print(f"one FAN file: {fan_file.stat().st_size / 1e6:.1f} MB for frame counts 4, 8 and 16")

# 1. Specialise: the original architecture for one frame count, alterations folded in.
for t in (4, 16):
    path = fan_convert.save_specialized(fan, t, work / f"r3d_plain{t}.safetensors")
    plain = fan_convert.load(path)
    print(f"specialized for {t:2d} frames: {type(plain).__name__}, {count_parameters(plain):,} parameters")

# 2. Export the specialized model with torch.export; the artifact is reloaded and checked.
for t in (4, 16):
    result = export_verified(fan, t, work / f"r3d_{t}.pt2", input_size=64)
    print(f"exported {result.path.name}: {result.bytes / 1e6:.1f} MB, max |diff| vs FAN {result.max_diff:.1e}")

# 3. Choose T for a budget: measure each frame count's specialized model on this machine and
#    take the largest that fits (with an accuracy table from `fan-convert eval`, the most accurate).
measured = [row.latency_ms for row in choose_frames(fan, 1e9, size=64, repeats=3, warmup=1).rows]
budget = (min(measured) + max(measured)) / 2  # a budget that the cheapest frame count meets
result = choose_frames(fan, budget, size=64, repeats=3, warmup=1)
for row in result.rows:
    latency = "not measured (a smaller T was already too slow)" if row.latency_ms is None else f"{row.latency_ms:7.1f} ms"
    console.print(f"T={row.t:2d}: {latency} {'fits' if row.fits else 'too slow'}", highlight=False)
print(f"budget {budget:.1f} ms -> run at {result.chosen} frames")
