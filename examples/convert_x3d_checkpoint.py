"""Convert a pytorchvideo X3D checkpoint saved the way training scripts save it.

Training scripts rarely save a bare state dict: pytorchvideo/SlowFast write
{"model_state": ..., "optimizer_state": ..., "epoch": ...}, often with DDP's "module." prefix.
fan-convert unwraps that, loads it strictly, converts, and writes one .safetensors file that
rebuilds the model by itself.   python examples/convert_x3d_checkpoint.py
"""

import tempfile
from pathlib import Path

import torch
from pytorchvideo.models import hub

import fan_convert

work = Path(tempfile.mkdtemp(prefix="fan-x3d-"))
torch.manual_seed(0)

# 1. A "pretrained" X3D-XS (random weights here), saved like a training script does.
pretrained = hub.x3d_xs(pretrained=False).eval()
state = {f"module.{k}": v for k, v in pretrained.state_dict().items()}
torch.save({"model_state": state, "optimizer_state": {}, "epoch": 300}, work / "x3d_xs.pyth")

# 2. One call: read it safely (weights_only, no code runs), load it strictly into the
#    architecture, and convert. X3D-XS is trained on 4-frame clips, so train keys 4/8/16 with
#    trained_at=4; an example clip lets the converter confirm the head pool sized to 4 frames.
clip = torch.randn(1, 3, 4, 160, 160)
fan = fan_convert.from_checkpoint(work / "x3d_xs.pyth", "pytorchvideo:x3d_xs", frames=(4, 8, 16),
                                  trained_at=4, example_input=clip)
print("checkpoint:", "; ".join(fan.fan_source["notes"]))
print(fan.fan_plan)
for site in fan.fan_plan.select("fixed_t"):
    print(f"fixed-T site: {site.path} ({site.original} -> {site.becomes})")

# 3. Save one file; load rebuilds the architecture from the manifest and replays the plan.
path = fan_convert.save(fan, work / "x3d_xs.fan.safetensors")
back = fan_convert.load(path)
with torch.no_grad():
    print("max |difference| after reload at 4 frames:", (back(clip) - fan.eval()(clip)).abs().max().item())
    print("runs at 16 frames:", tuple(back(torch.randn(1, 3, 16, 160, 160)).shape))
print("manifest:", {k: v for k, v in fan_convert.read_manifest(path).items() if k in ("arch", "frames", "trained_at", "source")})
