"""The output CSV: the upload with its output URLs filled in, read back a batch of products at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, select

from intake import csv_input, csv_records
from models import Product, Request, db
from reading import planned_outputs
from reading.answers import _images_of
from storage import Storage

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: What makes a cell need quotes, as csv.writer's minimal quoting decides with our dialect.
_QUOTE_WHEN = (",", '"', "\r", "\n")
CSV_BATCH_PRODUCTS = 500


def neutralize_formula(cell: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula (OWASP CSV injection)."""
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def output_csv_lines(request: Request, storage: Storage) -> Iterator[str]:
    """The output CSV, a batch of products at a time, each batch read in a short transaction of its own.

    The upload itself with ``Output Image Urls`` added (or, if it had that column, filled in), every
    other cell as written, in the file's line ending and with its BOM; a request stored before the
    upload's records were kept gets the contract's four columns.
    """
    if request.csv_header is None:
        yield from _four_column_lines(request, storage)
        return
    line_end = request.csv_line_end or "\r\n"
    names = output_columns(request)
    indexes = [csv_records.column_index(request.csv_header, name) for name in names]
    header = _kept_record(request.csv_header, indexes, names)
    db.session.rollback()
    yield ("\ufeff" if request.csv_bom else "") + header + line_end
    for products, images_by_product in _product_batches(request):
        renditions = _renditions_of(images_by_product, len(names))
        lines = []
        for product in products:
            columns = _output_columns(images_by_product.get(product.id, []), renditions, len(names), storage)
            lines.append(_kept_record(product.source_record or "", indexes, None, columns) + line_end)
        yield "".join(lines)


def output_columns(request: Request) -> list[str]:
    """The output columns: ``Output Image Urls`` (the first rendition), then one per other rendition."""
    return [csv_input.OUTPUT_COLUMN] + [rendition_column(name) for name in planned_outputs.rendition_names(request)[1:]]


def rendition_column(name: str) -> str:
    """The added column of a rendition beyond the first (whose URLs go in ``Output Image Urls``)."""
    return f"{csv_input.OUTPUT_COLUMN} ({name})"


def _renditions_of(images_by_product: dict[int, list[Row]], columns: int) -> dict[int, dict[int, Row]]:
    if columns == 1:
        return {}
    return planned_outputs.renditions_of([image.id for images in images_by_product.values() for image in images])


def _output_columns(
    images: list[Row], renditions: dict[int, dict[int, Row]], columns: int, storage: Storage
) -> list[str]:
    """Each output column's cell for one product: its images' URLs of that rendition, positions aligned."""
    cells = [",".join(storage.url_for(image.output_key) if image.output_key else "" for image in images)]
    for position in range(1, columns):
        keys = [renditions.get(image.id, {}).get(position) for image in images]
        cells.append(",".join(storage.url_for(row.output_key) if row is not None else "" for row in keys))
    return cells


def _kept_record(
    record: str, indexes: list[int | None], header_names: list[str] | None, outputs: list[str] | None = None
) -> str:
    """One record as written with its output cells added or replaced: the header's own names
    (``header_names``), or a product's ``outputs``, one per output column at ``indexes`` (None: appended).

    Only a cell a spreadsheet would run as a formula is written anew; every other keeps its bytes.
    """
    cells = formula_safe_cells(record)
    if outputs is None:
        cells += [name for name, index in zip(header_names or [], indexes, strict=True) if index is None]
        return ",".join(cells)
    for index, value in zip(indexes, outputs, strict=True):
        output_cell = _csv_cell(neutralize_formula(value))
        if index is None:
            cells.append(output_cell)
        else:
            cells[index] = output_cell
    return ",".join(cells)


def formula_safe_cells(record: str) -> list[str]:
    """The cells of a record as written, only those a spreadsheet would run as a formula written anew."""
    return [_formula_safe(written) for written in csv_records.split_record(record)]


def _formula_safe(written: str) -> str:
    value = csv_records.cell_value(written)
    return _csv_cell(neutralize_formula(value)) if value.startswith(FORMULA_TRIGGERS) else written


def _csv_cell(value: str) -> str:
    """``value`` as one CSV cell, quoted only when it must be (csv.writer's minimal quoting)."""
    if any(special in value for special in _QUOTE_WHEN):
        return '"' + value.replace('"', '""') + '"'
    return value


class _CsvRows:
    """Rows written as CSV (CRLF, minimal quoting), taken a batch at a time."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def write(self, cells: Sequence[Any]) -> None:
        self._writer.writerow(cells)

    def take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


def _four_column_lines(request: Request, storage: Storage) -> Iterator[str]:
    rows = _CsvRows()
    names = output_columns(request)
    rows.write(["S. No.", "Product Name", "Input Image Urls", *names])
    db.session.rollback()
    yield rows.take()
    for products, images_by_product in _product_batches(request):
        renditions = _renditions_of(images_by_product, len(names))
        for product in products:
            images = images_by_product.get(product.id, [])
            columns = _output_columns(images, renditions, len(names), storage)
            rows.write(
                [
                    str(product.serial_number),
                    neutralize_formula(product.name),
                    neutralize_formula(",".join(i.source_url for i in images)),
                    *(neutralize_formula(cell) for cell in columns),
                ]
            )
        yield rows.take()


def _product_batches(
    request: Request, only: ColumnElement[bool] | None = None
) -> Iterator[tuple[Sequence[Row], dict[int, list[Row]]]]:
    """The request's products, or those ``only`` admits, with their images, CSV_BATCH_PRODUCTS at a time, in order.

    Each batch is read in a transaction of its own, ended before it is handed on: a slow reader of
    the CSV being written from it holds nothing. Plain rows, not ORM objects, which the end of the
    transaction would expire.
    """
    request_id = request.id
    last_position = -1
    while True:
        admitted = () if only is None else (only,)
        products = db.session.execute(
            select(Product.id, Product.position, Product.serial_number, Product.name, Product.source_record)
            .where(Product.request_id == request_id, Product.position > last_position, *admitted)
            .order_by(Product.position)
            .limit(CSV_BATCH_PRODUCTS)
        ).all()
        if not products:
            db.session.rollback()
            return
        images_by_product = _images_of(list(products))
        last_position = products[-1].position
        db.session.rollback()
        yield products, images_by_product
