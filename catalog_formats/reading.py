"""Validation of an uploaded catalog file in any format: all of it is accepted, or none of it.

The contract's CSV is ``intake.csv_input``'s; a platform export is read here, by the same rules
(URL rule, limits, every problem with its row and its column as the file spells it), keeping each
record as written so that the file can be given back with only its image cells changed.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from catalog_formats import formats
from catalog_formats.formats import CatalogFormat
from catalog_formats.image_cells import urls_in
from errors import ApiError
from intake import csv_input
from intake.csv_input import CsvLayout, CsvLimits, ProductRow, check_url
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

_DEFAULT_LIMITS = CsvLimits()


class ParsedCatalog(NamedTuple):
    rows: list[ProductRow]
    layout: CsvLayout
    #: The format the file was read as: ``contract`` or a platform format's name.
    input_format: str
    #: Every record after the header as written, line ending included (blank ones too); None for the contract's CSV,
    #: whose records are its products'.
    records: list[str] | None = None


def parse_catalog(
    data: bytes,
    input_format: str = formats.AUTO,
    limits: CsvLimits = _DEFAULT_LIMITS,
    is_blocked_host: Callable[[str], bool] | None = None,
) -> ParsedCatalog:
    """Validate ``data`` as ``input_format`` (``auto``: as its header says); raises ApiError on any problem."""
    text = decode_text(data)
    check_characters(text)
    ensure_field_size_limit(len(text) + 1)
    if input_format == formats.AUTO:
        input_format = _recognised(text)
    if input_format == formats.CONTRACT:
        rows, layout = csv_input.parse_csv(data, limits, is_blocked_host)
        return ParsedCatalog(rows, layout, formats.CONTRACT)
    catalog_format = formats.PLATFORM_FORMATS[input_format]
    delimiter = _delimiter(text, catalog_format)
    return _parse_platform(text, data.startswith(codecs.BOM_UTF8), catalog_format, delimiter, limits, is_blocked_host)


def _first_record_cells(text: str, delimiter: str) -> list[str]:
    for cells in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        if any(cell.strip() for cell in cells):
            return cells
    return []


def _recognised(text: str) -> str:
    """The format the header names; the contract's when it names none, so that its refusals stay the contract's."""
    headers: dict[str, list[str]] = {}
    for delimiter in (",", "\t"):
        try:
            headers[delimiter] = _first_record_cells(text, delimiter)
        except csv.Error:
            continue
        found = formats.recognised(headers[delimiter])
        if found is not None and (delimiter == "," or delimiter in formats.PLATFORM_FORMATS[found].delimiters):
            return found
    if not text.strip() or formats.names_a_contract_column(headers.get(",", [])):
        return formats.CONTRACT  # csv_empty, or csv_missing_columns naming what the contract's CSV lacks
    raise ApiError(
        422,
        "csv_missing_columns",
        "The file's header names none of the columns of the service's CSV, nor of an export the service knows. "
        f"It reads {formats.known_formats_sentence()}. Name the format with 'input_format' if the header is right.",
        [{"row": 1, "message": f"the header has no column '{name}'"} for name in formats.CONTRACT_COLUMNS],
    )


def _delimiter(text: str, catalog_format: CatalogFormat) -> str:
    if "\t" not in catalog_format.delimiters:
        return ","
    try:
        by_tab = _first_record_cells(text, "\t")
    except csv.Error:
        return ","
    return "\t" if catalog_format.matches({column_key(cell) for cell in by_tab}) else ","


@dataclass
class _Product:
    key: str
    row: int
    title: str = ""
    #: (image column, position, order in the file, URL): the first image column's URLs come first, Shopify's
    #: sorted by ``Image Position``; then the other columns' (Shopify's ``Variant Image``), all in file order.
    images: list[tuple[int, float, int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Columns:
    keys: list[tuple[int, str]]
    title: int | None
    images: list[tuple[int, formats.ImageColumn, str]]
    position: tuple[int, str] | None


def _parse_platform(
    text: str,
    bom: bool,
    catalog_format: CatalogFormat,
    delimiter: str,
    limits: CsvLimits,
    is_blocked_host: Callable[[str], bool] | None,
) -> ParsedCatalog:
    lines = RecordedLines(text)
    records = read_records(csv.reader(lines, strict=True, delimiter=delimiter), lines, keep_blank=True)
    header = next((record for record in records if any(cell.strip() for cell in record[1])), None)
    if header is None:
        raise ApiError(400, "csv_empty", "The file is empty; it needs a header row and at least one product row.")
    header_row, header_cells, header_text = header
    header_record, line_end = without_line_end(header_text)
    layout = CsvLayout(header_record, line_end or "\r\n", bom, delimiter)
    columns = _locate(catalog_format, header_row, header_cells)
    width = len(header_cells)

    problems = Problems()
    products: dict[str, _Product] = {}
    kept: list[str] = []
    count = 0
    order = 0
    for row, cells, record_text in records:
        kept.append(record_text)
        if not any(cell.strip() for cell in cells):
            continue
        count += 1
        if count > limits.max_rows:
            raise too_many_rows(row, count, limits.max_rows)
        if len(cells) != width:
            problems.add(row, f"row has {len(cells)} cells but the header has {width}")
            continue
        urls = _image_urls(cells, row, columns, limits, is_blocked_host, problems)
        key = next((cells[index].strip() for index, _ in columns.keys if cells[index].strip()), "")
        if not key:
            if urls or catalog_format.rows_share_key:
                names = " or ".join(repr(name) for _, name in columns.keys)
                problems.add(row, f"{names} is empty: nothing names this row's product", columns.keys[0][1])
            continue
        product = products.get(key)
        if product is None:
            product = products[key] = _Product(key, row)
        elif not catalog_format.rows_share_key:
            key_column = next(name for index, name in columns.keys if cells[index].strip())
            problems.add(
                row, f"duplicate {key_column.strip()} {quoted(key)}; first used on row {product.row}", key_column
            )
            continue
        if not product.title and columns.title is not None:
            product.title = cells[columns.title].strip()
        position = _position(cells, row, columns, problems) if urls else math.inf
        for column, url in urls:
            order += 1
            product.images.append((column, position if column == 0 else math.inf, order, url))

    if count == 0:
        raise ApiError(422, "csv_no_rows", "The file has a header but no product rows.")
    rows = _product_rows(products, columns, limits, problems)
    if problems.total:
        raise problems.error()
    if not rows:
        names = ", ".join(column.name for column in catalog_format.image_columns)
        raise ApiError(422, "csv_no_images", f"The file has no image URLs: its {names} cells are all empty.")
    return ParsedCatalog(rows, layout, catalog_format.name, kept)


def _locate(catalog_format: CatalogFormat, row: int, cells: list[str]) -> _Columns:
    found: dict[str, list[int]] = {}
    for index, cell in enumerate(cells):
        found.setdefault(column_key(cell), []).append(index)
    wanted = [
        *catalog_format.key_columns,
        catalog_format.title_column,
        *(column.name for column in catalog_format.image_columns),
        *([catalog_format.position_column] if catalog_format.position_column else []),
    ]
    doubled = [name for name in wanted if len(found.get(column_key(name), [])) > 1]
    if doubled:
        raise ApiError(
            422,
            "csv_duplicate_columns",
            f"The {catalog_format.label} has the column {' and '.join(repr(n) for n in doubled)} more than once.",
            [{"row": row, "column": name, "message": f"column {name!r} is given more than once"} for name in doubled],
        )
    missing = [name for name in catalog_format.required_columns if column_key(name) not in found]
    if not any(column_key(name) in found for name in catalog_format.key_columns):
        missing.append(" or ".join(catalog_format.key_columns))
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        raise ApiError(
            422,
            "csv_missing_columns",
            f"The {catalog_format.label} has no column {names}.",
            [{"row": row, "message": f"the header has no column '{name}'"} for name in missing],
        )

    def at(name: str) -> int | None:
        indexes = found.get(column_key(name))
        return indexes[0] if indexes else None

    return _Columns(
        keys=[(index, cells[index]) for name in catalog_format.key_columns if (index := at(name)) is not None],
        title=at(catalog_format.title_column),
        images=[
            (index, column, cells[index])
            for column in catalog_format.image_columns
            if (index := at(column.name)) is not None
        ],
        position=(
            (index, cells[index])
            if catalog_format.position_column and (index := at(catalog_format.position_column)) is not None
            else None
        ),
    )


def _image_urls(
    cells: list[str],
    row: int,
    columns: _Columns,
    limits: CsvLimits,
    is_blocked_host: Callable[[str], bool] | None,
    problems: Problems,
) -> list[tuple[int, str]]:
    """The row's image URLs, each with the rank of its column among the image columns."""
    urls: list[tuple[int, str]] = []
    for rank, (index, column, name) in enumerate(columns.images):
        in_cell = urls_in(cells[index], column.kind)
        if column.max_urls is not None and len(in_cell) > column.max_urls:
            problems.add(
                row, f"{len(in_cell)} image URLs are given; {name.strip()} takes at most {column.max_urls}", name
            )
        for number, url in enumerate(in_cell, start=1):
            if not url:
                problems.add(row, f"image URL number {number} is empty (two commas in a row, or one at an end)", name)
                continue
            check_url(url, row, name, limits, is_blocked_host, problems)
            urls.append((rank, url))
    return urls


def _position(cells: list[str], row: int, columns: _Columns, problems: Problems) -> float:
    if columns.position is None:
        return math.inf
    index, name = columns.position
    value = cells[index].strip()
    if not value:
        return math.inf
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        problems.add(row, f"image position must be a whole number from 1: {quoted(value)}", name)
        return math.inf
    return int(value)


def _product_rows(
    products: dict[str, _Product], columns: _Columns, limits: CsvLimits, problems: Problems
) -> list[ProductRow]:
    rows: list[ProductRow] = []
    for product in products.values():
        if not product.images:
            continue  # a product without pictures passes through the file as it is
        urls = tuple(dict.fromkeys(url for *_, url in sorted(product.images)))
        if len(urls) > limits.max_urls_per_product:
            problems.add(
                product.row,
                f"{len(urls)} image URLs are given for {quoted(product.key)}; "
                f"the limit is {limits.max_urls_per_product}",
                columns.images[0][2],
            )
        name = (product.title or product.key)[: limits.max_product_name_length]
        rows.append(ProductRow(len(rows) + 1, name, urls, product.row, key=product.key))
    return rows
