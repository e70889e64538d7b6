"""What the status API, the request list and the output CSV say about a request."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Row, func, select

from intake import csv_input
from models import FINAL_REQUEST_STATUSES, Image, ImageStatus, Product, ProductImage, Request, RequestStatus, db
from storage import Storage

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: What makes a cell need quotes, as csv.writer's minimal quoting decides with our dialect.
_QUOTE_WHEN = (",", '"', "\r", "\n")
CSV_BATCH_PRODUCTS = 500


@dataclass(frozen=True)
class Page:
    page: int
    per_page: int

    def describe(self, total: int) -> dict[str, int]:
        return {"page": self.page, "per_page": self.per_page, "total": total, "pages": math.ceil(total / self.per_page)}


def page_etag(request: Request, page: Page) -> str:
    """A strong validator (unquoted) of one status page: it changes whenever the request or any of its images does."""
    version = f"{request.id}:{request.updated_at.isoformat()}:{request.status}:{request.completed_images}:"
    version += f"{request.failed_images}:{request.cancelled_images}:{request.importing}:{page.page}:{page.per_page}"
    return hashlib.blake2b(version.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class RenderedPage:
    etag: str
    body: bytes
    status: str
    rendered_at: float


class RenderedPages:
    """Status pages rendered once per version and served from memory, so polls cost a lookup, not a build.

    While a request runs, each image it finishes is a new version; rendering every one of them for
    every poller would cost more than the images. So while the request's status stays the same and
    is not final, a page rendered at most ``max_lag_s`` ago is served, under its own ETag; a change of
    status (the final one above all) always shows at once. Concurrent polls of one page wait for one
    render instead of each making their own. Bounded, least recently used out first.
    """

    def __init__(self, capacity: int = 256, max_lag_s: float = 0.5) -> None:
        self.capacity = capacity
        self.max_lag_s = max_lag_s
        self._pages: OrderedDict[tuple[Any, ...], RenderedPage] = OrderedDict()
        self._lock = threading.Lock()
        self._render_locks = [threading.Lock() for _ in range(64)]

    def serve(self, key: tuple[Any, ...], etag: str, status: str, render: Callable[[], bytes]) -> RenderedPage:
        """The page for ``key`` at version ``etag`` (``status``), or a recent one as above."""
        found = self._usable(key, etag, status)
        if found is not None:
            return found
        with self._render_locks[hash(key) % len(self._render_locks)]:
            found = self._usable(key, etag, status)
            if found is not None:
                return found
            rendered = RenderedPage(etag, render(), status, time.monotonic())
            with self._lock:
                self._pages[key] = rendered
                self._pages.move_to_end(key)
                while len(self._pages) > self.capacity:
                    self._pages.popitem(last=False)
            return rendered

    def _usable(self, key: tuple[Any, ...], etag: str, status: str) -> RenderedPage | None:
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return None
            recent = (
                page.status == status
                and status not in FINAL_REQUEST_STATUSES
                and time.monotonic() - page.rendered_at <= self.max_lag_s
            )
            if page.etag != etag and not recent:
                return None
            self._pages.move_to_end(key)
            return page


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as the contract writes times."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def progress(request: Request) -> dict[str, Any]:
    """Counts from the request row itself, so a poll never counts image rows."""
    total = request.total_images
    done = request.completed_images + request.failed_images + request.cancelled_images
    percent = 100.0 if request.status in FINAL_REQUEST_STATUSES else round(100.0 * done / total, 1) if total else 0.0
    counts: dict[str, Any] = {
        "total_images": total,
        "completed_images": request.completed_images,
        "failed_images": request.failed_images,
    }
    if request.cancelled_images:
        # Only then: the contract's progress has exactly five counts.
        counts["cancelled_images"] = request.cancelled_images
    counts |= {"pending_images": total - done, "percent": percent}
    return counts


def totals(request: Request) -> dict[str, Any]:
    """What the completed images weigh: downloaded, stored, and the share saved, in percent."""
    saved = round(100.0 * (1 - request.bytes_out / request.bytes_in), 1) if request.bytes_in else None
    return {"bytes_in": request.bytes_in, "bytes_out": request.bytes_out, "saved_percent": saved}


def derive_status(statuses: list[str]) -> str:
    """A product's status from its images', by the same rule as a request's."""
    if all(s == ImageStatus.PENDING for s in statuses):
        return RequestStatus.PENDING
    if any(s in (ImageStatus.PENDING, ImageStatus.PROCESSING) for s in statuses):
        return RequestStatus.PROCESSING
    if any(s == ImageStatus.CANCELLED for s in statuses):
        return RequestStatus.CANCELLED
    failed = sum(s == ImageStatus.FAILED for s in statuses)
    if failed == 0:
        return RequestStatus.COMPLETED
    return RequestStatus.FAILED if failed == len(statuses) else RequestStatus.COMPLETED_WITH_ERRORS


