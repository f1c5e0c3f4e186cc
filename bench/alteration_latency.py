"""Where should a 1x1 weight alteration be computed? Activation side vs weight side.

The FAN paper's adapter is ``conv(x + dwconv1x1(x))``; fan-convert computes the same value as
``conv`` with ``W * (1 + s)``. This prints CPU latency of timm ResNet-50 (frames folded into
the batch) with the alteration at each bottleneck's conv1 (the paper's placement), in four
forms, measured in interleaved rounds in one process, and checks all forms agree.

    python bench/alteration_latency.py [--rounds 20] [--threads 2] [--frames 16] [--size 112]
"""

import argparse
import copy
import statistics
from functools import partial

import timm
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import fan_convert
from fan_convert.deploy.cost import interleaved_ms
from fan_convert.nn import WeightAlteration
from fan_convert.testing import as_if_fine_tuned, randomize_norms


class DepthwiseResidual(nn.Module):
    """The official form: conv(x + dwconv1x1(x))."""

    def __init__(self, altered: WeightAlteration, key: int):
        super().__init__()
        self.conv = altered.base_layer
        c = self.conv.in_channels
        self.dw = nn.Conv2d(c, c, 1, groups=c, bias=False)
        with torch.no_grad():
            self.dw.weight.copy_(altered.scales[str(key)].view(c, 1, 1, 1))

    def forward(self, x):
        return self.conv(x + self.dw(x))


class BroadcastScale(nn.Module):
    """conv(x * (1 + s)): the same value as a broadcast multiply on activations."""

    def __init__(self, altered: WeightAlteration, key: int):
        super().__init__()
        self.conv = altered.base_layer
        self.factor = nn.Parameter((1 + altered.scales[str(key)].detach()).view(1, -1, 1, 1))

    def forward(self, x):
        return self.conv(x * self.factor)


def swap(fan: nn.Module, form, key: int) -> nn.Module:
    model = copy.deepcopy(fan)
    for path, module in list(model.named_modules()):
        if isinstance(module, WeightAlteration):
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, form(module, key))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # timm zero-initialises each block's last BN scale: randomise them so that every branch counts
    original = randomize_norms(timm.create_model("resnet50")).eval()
    fan = as_if_fine_tuned(fan_convert.adapt(original, frames=(4, 8, 16), targets="paper", norms=False), std=0.1).eval()
    key = 16
    forms = {
        "original (no alteration)": original,
        "activation side: x + dwconv1x1(x)": swap(fan, DepthwiseResidual, key),
        "activation side: x * (1 + s)": swap(fan, BroadcastScale, key),
        "weight side: W * (1 + s) (fan-convert)": fan,
    }
    x = torch.randn(args.frames, 3, args.size, args.size)
    with torch.no_grad(), fan_convert.frames(key):
        outputs = {name: model(x) for name, model in forms.items()}  # warm-up and agreement
        times = interleaved_ms({name: partial(model, x) for name, model in forms.items()}, rounds=args.rounds, warmup=0)

    reference = outputs["weight side: W * (1 + s) (fan-convert)"]
    base = statistics.median(times["original (no alteration)"])
    table = Table(title=f"ResNet-50, {args.frames}x3x{args.size}x{args.size}, {args.threads} threads, {args.rounds} interleaved rounds")
    for column in ("form", "median ms", "vs original", "max |diff| vs weight side"):
        table.add_column(column, justify="left" if column == "form" else "right")
    for name in forms:
        median = statistics.median(times[name])
        diff = "-" if name.startswith("original") else f"{(outputs[name] - reference).abs().max().item():.1e}"
        table.add_row(name, f"{median:.1f}", f"{100 * (median / base - 1):+.1f}%", diff)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
