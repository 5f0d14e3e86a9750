"""Terminal output shared by the command modules: messages on stderr, results on stdout, progress bars."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)  # notices, progress and errors: keeps stdout clean for results
out_console = Console()


def progress() -> Progress:
    """A progress bar with count, elapsed and remaining time, and a free-text field (throughput goes there)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)
