"""Where the commands print: results on stdout, notes, warnings and errors on stderr (so that `--json` keeps stdout's
last line one JSON value). Messages are escaped before printing: file names may contain brackets that rich would
otherwise read as markup."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def warn(note: str | None) -> None:
    if note:
        err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)


def print_notes(checkpoint) -> None:
    """What loading a checkpoint had to decide (e.g. options its weights imply), and where converted weights came
    from."""
    for line in checkpoint.notes:
        err_console.print(f"[yellow]note[/] {escape(line)}", highlight=False, soft_wrap=True)
    if checkpoint.source:  # converted from another file (a training run records its commit instead)
        err_console.print(f"[yellow]note[/] weights converted from {escape(checkpoint.source['file'])} "
                          f"({escape(checkpoint.source['layout'])})", highlight=False, soft_wrap=True)
