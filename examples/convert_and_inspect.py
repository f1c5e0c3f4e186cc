"""Convert a 3D video model into a Frame Adaptive Network, look at what changed, and use it.

Runs on CPU in a few seconds with random weights:  python examples/convert_and_inspect.py
"""

import torch
import torchvision
from rich.console import Console

import fan_convert
from fan_convert.testing import count_parameters

torch.manual_seed(0)
console = Console()

# 1. Any pretrained video model; here torchvision's R3D-18 with random weights.
model = torchvision.models.video.r3d_18(num_classes=10).eval()

# 2. Convert: one norm bank per normalisation layer, a zero-initialised weight alteration on
#    the first convolution of every residual block (the FAN paper's placement).
fan = fan_convert.adapt(model, frames=(4, 8, 16), targets="paper").eval()
console.print(fan.fan_plan.table(status="converted"))
print(fan.fan_plan)

# 3. Before fine-tuning the converted model computes exactly what the original computes.
clip = torch.randn(2, 3, 8, 112, 112)
with torch.no_grad():
    print("max |difference| at 8 frames:", (fan(clip) - model(clip)).abs().max().item())

    # 4. The frame count is read from the clip, or chosen explicitly; untrained counts use the
    #    nearest trained key (ties go to the higher one).
    for t in (4, 6, 12):
        out = fan(torch.randn(1, 3, t, 112, 112))
        print(f"T={t:2d} -> sub-network {fan_convert.nearest_key(t, (4, 8, 16))}, logits {tuple(out.shape)}")
    with fan_convert.frames(4):
        fan(clip)  # an 8-frame clip through the 4-frame sub-network

    # 5. Specialise: the plain R3D-18 for one frame count, alterations folded into the weights.
    plain4 = fan_convert.specialize(fan, frames=4)
    print(f"specialised model is a {type(plain4).__name__} with {count_parameters(plain4):,} parameters "
          f"(original: {fan.fan_plan.params_before:,}, adapted: {fan.fan_plan.params_after:,})")
