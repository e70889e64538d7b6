"""The failed rows CSV: the uploaded rows of the products with a failed image, to fix and upload again."""

from __future__ import annotations

from collections.abc import Iterator

from catalog_formats.formats import platform_format
from models import ImageStatus, Request, db
from reading import catalog_files
from reading.answers import _has_image_in
from reading.formula_safety import formula_safe_cells, neutralize_formula
from reading.output_csv import _CsvRows, _product_batches


def failed_rows_lines(request: Request) -> Iterator[str]:
    """The upload's header and the records of its products with a failed image, as uploaded, in upload order.

    Each record keeps its bytes but for a cell a spreadsheet would run as a formula (as in the output
    CSV), in the file's line ending and with its BOM; read a batch at a time like the output CSV. A
    request stored before the upload's records were kept gets the contract's three columns.
    """
    if platform_format(request.input_format) is not None:
        yield from catalog_files.failed_catalog_lines(request)
        return
    if request.csv_header is None:
        yield from _three_column_lines(request)
        return
    line_end = request.csv_line_end or "\r\n"
    header = ",".join(formula_safe_cells(request.csv_header))
    db.session.rollback()
    yield ("\ufeff" if request.csv_bom else "") + header + line_end
    for products, _images in _product_batches(request, only=_has_image_in(ImageStatus.FAILED)):
        yield "".join(",".join(formula_safe_cells(product.source_record or "")) + line_end for product in products)


def _three_column_lines(request: Request) -> Iterator[str]:
    rows = _CsvRows()
    rows.write(["S. No.", "Product Name", "Input Image Urls"])
    db.session.rollback()
    yield rows.take()
    for products, images_by_product in _product_batches(request, only=_has_image_in(ImageStatus.FAILED)):
        for product in products:
            urls = ",".join(image.source_url for image in images_by_product.get(product.id, []))
            rows.write([str(product.serial_number), neutralize_formula(product.name), neutralize_formula(urls)])
        yield rows.take()