def find_request(request_id: str, owner_key_hash: str | None) -> Request | None:
    """The request with this id, if it exists and the caller may see it."""
    try:
        parsed = uuid.UUID(request_id)
    except ValueError:
        return None
    request = db.session.get(Request, parsed)
    if request is None or request.owner_key_hash != owner_key_hash:
        return None
    return request


def output_csv_url(public_base_url: str, request_id: uuid.UUID) -> str:
    return f"{public_base_url}/api/requests/{request_id}/output.csv"


def status_url(public_base_url: str, request_id: uuid.UUID) -> str:
    return f"{public_base_url}/api/status/{request_id}"


def request_summary(request: Request) -> dict[str, Any]:
    return {
        "request_id": str(request.id),
        "status": request.status,
        "created_at": timestamp(request.created_at),
        "progress": progress(request),
    }


def request_status(request: Request, page: Page, storage: Storage, public_base_url: str) -> dict[str, Any]:
    """The full status answer: the request, then one page of its products with their images."""
    products = db.session.scalars(
        select(Product)
        .where(Product.request_id == request.id)
        .order_by(Product.position)
        .offset((page.page - 1) * page.per_page)
        .limit(page.per_page)
    ).all()
    images_by_product = _images_of(products)
    return {
        "request_id": str(request.id),
        "status": request.status,
        "created_at": timestamp(request.created_at),
        "updated_at": timestamp(request.updated_at),
        "completed_at": timestamp(request.completed_at),
        "progress": progress(request),
        "quality": request.quality if request.quality is not None else "auto",
        "target_score": request.target_score,
        "format": request.output_format,
        "never_bigger": request.never_bigger,
        "max_dimension": request.max_dimension,
        "webhook_url": request.webhook_url,
        "output_csv_url": output_csv_url(public_base_url, request.id),
        "importing": request.importing,
        "totals": totals(request),
        "products": [_product_answer(product, images_by_product.get(product.id, []), storage) for product in products],
        "pagination": page.describe(request.product_count),
    }


def _images_of(products: Sequence[Product | Row]) -> dict[int, list[Row]]:
    """Each product's images, in input order: only the columns an answer shows, no ORM objects."""
    if not products:
        return {}
    rows = db.session.execute(
        select(
            ProductImage.product_id,
            Image.source_url,
            Image.output_key,
            Image.status,
            Image.attempts,
            Image.error_code,
            Image.error_message,
            Image.bytes_in,
            Image.bytes_out,
            Image.width,
            Image.height,
            Image.quality,
            Image.score,
            Image.reused,
            Image.kept_source,
        )
        .join(Image, Image.id == ProductImage.image_id)
        .where(ProductImage.product_id.in_([p.id for p in products]))
        .order_by(ProductImage.product_id, ProductImage.position)
    ).all()
    return {pid: list(group) for pid, group in groupby(rows, key=lambda r: r.product_id)}


def _product_answer(product: Product, images: list[Row], storage: Storage) -> dict[str, Any]:
    return {
        "serial_number": product.serial_number,
        "product_name": product.name,
        "status": derive_status([image.status for image in images]),
        "images": [_image_answer(image, storage) for image in images],
    }


def _image_answer(image: Row, storage: Storage) -> dict[str, Any]:
    error = {"code": image.error_code, "message": image.error_message} if image.status == ImageStatus.FAILED else None
    return {
        "input_url": image.source_url,
        "output_url": storage.url_for(image.output_key) if image.output_key else None,
        "status": image.status,
        "attempts": image.attempts,
        "error": error,
        "bytes_in": image.bytes_in,
        "bytes_out": image.bytes_out,
        "width": image.width,
        "height": image.height,
        "saved_bytes": saved_bytes(image),
        "quality": image.quality,
        "score": image.score,
        "kept_source": image.kept_source,
        "reused": image.reused,
    }


