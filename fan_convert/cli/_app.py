"""Shared pieces of the ``fan-convert`` command line: the typer app, errors, option parsing."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn pretrained video models into Frame Adaptive Networks.")
console = Console(soft_wrap=True)

_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, OSError)
_MULTI_VALUE = {"--frames", "-f", "--targets", "--exclude", "--allow-missing", "--allow-unexpected"}


def _fail(message: str) -> None:
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def _targets(values: List[str]):
    if values == ["none"]:
        return None
    if len(values) == 1 and values[0] in ("default", "paper"):
        return values[0]
    return values


def _arch_kwargs(num_classes: Optional[int], temporal: Optional[str], pairs: Optional[List[str]], spec: str) -> dict:
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
        from .. import __version__

        console.print(f"fan-convert {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())



def _expand_multi_values(args: list[str]) -> list[str]:
    """Let list options take several values after one flag (``--frames 4 8 16``)."""
    expanded, flag = [], None
    for arg in args:
        if arg.startswith("-"):
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
    app(args=cli_args(sys.argv[1:] if argv is None else argv), prog_name="fan-convert")
