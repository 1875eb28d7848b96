"""The project's own error types.

Every error a user can cause (bad scenario, bad device record, unknown key, unreadable trace)
is a :class:`StoragecarbonError` whose message is one line and names the file, the line where
known, and the field. The CLI prints it and exits with ``exit_code``; no traceback.
"""

from __future__ import annotations


class StoragecarbonError(Exception):
    """A user-facing error with a one-line message and an exit code."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:  # keep messages on one line
        return " ".join(str(self.args[0]).split("\n")) if self.args else ""


class ValidationError(StoragecarbonError):
    """A data file (scenario, device record, grid, sweep) does not match its schema."""

    def __init__(self, file: str, line: int | None, field: str, problem: str) -> None:
        loc = f"{file}:{line}" if line is not None else file
        super().__init__(f"{loc}: {field}: {problem}")
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem


class UnknownKeyError(StoragecarbonError):
    """A device, region or preset key that does not exist (lookups are exact, never fuzzy)."""


class TraceError(StoragecarbonError):
    """A trace file that cannot be read (wrong magic, other format version, corrupt)."""


class EngineError(StoragecarbonError):
    """A serving engine failed or is not available on this machine."""

    exit_code = 3


class TraceWriteError(TraceError):
    """Writing a trace failed (disk full, file too large, IO error): recording stopped there.

    What was written before the failure stays readable (the file reads as truncated)."""

    exit_code = 4
