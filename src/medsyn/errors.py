"""Errors that the CLI turns into one line and exit status 2 (never a traceback)."""
from __future__ import annotations

from pathlib import Path


class MedsynError(Exception):
    """Base class for every user-facing error: bad input, bad config, bad run folder."""

    exit_code = 2


class DataError(MedsynError):
    """A data source cannot be read: names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(MedsynError):
    """A configuration key or value is wrong."""


class RunError(MedsynError):
    """A run folder is missing, incomplete, or incompatible with the request."""


class DivergenceError(MedsynError):
    """Training produced a NaN or inf loss; the last good checkpoint is kept."""


class WriteError(MedsynError):
    """A file or folder could not be written (disk full, permission, read-only): names the path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: cannot write ({problem})")
