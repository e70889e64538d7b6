"""The output CSV: the upload with its output URLs filled in, read back a batch of products at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, select

from catalog_formats.formats import platform_format
from intake import csv_records
from models import Product, Request, db
from reading import catalog_files, planned_outputs
from reading.answers import _images_of
from reading.formula_safety import csv_cell, formula_safe_cells, neutralize_formula
from storage import Storage

CSV_BATCH_PRODUCTS = 500


def output_csv_lines(request: Request, storage: Storage) -> Iterator[str]:
    """The output CSV, a batch of products at a time, each batch read in a short transaction of its own.

    The upload itself with ``Output Image Urls`` added (or, if it had that column, filled in), every
    other cell as written, in the file's line ending and with its BOM; with ``output_mode=replace``, the
    ``Input Image Urls`` cell holds the outputs instead. A platform's export is given back by
    ``catalog_files``. A request stored before the upload's records were kept gets the contract's four columns.
    """
    if platform_format(request.input_format) is not None:
        yield from catalog_files.catalog_output_lines(request, storage)
        return
    choice = catalog_files.output_choice(request)
    if request.csv_header is None:
        yield from _four_column_lines(request, storage, choice)
        return
    line_end = request.csv_line_end or "\r\n"
    names = [name for name, _ in choice.added]
    indexes = [csv_records.column_index(request.csv_header, name) for name in names]
    urls_index = csv_records.column_index(request.csv_header, "Input Image Urls") if choice.replace else None
    header = _kept_record(request.csv_header, indexes, names)
    db.session.rollback()
    yield ("\ufeff" if request.csv_bom else "") + header + line_end
    for products, images_by_product in _product_batches(request):
        renditions = _renditions_of(images_by_product, choice)
        lines = []
        for product in products:
            images = images_by_product.get(product.id, [])
            columns = _output_columns(images, renditions, choice, storage)
            record = product.source_record or ""
            if urls_index is not None:
                cells = csv_records.split_record(record)
                cells[urls_index] = csv_cell(_replaced_sources(images, renditions, choice, storage))
                record = ",".join(cells)
            lines.append(_kept_record(record, indexes, None, columns) + line_end)
        yield "".join(lines)


def output_columns(request: Request) -> list[str]:
    """The columns the output CSV adds: ``Output Image Urls`` (unless its URLs replace the sources), then one per
    other rendition."""
    return [name for name, _ in catalog_files.output_choice(request).added]


def _renditions_of(
    images_by_product: dict[int, list[Row]], choice: catalog_files.OutputChoice
) -> dict[int, dict[int, Row]]:
    if {choice.chosen, *(position for _, position in choice.added)} == {0}:
        return {}
    return planned_outputs.renditions_of([image.id for images in images_by_product.values() for image in images])


def _output_url(image: Row, position: int, renditions: dict[int, dict[int, Row]], storage: Storage) -> str | None:
    if position == 0:
        return storage.url_for(image.output_key) if image.output_key else None
    row = renditions.get(image.id, {}).get(position)
    return storage.url_for(row.output_key) if row is not None else None


def _output_columns(
    images: list[Row], renditions: dict[int, dict[int, Row]], choice: catalog_files.OutputChoice, storage: Storage
) -> list[str]:
    """Each added column's cell for one product: its images' URLs of that rendition, positions aligned."""
    return [
        ",".join(_output_url(image, position, renditions, storage) or "" for image in images)
        for _, position in choice.added
    ]


def _replaced_sources(
    images: list[Row], renditions: dict[int, dict[int, Row]], choice: catalog_files.OutputChoice, storage: Storage
) -> str:
    """The ``Input Image Urls`` cell in ``replace`` mode: each output, or the source where there is none."""
    return ",".join(_output_url(image, choice.chosen, renditions, storage) or image.source_url for image in images)


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
        output_cell = csv_cell(neutralize_formula(value))
        if index is None:
            cells.append(output_cell)
        else:
            cells[index] = output_cell
    return ",".join(cells)


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


def _four_column_lines(request: Request, storage: Storage, choice: catalog_files.OutputChoice) -> Iterator[str]:
    rows = _CsvRows()
    rows.write(["S. No.", "Product Name", "Input Image Urls", *(name for name, _ in choice.added)])
    db.session.rollback()
    yield rows.take()
    for products, images_by_product in _product_batches(request):
        renditions = _renditions_of(images_by_product, choice)
        for product in products:
            images = images_by_product.get(product.id, [])
            columns = _output_columns(images, renditions, choice, storage)
            sources = (
                _replaced_sources(images, renditions, choice, storage)
                if choice.replace
                else ",".join(i.source_url for i in images)
            )
            rows.write(
                [
                    str(product.serial_number),
                    neutralize_formula(product.name),
                    neutralize_formula(sources),
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
            select(
                Product.id, Product.position, Product.serial_number, Product.name, Product.source_record, Product.key
            )
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
