"""Errors recalign raises on purpose.

`InputError` is bad usage or bad input: the CLI prints its one-paragraph message (which names the
file, the row and the column where they are known) and exits with code 2, without a traceback.
Anything else that escapes is a bug or an environment problem: exit code 1.
"""

from __future__ import annotations

from pathlib import Path


class RecalignError(Exception):
    """Base class of the errors recalign raises on purpose."""

    exit_code = 1


class InputError(RecalignError):
    """Bad usage or bad input (exit code 2).

    Args:
        message: what is wrong, in words a user can act on.
        path: the file concerned, if any.
        row: 1-based data row (header excluded) or line number, if known.
        column: the column name (or 1-based index) concerned, if known.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | int | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.row = row
        self.column = column
        self.detail = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
