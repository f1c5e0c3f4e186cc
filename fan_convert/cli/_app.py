"""Shared pieces of the ``fan-convert`` command line: the typer app, errors, argument parsing.

Nothing here imports torch: ``--help`` and ``--version`` answer at once, and each command says
what it is doing before the heavy imports start.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup

from .. import __version__
from ..errors import first_line

console = Console(soft_wrap=True)
_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, OSError)
_MULTI_VALUE = {"--frames", "-f", "--targets", "--exclude", "--allow-missing", "--allow-unexpected"}
_FRAME_FLAGS = {"--frames", "-f"}
_NUMBER = re.compile(r"-\d+")
_COMMA_LIST = re.compile(r"[^,\s]+(,[^,\s]*)+")


class _Plain:
    """Help without type tags on flags (``--force`` takes no value) and a usage line that reads
    ``CHECKPOINT`` where typer writes ``{checkpoint}``."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or param.name.upper()
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


class _Command(_Plain, TyperCommand):
    pass


class _Group(_Plain, TyperGroup):
    pass


class _App(typer.Typer):
    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(cls=_Group, add_completion=False, no_args_is_help=True, help="Turn pretrained video models into Frame Adaptive Networks.")


errors = Console(stderr=True, soft_wrap=True)


_PYTHON_HINT = re.compile(r" \((?:[a-z_]+=[^()]*)\)")  # " (overwrite=True)", " (allow_missing=/allow_unexpected=)"
# a Python argument, call or name, then its flag: "trust_factory=True (--trust-factory)",
# "device='cpu' (--device cpu)", "arch_kwargs={'temporal': 'tsm'} (--temporal tsm)", "Trainer.resume (--resume)",
# "arch_kwargs (--arch-kwarg)"
_PYTHON_FIRST = re.compile(
    r"(?:\b[a-z_]+=(?:'[^']*'|\{[^{}]*\}|\S+?)|\b[A-Za-z_]+\.[A-Za-z_.]+|\b[a-z]+_[a-z_]+) \((--[a-z-]+(?: [^()]*)?)\)")
_SAME_NAME = re.compile(r"\b([a-z]+) \(--\1\)")  # a Python argument and its flag of the same name: "arch (--arch)"


def cli_words(message: str) -> str:
    """A library message as the command line says it: CLI flags, not Python arguments."""
    return _PYTHON_HINT.sub("", _SAME_NAME.sub(r"--\1", _PYTHON_FIRST.sub(r"\1", message)))


def _fail(message: str) -> None:
    from rich.markup import escape

    message = cli_words(message)
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code=2)


@contextmanager
def step(message: str | None, *extra: type[BaseException], after: Callable[[], str] = str) -> Iterator[Callable[..., None]]:
    """Show ``message`` with a spinner while the block runs (on a terminal; it leaves no line
    behind) and turn the errors a user can fix into one ``error: <message><after()>`` line, exit
    code 2. Yields ``say(text, now=False)``, which changes the message; ``now=True``, piped, also
    prints it at once (once the step has run for a second): before a call that holds the GIL for
    a second or more (a C extension's import), which the 2-second lines would wait for.
    ``message=None``: no spinner (for steps that show their own progress)."""
    spinner = errors.status(message) if message is not None and errors.is_terminal else None
    if spinner is not None:
        spinner.start()
    plain = _Announcer(message) if message is not None and spinner is None else None  # piped: a line after 1 s
    try:
        try:
            yield (plain.update if plain is not None else (lambda text, now=False: spinner.update(text))
                   if spinner is not None else lambda text, now=False: None)
        finally:  # before an error line is printed, and after a step that ends
            if spinner is not None:
                spinner.stop()
            if plain is not None:
                plain.stop()
    except _ERRORS + extra as err:
        _fail(first_line(err, limit=None) + after())


class _Announcer:
    """Where no spinner can be drawn (a pipe, a log file): the step's message as a plain line on
    stderr once it has run for ``delay`` seconds, then the current message again every 2 s
    (after the last line) while it runs, with the elapsed time. A step that fails or ends sooner
    prints nothing, so a bad input stays one line."""

    def __init__(self, message: str, delay: float = 1.0, every: float = 2.0):
        import threading
        import time

        self.message, self.started, self.stopped = message, time.monotonic(), threading.Event()
        self.delay, self.every, self.due, self.first = delay, every, self.started + delay, True
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import time

        while not self.stopped.wait(max(0.0, self.due - time.monotonic())):
            with self.lock:
                if self.message is None:
                    return
                if time.monotonic() >= self.due:  # else a line printed meanwhile (update(now=True)) moved it on
                    self._print()

    def _print(self) -> None:
        import time

        now = time.monotonic()
        progress(self.message if self.first else f"{self.message} ({now - self.started:.0f} s)")
        self.due, self.first = now + self.every, False

    def update(self, message: str, now: bool = False) -> None:
        import time

        with self.lock:
            if self.message is None:
                return
            self.message = message
            if now and time.monotonic() - self.started >= self.delay:
                self._print()

    def stop(self) -> None:
        with self.lock:
            self.message = None
        self.stopped.set()


def progress(message: str) -> None:
    """One line of progress on stderr (stdout stays clean for --json)."""
    errors.print(message, style="dim", highlight=False)


def served_by(frames, keys) -> str:
    """One line for the frame counts that are not trained keys: which key serves each."""
    others = [t for t in frames if keys and t not in keys]
    if not others:
        return ""
    nearest = [min(keys, key=lambda k: (abs(k - t), -k)) for t in others]  # the nearest key, the higher on a tie
    pairs = ", ".join(f"{t} frames by key {k}" for t, k in zip(others, nearest, strict=True))
    return f"not a trained key (keys: {', '.join(map(str, keys))}); served by the nearest: {pairs}"


def _targets(values: List[str]):
    if values == ["none"]:
        return None
    if len(values) == 1 and values[0] in ("default", "paper"):
        return values[0]
    return values


def _arch_kwargs(num_classes: Optional[int], temporal: Optional[str], pairs: Optional[List[str]]) -> dict:
    kwargs: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arch-kwarg expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if temporal is not None:
        kwargs["temporal"] = temporal
    return kwargs


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        console.print(f"fan-convert {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


def _expand_multi_values(args: list[str]) -> list[str]:
    """Let list options take several values after one flag (``--frames 4 8 16``); a negative
    number after ``--frames`` is a (bad) frame count, not an option."""
    expanded, flag = [], None
    for arg in args:
        if flag in _FRAME_FLAGS and _COMMA_LIST.fullmatch(arg):
            _fail(f"--frames takes frame counts separated by spaces: --frames {' '.join(arg.replace(',', ' ').split())} (not {arg})")
        if arg.startswith("-") and not (flag in _FRAME_FLAGS and _NUMBER.fullmatch(arg)):
            flag = arg if arg in _MULTI_VALUE else None
            expanded.append(arg)
        elif flag and expanded[-1] != flag:
            expanded += [flag, arg]
        else:
            expanded.append(arg)
    return expanded


def cli_args(argv: List[str]) -> List[str]:
    """``fan-convert CHECKPOINT ...`` means ``fan-convert convert CHECKPOINT ...``; list options
    take several values after one flag."""
    args = list(argv)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    if args and not args[0].startswith("-") and args[0] not in commands:
        args.insert(0, "convert")
    return _expand_multi_values(args)


def main(argv: Optional[List[str]] = None) -> None:
    try:
        args = cli_args(sys.argv[1:] if argv is None else argv)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    app(args=args, prog_name="fan-convert")
