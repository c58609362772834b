"""Errors shared by the importers, the quality layer and the assets.

A user who brings their own files must be told *where* the problem is, so every input error carries
the file, the row and the column it concerns, and its message names all three.
"""

from __future__ import annotations

from pathlib import Path


class MalformedInputError(ValueError):
    """An input file cannot be used as a whole (unreadable, garbled, missing or mistyped column).

    Row-level problems never raise this: such rows are quarantined. `row` is the 1-based data row
    (header excluded) or None when the problem concerns the whole file or a whole column.
    """

    def __init__(self, file: str | Path | None, row: int | None, column: str | None, message: str):
        self.file = str(file) if file is not None else None
        self.row = row
        self.column = column
        self.message = message
        super().__init__(file, row, column, message)

    def __str__(self) -> str:
        where = [f"file {self.file}" if self.file else "file <unknown>"]
        where.append(f"row {self.row}" if self.row is not None else "row -")
        where.append(f"column {self.column!r}" if self.column else "column -")
        return f"{', '.join(where)}: {self.message}"

    def __reduce__(self):  # keep pickling (multiprocess executors) working with 4 arguments
        return (type(self), (self.file, self.row, self.column, self.message))


class NotApplicableError(Exception):
    """A plugin cannot learn from this data at all, e.g. an uplift model on a log with no treated
    rows (most public CTR logs). Not a failure: the model's asset materializes as `skipped` and says
    why, instead of failing the run with a traceback the user can do nothing about."""
