"""The problems of an upload's rows, collected so that one refusal lists them all, each with its row and column."""

from __future__ import annotations

from typing import Any

from errors import ApiError
from intake.csv_records import MAX_DETAILS

_QUOTE_LENGTH = 100


def too_many_rows(row: int, count: int, max_rows: int) -> ApiError:
    """The refusal of a file whose ``count``-th product row, on line ``row``, is past ``max_rows``."""
    return ApiError(
        422,
        "csv_too_many_rows",
        f"The CSV has more than {max_rows} product rows; the limit is {max_rows}.",
        [{"row": row, "message": f"product row {count} is over the limit of {max_rows}"}],
    )


class Problems:
    """Collects per-row problems, keeping the first MAX_DETAILS and counting the rest."""

    def __init__(self) -> None:
        self.details: list[dict[str, Any]] = []
        self.total = 0
        self.all_blocked = True

    def add(self, row: int, message: str, column: str | None = None, blocked: bool = False) -> None:
        self.total += 1
        self.all_blocked = self.all_blocked and blocked
        if len(self.details) < MAX_DETAILS:
            detail: dict[str, Any] = {"row": row}
            if column is not None:
                detail["column"] = column
            detail["message"] = message
            self.details.append(detail)

    def error(self) -> ApiError:
        listed = "" if self.total <= MAX_DETAILS else f" (the first {MAX_DETAILS} are listed)"
        if self.all_blocked:
            noun = "image URL points" if self.total == 1 else "image URLs point"
            message = f"In the CSV, {self.total} {noun} to an address that is not allowed{listed}; nothing was saved."
            return ApiError(422, "blocked_address", message, self.details)
        noun = "problem" if self.total == 1 else "problems"
        message = f"The CSV has {self.total} {noun}{listed}; nothing was saved. Fix them and upload it again."
        return ApiError(422, "csv_invalid_rows", message, self.details)


def quoted(value: str) -> str:
    """``value`` as a message quotes it: repr'd, cut at 100 characters."""
    if len(value) <= _QUOTE_LENGTH:
        return repr(value)
    return repr(value[:_QUOTE_LENGTH]) + "…"
