"""Running means of a training step's loss parts and accuracies, kept on the device.

Adding a step's values launches a few tiny kernels and never waits for the GPU; the values come
back to the host only when asked for, all in one transfer.
"""

from __future__ import annotations

import torch


class RunningMeans:
    """Per-name means over the steps that reported the name.

    Example::

        means = RunningMeans()
        means.add({"loss": torch.tensor(0.7), "acc@8": torch.tensor(0.5)})
        means.read()   # {"loss": 0.7, "acc@8": 0.5}: one host transfer
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.unread = 0
        self._last: dict[str, float] = {}

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.counts[name] = self.counts.get(name, 0) + 1
        self.unread += 1

    def read(self) -> dict[str, float]:
        """The current means as floats (one read-back, none if nothing was added since the last)."""
        if self.unread or not self._last:
            names = list(self.sums)
            totals = torch.stack([self.sums[n] for n in names]).tolist() if names else []
            self._last = {n: total / self.counts[n] for n, total in zip(names, totals, strict=True)}
            self.unread = 0
        return dict(self._last)

    def summary(self) -> str:
        return " ".join(f"{name} {value:.3f}" for name, value in self.read().items() if name.startswith(("loss", "acc")))
