"""The per-image report CSV: one row per image of each product, at any status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Row

from catalog_formats.formats import platform_format
from intake import csv_records
from models import ImageStatus, Request, db
from output_plan.plan import OutputPlan
from reading import planned_outputs
from reading.answers import saved_bytes
from reading.formula_safety import neutralize_formula
from reading.output_csv import _CsvRows, _product_batches
from storage import Storage

REPORT_COLUMNS = (
    "S. No.",
    "Product Name",
    "Position",
    "Input Image Url",
    "Output Image Url",
    "Status",
    "Error Code",
    "Error Message",
    "Bytes In",
    "Bytes Out",
    "Width",
    "Height",
    "Attempts",
    "Saved Bytes",
    "Quality",
    "Score",
    "Kept Source",
    "Reused",
)


def report_csv_lines(request: Request, storage: Storage) -> Iterator[str]:
    """One row per image of each product, in upload then input order, at any status; batched like the output."""
    rows = _CsvRows()
    serial_index = csv_records.column_index(request.csv_header, "S. No.") if request.csv_header else None
    plan = planned_outputs.plan_of(request)
    extra_names = [item.name for item in plan.renditions[1:]] if plan is not None else []
    # A platform's export names its products by its own key (Shopify's Handle, ...), in the first column.
    catalog_format = platform_format(request.input_format)
    first_column = catalog_format.key_label if catalog_format is not None else REPORT_COLUMNS[0]
    rows.write((first_column, *REPORT_COLUMNS[1:], *_plan_columns(plan, extra_names)))
    db.session.rollback()
    yield rows.take()
    for products, images_by_product in _product_batches(request):
        extras = planned_outputs.ImageExtras.of(request, images_by_product, storage)
        for product in products:
            serial = product.key if catalog_format is not None else _serial_as_written(product, serial_index)
            for position, image in enumerate(images_by_product.get(product.id, []), start=1):
                failed = image.status == ImageStatus.FAILED
                cells = [
                    serial,
                    product.name,
                    position,
                    image.source_url,
                    storage.url_for(image.output_key) if image.output_key else "",
                    image.status,
                    image.error_code if failed else "",
                    image.error_message if failed else "",
                    image.bytes_in,
                    image.bytes_out,
                    image.width,
                    image.height,
                    image.attempts,
                    saved_bytes(image),
                    image.quality,
                    "" if image.score is None else f"{image.score:.4f}",
                    _yes_no(image.kept_source, image.status),
                    _yes_no(image.reused, image.status),
                ]
                if extras is not None:
                    cells += _plan_cells(extras.of_image(image.id, _plain(image, storage)), extras)
                rows.write([neutralize_formula("" if cell is None else str(cell)) for cell in cells])
        yield rows.take()


def _yes_no(flag: bool, status: str) -> str:
    return ("yes" if flag else "no") if status == ImageStatus.COMPLETED else ""


def _serial_as_written(product: Row, serial_index: int | None) -> str:
    """The serial number as the upload wrote it (``007`` stays ``007``), trimmed as it was read."""
    if serial_index is None or product.source_record is None:
        return str(product.serial_number)
    return csv_records.cell_value(csv_records.split_record(product.source_record)[serial_index]).strip()


#: Each rendition beyond the first adds these columns, after its name.
RENDITION_COLUMNS = ("Url", "Width", "Height", "Bytes")
COMPLIANCE_COLUMNS = ("Compliance", "Source Failures", "Changes", "Fixed", "Output Failures")


def _plan_columns(plan: OutputPlan | None, extra_names: list[str]) -> tuple[str, ...]:
    if plan is None:
        return ()
    columns = [f"{name} {column}" for name in extra_names for column in RENDITION_COLUMNS]
    if plan.profile is not None:
        columns += COMPLIANCE_COLUMNS
    if plan.duplicates:
        columns.append("Duplicate Of")
    return tuple(columns)


def _plain(image: Row, storage: Storage) -> dict[str, Any]:
    """What ``ImageExtras.of_image`` reads of the image's own answer."""
    return {
        "output_url": storage.url_for(image.output_key) if image.output_key else None,
        "width": image.width,
        "height": image.height,
        "bytes_out": image.bytes_out,
        "quality": image.quality,
        "score": image.score,
        "reused": image.reused,
    }


def _plan_cells(added: dict[str, Any], extras: planned_outputs.ImageExtras) -> list[Any]:
    cells: list[Any] = []
    for rendition in added["renditions"][1:]:
        cells += [rendition["url"] or "", rendition["width"], rendition["height"], rendition["bytes"]]
    if extras.checked:
        found = added.get("compliance") or {}
        cells.append(found.get("verdict", ""))
        cells += [" ".join(found.get(name, [])) for name in ("source_failures", "changes", "fixed", "output_failures")]
    if extras.duplicates_looked_for:
        duplicate = added.get("duplicate_of")
        cells.append(f"{duplicate['product_name']} {duplicate['input_url']}" if duplicate else "")
    return cells