def saved_bytes(image: Row) -> int | None:
    """What the output saved on the download, never below 0; 0 when the source itself was kept (its metadata
    stripped, which is not counted as a saving)."""
    if image.status != ImageStatus.COMPLETED or image.bytes_in is None or image.bytes_out is None:
        return None
    return 0 if image.kept_source else max(0, image.bytes_in - image.bytes_out)


def list_requests(owner_key_hash: str | None, page: Page) -> dict[str, Any]:
    """The caller's requests, newest first."""
    owner_filter = (
        Request.owner_key_hash.is_(None) if owner_key_hash is None else Request.owner_key_hash == owner_key_hash
    )
    total = db.session.scalar(select(func.count()).select_from(Request).where(owner_filter))
    requests = db.session.scalars(
        select(Request)
        .where(owner_filter)
        .order_by(Request.created_at.desc(), Request.id)
        .offset((page.page - 1) * page.per_page)
        .limit(page.per_page)
    ).all()
    return {"requests": [request_summary(r) for r in requests], "pagination": page.describe(total or 0)}


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
    output_index = csv_input.column_index(request.csv_header, csv_input.OUTPUT_COLUMN)
    header = _kept_record(request.csv_header, output_index, None)
    db.session.rollback()
    yield ("\ufeff" if request.csv_bom else "") + header + line_end
    for products, images_by_product in _product_batches(request):
        lines = []
        for product in products:
            images = images_by_product.get(product.id, [])
            outputs = ",".join(storage.url_for(i.output_key) if i.output_key else "" for i in images)
            lines.append(_kept_record(product.source_record or "", output_index, outputs) + line_end)
        yield "".join(lines)


def _kept_record(record: str, output_index: int | None, outputs: str | None) -> str:
    """One record as written with its output cell added or replaced (``outputs`` None: the header's own).

    Only a cell a spreadsheet would run as a formula is written anew; every other keeps its bytes.
    """
    cells = [_formula_safe(written) for written in csv_input.split_record(record)]
    if outputs is None:
        if output_index is None:
            cells.append(csv_input.OUTPUT_COLUMN)
    else:
        output_cell = _csv_cell(neutralize_formula(outputs))
        if output_index is None:
            cells.append(output_cell)
        else:
            cells[output_index] = output_cell
    return ",".join(cells)


def _formula_safe(written: str) -> str:
    value = csv_input.cell_value(written)
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
    rows.write(["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"])
    db.session.rollback()
    yield rows.take()
    for products, images_by_product in _product_batches(request):
        for product in products:
            images = images_by_product.get(product.id, [])
            outputs = [storage.url_for(i.output_key) if i.output_key else "" for i in images]
            rows.write(
                [
                    str(product.serial_number),
                    neutralize_formula(product.name),
                    neutralize_formula(",".join(i.source_url for i in images)),
                    neutralize_formula(",".join(outputs)),
                ]
            )
        yield rows.take()


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
    serial_index = csv_input.column_index(request.csv_header, "S. No.") if request.csv_header else None
    rows.write(REPORT_COLUMNS)
    db.session.rollback()
    yield rows.take()
    for products, images_by_product in _product_batches(request):
        for product in products:
            serial = _serial_as_written(product, serial_index)
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
                rows.write([neutralize_formula("" if cell is None else str(cell)) for cell in cells])
        yield rows.take()


def _yes_no(flag: bool, status: str) -> str:
    return ("yes" if flag else "no") if status == ImageStatus.COMPLETED else ""


def _serial_as_written(product: Row, serial_index: int | None) -> str:
    """The serial number as the upload wrote it (``007`` stays ``007``), trimmed as it was read."""
    if serial_index is None or product.source_record is None:
        return str(product.serial_number)
    return csv_input.cell_value(csv_input.split_record(product.source_record)[serial_index]).strip()


def _product_batches(request: Request) -> Iterator[tuple[Sequence[Row], dict[int, list[Row]]]]:
    """The request's products with their images, CSV_BATCH_PRODUCTS at a time, in upload order.

    Each batch is read in a transaction of its own, ended before it is handed on: a slow reader of
    the CSV being written from it holds nothing. Plain rows, not ORM objects, which the end of the
    transaction would expire.
    """
    request_id = request.id
    last_position = -1
    while True:
        products = db.session.execute(
            select(Product.id, Product.position, Product.serial_number, Product.name, Product.source_record)
            .where(Product.request_id == request_id, Product.position > last_position)
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
