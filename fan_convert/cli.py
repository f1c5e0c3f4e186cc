"""The ``fan-convert`` command line."""

from __future__ import annotations

import sys
import warnings
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Turn pretrained video models into Frame Adaptive Networks.")
console = Console()


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from . import __version__

        console.print(f"fan-convert {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


@app.command()
def inspect(
    arch: str = typer.Argument("timm:resnet50", help="Architecture spec, e.g. timm:resnet50 or torchvision:r3d_18."),
    frames: List[int] = typer.Option([4, 8, 16], "--frames", "-f", help="Frame counts to specialise for."),
    targets: List[str] = typer.Option(["default"], "--targets", help="'default', 'paper', 'none' or module-name patterns."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Module-name patterns to leave untouched."),
    kernel_size: int = typer.Option(1, "--kernel-size", help="Alteration kernel (1 is foldable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    all_sites: bool = typer.Option(False, "--all", help="List every site, not only the converted ones."),
) -> None:
    """Dry run: show what converting ARCH would do, per site, with totals."""
    from .surgery import plan
    from .zoo import build

    chosen = None if targets == ["none"] else targets[0] if len(targets) == 1 and targets[0] in ("default", "paper") else targets
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(arch)
        conversion = plan(model, frames, targets=chosen, exclude=exclude, kernel_size=kernel_size)
    except ValueError as err:
        _fail(str(err))
    if as_json:
        sys.stdout.write(conversion.to_json(indent=2) + "\n")
        return
    console.print(conversion.table(status=None if all_sites else "converted"))
    console.print(str(conversion), highlight=False)


def main() -> None:
    app()
