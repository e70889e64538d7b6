"""The grammar of the upload CSV: its decoding, the characters it may hold, and its records as written.

The output CSV is built from these records, so what reads them (``split_record``, ``cell_value``,
``column_index``) serves both.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
from collections.abc import Iterator
from typing import Any

from errors import ApiError
from intake.uploaded_file import not_text_message

MAX_DETAILS = 100

# C0 controls but tab, LF and CR; DEL; C1 controls.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_LINE_END_RE = re.compile(r"(\r\n|\r|\n)\Z")
_NOT_ALNUM_RE = re.compile(r"[^a-z0-9]")

_field_limit_lock = threading.Lock()


def split_record(record: str, delimiter: str = ",") -> list[str]:
    """The cells of one record csv_input accepted, each as written (quotes and all): joined by
    ``delimiter`` they are the record again.

    Only for accepted records: the reader ran with ``strict``, so a quoted cell's closing quote is
    followed by the delimiter or the end, and a quote inside an unquoted cell is an ordinary character.
    """
    cells: list[str] = []
    start = 0
    while True:
        if record.startswith('"', start):
            end = start + 1
            while True:
                end = record.index('"', end) + 1
                if not record.startswith('"', end):
                    break
                end += 1
        else:
            end = record.find(delimiter, start)
            if end < 0:
                end = len(record)
        cells.append(record[start:end])
        if end >= len(record):
            return cells
        start = end + 1


def cell_value(written: str) -> str:
    """What one cell of ``split_record`` holds."""
    if written.startswith('"'):
        return written[1:-1].replace('""', '"')
    return written


def column_index(header_record: str, name: str, delimiter: str = ",") -> int | None:
    """Where the header names the column ``name`` (matched as the required columns are), if it does."""
    key = column_key(name)
    for index, written in enumerate(split_record(header_record, delimiter)):
        if column_key(cell_value(written)) == key:
            return index
    return None


def column_key(header_cell: str) -> str:
    """What a header cell is matched by: its letters and digits, lowercased."""
    return _NOT_ALNUM_RE.sub("", header_cell.lower())


def decode_text(data: bytes) -> str:
    """The upload as UTF-8 text without its BOM; raises ``csv_not_utf8`` naming the row of the first bad byte."""
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = body[: exc.start].decode("utf-8", errors="replace")
        row = len(_LINE_BREAK_RE.findall(prefix)) + 1
        bad = body[exc.start : exc.start + 1].hex().upper()
        message = not_text_message(body) or (
            f"The CSV is not UTF-8 text (the first bad byte is on row {row}). "
            "Save it as 'CSV UTF-8' and upload it again."
        )
        raise ApiError(
            400,
            "csv_not_utf8",
            message,
            [{"row": row, "message": f"byte 0x{bad} is not valid UTF-8"}],
        ) from None


def check_characters(text: str) -> None:
    """Raise ``csv_invalid_characters`` for the lines that hold a control character other than a line break or tab."""
    if _CONTROL_RE.search(text) is None:
        return
    details: list[dict[str, Any]] = []
    total = 0
    for line_number, line in enumerate(io.StringIO(text, newline=""), start=1):
        match = _CONTROL_RE.search(line)
        if match is None:
            continue
        total += 1
        if len(details) < MAX_DETAILS:
            code = f"U+{ord(match.group()):04X}"
            details.append({"row": line_number, "message": f"line contains the control character {code}"})
    lines = "line" if total == 1 else "lines"
    listed = "" if total <= MAX_DETAILS else f" (the first {MAX_DETAILS} are listed)"
    raise ApiError(
        400,
        "csv_invalid_characters",
        f"The CSV contains NUL or other control characters on {total} {lines}{listed}; it may not be a text file.",
        details,
    )


def ensure_field_size_limit(size: int) -> None:
    """Let the csv module read a cell of ``size`` characters."""
    # The csv module caps a cell at 128 KiB by default, process-wide; a longer cell
    # (say a huge product name) must reach the per-row checks rather than fail parsing.
    with _field_limit_lock:
        if csv.field_size_limit() < size:
            csv.field_size_limit(size)


class RecordedLines:
    """The lines of ``text`` (CRLF, LF or CR ended) for csv.reader, each kept until ``take``.

    The reader asks for a line only when the record it is reading goes on, so what it took for one
    record is exactly that record as written, a quoted cell's line breaks included.
    """

    def __init__(self, text: str) -> None:
        self._lines = io.StringIO(text, newline="")
        self._taken: list[str] = []

    def __iter__(self) -> RecordedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._taken.append(line)
        return line

    def take(self) -> str:
        text = "".join(self._taken)
        self._taken.clear()
        return text


def read_records(reader: Any, lines: RecordedLines, keep_blank: bool = False) -> Iterator[tuple[int, list[str], str]]:
    """Yield (line the record starts on, cells, the record as written) for each non-blank record, or each
    record with ``keep_blank``."""
    previous_end = 0
    while True:
        start = previous_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _malformed(start, exc) from None
        previous_end = reader.line_num
        text = lines.take()
        if keep_blank or any(cell.strip() for cell in cells):
            yield start, cells, text


def without_line_end(record_text: str) -> tuple[str, str]:
    """The record without its line ending, and the ending ("" at the end of a file without one)."""
    match = _LINE_END_RE.search(record_text)
    if match is None:
        return record_text, ""
    return record_text[: match.start()], match.group()


def _malformed(row: int, exc: csv.Error) -> ApiError:
    reason = str(exc)
    if reason == "unexpected end of data":
        hint = "a quoted cell is never closed"
    elif "expected after" in reason:
        hint = "a closing quote is followed by other characters; quote the whole cell and double any quote inside it"
    else:
        hint = reason
    return ApiError(
        422,
        "csv_malformed",
        f"The CSV cannot be read from row {row} on: {hint}.",
        [{"row": row, "message": f"the record starting on this row is malformed: {hint} ({reason})"}],
    )
