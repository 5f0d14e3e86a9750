"""Terminal output shared by the command modules: messages on stderr, results on stdout, progress bars."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# The classic-augmentation presets, for --help texts (importing medsyn.augment would load torch just
# to print help); tests/test_cli.py checks this against the registry.
PRESET_NAMES = "liver-lesion | brain-mri | upright | retina | pggan-crop"

# emoji=False: a spec such as "x.npz:train: ..." would otherwise print as "x.npz🚋 ..."
console = Console(stderr=True, soft_wrap=True, emoji=False)  # notices, progress and errors: stdout stays for results
# soft_wrap: a line is never broken at the terminal width, so a log file or grep gets it whole
out_console = Console(soft_wrap=True, emoji=False)


def say(notices) -> None:
    """Print a reader's or a command's notes: "warning: ..." ones in red, the rest as notices."""
    for text in notices:
        if text.startswith("warning: "):
            console.print(f"[red]warning:[/] {text[len('warning: '):]}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[yellow]notice:[/] {text}", highlight=False, soft_wrap=True)


LOG_EVERY_SECONDS = 30.0


def progress() -> Progress:
    """A progress bar with count, elapsed and remaining time, and a free-text field (throughput goes there).

    When stderr is not a terminal (nohup, SLURM, CI logs) a live bar would reach the log only at exit,
    so the same calls write a plain line per task every LOG_EVERY_SECONDS and when it finishes.
    """
    if not console.is_terminal:
        return LogProgress(console=console)
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, transient=False)


class LogProgress(Progress):
    """rich's Progress API without the live display: ``update`` writes timed plain lines instead."""

    def __init__(self, console: Console, every: float = LOG_EVERY_SECONDS):
        super().__init__(console=console, disable=True)
        self.every, self._logged_at, self._finished = every, {}, set()

    def update(self, task_id, **changes) -> None:
        super().update(task_id, **changes)
        task = self._tasks[task_id]
        if not task.visible or task_id in self._finished:
            return
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if finished:
            self._finished.add(task_id)
        elif now - self._logged_at.setdefault(task_id, now) < self.every:
            return
        self._logged_at[task_id] = now
        self.console.print(self.line(task), highlight=False)

    def advance(self, task_id, advance: float = 1) -> None:
        self.update(task_id, completed=self._tasks[task_id].completed + advance)

    @staticmethod
    def line(task) -> str:
        count = f"{task.completed:,.0f}/{task.total:,.0f}" if task.total is not None else f"{task.completed:,.0f}"
        elapsed = time.strftime("%H:%M:%S", time.gmtime(task.elapsed or 0))
        info = task.fields.get("info", "")
        return f"{task.description}: {count} elapsed {elapsed}" + (f" {info}" if info else "")
