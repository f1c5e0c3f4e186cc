"""The conversion plan: every site the converter looked at, what it became and what it cost."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

CONVERTED, SKIPPED, UNSUPPORTED = "converted", "skipped", "unsupported"
NORM, ALTERATION, FIXED_T = "norm", "alteration", "fixed_t"


@dataclass
class Site:
    """One module the converter acted on or deliberately left alone."""

    path: str
    kind: str  # "norm", "alteration" or "fixed_t"
    original: str  # class name of the module found there
    becomes: str  # class name it became, "" when left alone
    status: str  # CONVERTED, SKIPPED or UNSUPPORTED
    params_added: int = 0
    reason: str = ""
    rule: str = ""  # the rule table entry that decided it ("" in plans written before rules had names)


@dataclass
class ConversionPlan:
    """What :func:`fan_convert.adapt` did (or, from :func:`fan_convert.plan`, would do).

    ``print(plan)`` gives a one-paragraph summary, ``plan.table()`` a rich table per site,
    ``plan.to_dict()`` / ``ConversionPlan.from_dict`` a JSON-ready round trip.

    Example::

        conversion = fan_convert.plan(model, frames=(4, 8, 16))
        rich.print(conversion.table(status="unsupported"))   # one row per site left alone
        restored = ConversionPlan.from_dict(json.loads(conversion.to_json()))
    """

    frames: tuple[int, ...]
    trained_at: int
    targets: Any
    kernel_size: int
    frame_axis: int
    analysis: str
    params_before: int
    sites: list[Site] = field(default_factory=list)
    trace_failures: dict[str, str] = field(default_factory=dict)
    exclude: Any = None
    norms: bool = True

    def select(self, kind: str | None = None, status: str | None = CONVERTED) -> list[Site]:
        return [s for s in self.sites if (kind is None or s.kind == kind) and (status is None or s.status == status)]

    @property
    def params_added(self) -> int:
        return sum(s.params_added for s in self.select())

    @property
    def params_after(self) -> int:
        return self.params_before + self.params_added

    @property
    def overhead(self) -> float:
        """Added parameters as a fraction of the original count."""
        return self.params_added / max(self.params_before, 1)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frames"] = list(self.frames)
        return data

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> "ConversionPlan":
        data = dict(data)
        data["frames"] = tuple(data["frames"])
        data["sites"] = [Site(**s) for s in data.get("sites", [])]
        return cls(**data)

    def __str__(self) -> str:
        norms, alterations = self.select("norm"), self.select("alteration")
        lines = [
            f"FAN conversion at frames {list(self.frames)} (trained at {self.trained_at}; analysis: {self.analysis})",
            f"  {len(norms)} norms specialised, {len(alterations)} weight alterations, "
            f"{len(self.select('fixed_t'))} fixed-T sites rewritten",
            f"  parameters {self.params_before:,} -> {self.params_after:,} (+{self.params_added:,}, +{100 * self.overhead:.2f}%)",
        ]
        for site in self.select(status=UNSUPPORTED):
            lines.append(f"  unsupported: {site.path} ({site.original}): {site.reason}")
        if self.trace_failures:
            first = next(iter(self.trace_failures.items()))
            lines.append(f"  not traced by torch.fx: {len(self.trace_failures)} module(s), e.g. '{first[0] or '<root>'}': {first[1]}")
        return "\n".join(lines)

    def table(self, status: str | None = None):
        """A rich Table with one row per site (all sites, or only those with ``status``)."""
        from rich.table import Table

        table = Table(title=f"FAN conversion plan — frames {list(self.frames)}, analysis: {self.analysis}")
        table.add_column("module", overflow="fold", min_width=16)
        table.add_column("kind")
        table.add_column("change", overflow="fold")
        if status is None:
            table.add_column("status")
        table.add_column("+params", justify="right", no_wrap=True)
        table.add_column("note", overflow="fold")
        for s in self.sites if status is None else self.select(status=status):
            change = f"{s.original} → {s.becomes}" if s.becomes else s.original
            row = [s.path or "<model>", s.kind, change] + ([s.status] if status is None else [])
            table.add_row(*row, f"{s.params_added:,}", s.reason)
        table.caption = f"params {self.params_before:,} -> {self.params_after:,} (+{100 * self.overhead:.2f}%)"
        return table
