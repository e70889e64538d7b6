"""Validation of the uploaded product CSV: all of it is accepted, or none of it."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from errors import ApiError
from intake.csv_records import (
    RecordedLines,
    check_characters,
    column_key,
    decode_text,
    ensure_field_size_limit,
    read_records,
    without_line_end,
)
from intake.row_problems import Problems, quoted, too_many_rows

# reading/'s output CSV reads the records as uploaded with these.
from network_policy.urls import MAX_URL_LENGTH, url_host, url_problem

# The largest value a BIGINT column (where models.py keeps it) can hold.
MAX_SERIAL_NUMBER = 2**63 - 1

_SERIAL = "sno"
_NAME = "productname"
_URLS = "inputimageurls"
_REQUIRED = {_SERIAL: "S. No.", _NAME: "Product Name", _URLS: "Input Image Urls"}
#: The column the output CSV adds; an upload that already has it (an output uploaded again) gets it filled in.
OUTPUT_COLUMN = "Output Image Urls"
_OUTPUT = "outputimageurls"
_NAMED = {**_REQUIRED, _OUTPUT: OUTPUT_COLUMN}

_DIGITS_RE = re.compile(r"[0-9]+")
#: The hint for a cell whose URLs a catalog export separated with ';', '|' or white space.
SEPARATE_WITH_COMMAS = "separate the URLs of one cell with commas"


@dataclass(frozen=True)
class CsvLimits:
    """Bounds on what one upload may contain."""

    max_rows: int = 10_000
    max_urls_per_product: int = 50
    max_url_length: int = MAX_URL_LENGTH
    max_product_name_length: int = 1000


@dataclass(frozen=True)
class ProductRow:
    """One validated product line of the CSV."""

    serial_number: int
    product_name: str
    image_urls: tuple[str, ...]
    row: int
    #: The record as uploaded, every cell as written, without its line ending; None for rows made elsewhere.
    source_record: str | None = field(default=None, compare=False)
    #: The product's key in a platform's export (Shopify's Handle, ...); None in the contract's CSV.
    key: str | None = None


@dataclass(frozen=True)
class CsvLayout:
    """What the output CSV keeps of the file as a whole: its header record as written, line ending and BOM."""

    header_record: str
    line_end: str
    bom: bool
    delimiter: str = ","


class ParsedCsv(NamedTuple):
    rows: list[ProductRow]
    layout: CsvLayout


def parse_rows(
    data: bytes,
    limits: CsvLimits = CsvLimits(),
    is_blocked_host: Callable[[str], bool] | None = None,
) -> list[ProductRow]:
    """Validate the CSV in ``data`` and return its product rows; raises ApiError on any problem."""
    return parse_csv(data, limits, is_blocked_host).rows


def parse_csv(
    data: bytes,
    limits: CsvLimits = CsvLimits(),
    is_blocked_host: Callable[[str], bool] | None = None,
) -> ParsedCsv:
    """Validate the CSV in ``data``: its product rows, each with its record as written, and its layout.

    Raises ApiError on any problem.
    """
    text = decode_text(data)
    check_characters(text)
    ensure_field_size_limit(len(text) + 1)

    lines = RecordedLines(text)
    records = read_records(csv.reader(lines, strict=True), lines)
    header = next(records, None)
    if header is None:
        raise ApiError(400, "csv_empty", "The CSV is empty; it needs a header row and at least one product row.")
    header_row, header_cells, header_text = header
    header_record, line_end = without_line_end(header_text)
    layout = CsvLayout(header_record, line_end or "\r\n", data.startswith(codecs.BOM_UTF8))
    columns = _locate_columns(header_row, header_cells)
    width = len(header_cells)
    serial_index, name_index, urls_index = columns[_SERIAL], columns[_NAME], columns[_URLS]
    serial_column = header_cells[serial_index]
    name_column = header_cells[name_index]
    urls_column = header_cells[urls_index]

    problems = Problems()
    products: list[ProductRow] = []
    first_row_of_serial: dict[int, int] = {}
    count = 0
    for row, cells, record_text in records:
        count += 1
        if count > limits.max_rows:
            raise too_many_rows(row, count, limits.max_rows)
        if len(cells) != width:
            problems.add(row, f"row has {len(cells)} cells but the header has {width}")
            continue

        serial = _parse_serial(cells[serial_index])
        if isinstance(serial, str):
            problems.add(row, serial, serial_column)
        elif serial in first_row_of_serial:
            problems.add(
                row,
                f"duplicate {serial_column.strip()} {quoted(cells[serial_index].strip())}; "
                f"first used on row {first_row_of_serial[serial]}",
                serial_column,
            )
        else:
            first_row_of_serial[serial] = row

        name = cells[name_index].strip()
        if not name:
            problems.add(row, "product name is empty", name_column)
        elif len(name) > limits.max_product_name_length:
            problems.add(
                row,
                f"product name is {len(name)} characters long; the limit is "
                f"{limits.max_product_name_length}: {quoted(name)}",
                name_column,
            )

        urls = _check_urls(cells[urls_index], row, urls_column, limits, is_blocked_host, problems)

        if not problems.total and isinstance(serial, int):
            products.append(ProductRow(serial, name, urls, row, without_line_end(record_text)[0]))

    if count == 0:
        raise ApiError(422, "csv_no_rows", "The CSV has a header but no product rows.")
    if problems.total:
        raise problems.error()
    return ParsedCsv(products, layout)


def _locate_columns(row: int, cells: list[str]) -> dict[str, int]:
    found: dict[str, list[int]] = {key: [] for key in _NAMED}
    for index, cell in enumerate(cells):
        key = column_key(cell)
        if key in found:
            found[key].append(index)

    missing = [_REQUIRED[key] for key, indexes in found.items() if not indexes and key in _REQUIRED]
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        plural = "column" if len(missing) == 1 else "columns"
        raise ApiError(
            422,
            "csv_missing_columns",
            f"The CSV has no {plural} {names}.",
            [{"row": row, "message": f"the header has no column '{name}'"} for name in missing],
        )

    doubled = {key: indexes for key, indexes in found.items() if len(indexes) > 1}
    if doubled:
        names = " and ".join(f"'{_NAMED[key]}'" for key in doubled)
        plural = "column" if len(doubled) == 1 else "columns"
        details = [
            {
                "row": row,
                "column": cells[indexes[1]],
                "message": f"column '{_NAMED[key]}' is given {len(indexes)} times: "
                + ", ".join(quoted(cells[index]) for index in indexes),
            }
            for key, indexes in doubled.items()
        ]
        raise ApiError(422, "csv_duplicate_columns", f"The CSV has the {plural} {names} more than once.", details)

    return {key: indexes[0] for key, indexes in found.items() if indexes}


def _parse_serial(cell: str) -> int | str:
    """Return the serial number, or a message saying what is wrong with it."""
    value = cell.strip()
    if not value:
        return "serial number is empty"
    if _DIGITS_RE.fullmatch(value) is None:
        return f"serial number must be a whole number of digits only: {quoted(value)}"
    digits = value.lstrip("0")
    if len(digits) > len(str(MAX_SERIAL_NUMBER)) or int(digits or "0") > MAX_SERIAL_NUMBER:
        return f"serial number is larger than {MAX_SERIAL_NUMBER}: {quoted(value)}"
    number = int(digits or "0")
    if number < 1:
        return f"serial number must be at least 1: {quoted(value)}"
    return number


def _check_urls(
    cell: str,
    row: int,
    column: str,
    limits: CsvLimits,
    is_blocked_host: Callable[[str], bool] | None,
    problems: Problems,
) -> tuple[str, ...]:
    if not cell.strip():
        problems.add(row, "no image URLs are given", column)
        return ()
    urls = tuple(entry.strip() for entry in cell.split(","))
    if len(urls) > limits.max_urls_per_product:
        problems.add(row, f"{len(urls)} image URLs are given; the limit is {limits.max_urls_per_product}", column)
    for position, url in enumerate(urls, start=1):
        if not url:
            problems.add(row, f"image URL number {position} is empty (two commas in a row, or one at an end)", column)
            continue
        check_url(url, row, column, limits, is_blocked_host, problems)
    return urls


def check_url(
    url: str,
    row: int,
    column: str,
    limits: CsvLimits,
    is_blocked_host: Callable[[str], bool] | None,
    problems: Problems,
) -> None:
    """Add to ``problems`` what is wrong with one image URL of a cell: the contract's URL rule, or a blocked address."""
    problem = url_problem(url, limits.max_url_length)
    if problem is not None and problem.code == "several_urls":
        problems.add(row, f"{problem.message}: {quoted(url)}; {SEPARATE_WITH_COMMAS}", column)
    elif problem is not None:
        problems.add(row, f"{problem.message}: {quoted(url)}", column)
    elif is_blocked_host is not None and is_blocked_host(url_host(url)):
        problems.add(row, f"address not allowed: {quoted(url)}", column, blocked=True)
