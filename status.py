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

from models import FINAL_REQUEST_STATUSES, Image, ImageStatus, Product, ProductImage, Request, RequestStatus, db
from storage import Storage

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
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
        "quality": request.quality,
        "max_dimension": request.max_dimension,
        "webhook_url": request.webhook_url,
        "output_csv_url": output_csv_url(public_base_url, request.id),
        "importing": request.importing,
        "totals": totals(request),
        "products": [_product_answer(product, images_by_product.get(product.id, []), storage) for product in products],
        "pagination": page.describe(request.product_count),
    }


def _images_of(products: Sequence[Product]) -> dict[int, list[Row]]:
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
    }


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
    """The output CSV, a batch of products at a time, each batch read in a short transaction of its own."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"])
    db.session.rollback()
    yield flush()
    last_position = -1
    while True:
        products = db.session.scalars(
            select(Product)
            .where(Product.request_id == request.id, Product.position > last_position)
            .order_by(Product.position)
            .limit(CSV_BATCH_PRODUCTS)
        ).all()
        if not products:
            break
        images_by_product = _images_of(list(products))
        for product in products:
            images = images_by_product.get(product.id, [])
            outputs = [storage.url_for(i.output_key) if i.output_key else "" for i in images]
            writer.writerow(
                [
                    str(product.serial_number),
                    neutralize_formula(product.name),
                    neutralize_formula(",".join(i.source_url for i in images)),
                    neutralize_formula(",".join(outputs)),
                ]
            )
        last_position = products[-1].position
        # End the batch's transaction before the client reads it: a slow reader holds nothing.
        db.session.rollback()
        yield flush()
