"""Progress of a training run: a live bar on a terminal, plain timed lines anywhere else.

When stdout is a log file or a pipe, a live bar cannot redraw, so it would show nothing until it
finishes. There the reporter prints one plain line after the first step, one every ``interval``
seconds while it runs (every 2 s at most in an epoch's first minute) and one when the epoch
ends, each with the real elapsed time; on a terminal the bar shows steps/total and the same
stats, and the epoch's line stays above it::

    epoch 1/10: 64/188 steps, 21 s, loss 2.101 acc@16 0.285, 48.7 clips/s
    epoch 1/10 done: 188 steps in 61 s, loss 1.874 acc@16 0.347, 49.2 clips/s

Example::

    with EpochProgress(enabled=True) as progress:
        for epoch in range(epochs):
            progress.start(f"epoch {epoch + 1}/{epochs}", total=len(loader))
            for batch in loader:
                ...
                progress.advance(f"loss {loss:.3f}")
            progress.finish()
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

__all__ = ["EpochProgress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``: an elapsed time as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


class EpochProgress:
    """Reports the steps of one epoch at a time.

    Args:
        enabled: ``False`` prints nothing.
        stream: where to write (default ``sys.stdout``); a live bar is drawn only when it is a terminal.
        interval: seconds between plain lines within an epoch (``0``: one line per step).
        live: force the live bar on or off (default: whether ``stream`` is a terminal).
    """

    def __init__(self, enabled: bool = True, *, stream: TextIO | None = None, interval: float = 10.0, live: bool | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.interval = float(interval)
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty()) if live is None else live
        self._bar = None
        self._task = None
        self.description, self.total, self.done, self.stats = "", 0, 0, ""
        self.started = self.last_line = 0.0

    def __enter__(self) -> "EpochProgress":
        if self.enabled and self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def start(self, description: str, total: int) -> None:
        """A new epoch (or any counted stage) of ``total`` steps begins."""
        self.description, self.total, self.done, self.stats = description, int(total), 0, ""
        self.started = self.last_line = time.perf_counter()
        if self._bar is not None:
            self._task = self._bar.add_task(description, total=total, stats="")

    def advance(self, stats: str | None = None, *, fresh: Callable[[], str] | None = None) -> None:
        """One step done; ``stats`` is shown beside the count (``None``: keep the last shown).
        ``fresh``: how to get up-to-date stats, called only when a line or a bar refresh is due
        (the first step, then every ``interval`` seconds: at most 2 s in an epoch's first minute)."""
        self.done += 1
        if stats is not None:
            self.stats = stats
        if not self.enabled:
            return
        now = time.perf_counter()
        due = self.done == 1 or now - self.last_line >= self._interval(now)
        if due:
            self.last_line = now
            if stats is None and fresh is not None:
                self.stats = fresh()
        if self._bar is not None:
            self._bar.update(self._task, advance=1, stats=self.stats)
            return
        if due and self.done < self.total:
            self._line(f"{self.description}: {self.done}/{self.total} steps, {format_seconds(now - self.started)}")

    def _interval(self, now: float) -> float:
        return min(self.interval, 2.0) if now - self.started < 60 else self.interval

    def finish(self, stats: str | None = None) -> float:
        """The epoch ended; prints its summary line (plain mode) and returns its seconds."""
        elapsed = time.perf_counter() - self.started
        if stats is not None:
            self.stats = stats
        if self.enabled:
            self._line(f"{self.description} done: {self.done} steps in {format_seconds(elapsed)}")
        return elapsed

    def _line(self, head: str) -> None:
        line = head + (f", {self.stats}" if self.stats else "")
        if self._bar is not None:  # above the live bars, which stay drawn below it
            self._bar.console.print(line, highlight=False, markup=False)
            return
        self.stream.write(line + "\n")
        self.stream.flush()
