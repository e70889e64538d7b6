"""What the status API and the request list say about a request."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import ColumnElement, Row, func, select

from catalog_formats.formats import CONTRACT, default_output_mode, platform_format
from models import FINAL_REQUEST_STATUSES, Image, ImageStatus, Product, ProductImage, Request, db, derive_status
from reading import planned_outputs
from reading.links import output_csv_url
from reading.request_versions import Version
from storage import Storage


@dataclass(frozen=True)
class Page:
    page: int
    per_page: int
    #: Only the products with at least one image in this status (each with all its images); None: every product.
    image_status: ImageStatus | None = None

    def describe(self, total: int) -> dict[str, int]:
        return {"page": self.page, "per_page": self.per_page, "total": total, "pages": math.ceil(total / self.per_page)}


def page_etag(request: Request | Version, page: Page) -> str:
    """A strong validator (unquoted) of one status page: it changes whenever the request or any of its images does."""
    version = f"{request.id}:{request.updated_at.isoformat()}:{request.status}:{request.completed_images}:"
    version += f"{request.failed_images}:{request.cancelled_images}:{request.importing}:{page.page}:{page.per_page}"
    if page.image_status is not None:
        version += f":{page.image_status}"
    return hashlib.blake2b(version.encode(), digest_size=12).hexdigest()


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


def catalog_fields(request: Request) -> dict[str, Any]:
    """How the request's file was read and is given back: its format, output mode and rendition, its feed."""
    catalog_format = platform_format(request.input_format)
    return {
        "input_format": request.input_format or CONTRACT,
        "product_key": catalog_format.key_label if catalog_format is not None else None,
        "output_mode": request.output_mode or default_output_mode(request.input_format or CONTRACT),
        "output_rendition": request.output_rendition,
        "feed_url": request.feed_url,
        "feed_sha256": request.feed_sha256,
    }


def request_summary(request: Request) -> dict[str, Any]:
    return {
        "request_id": str(request.id),
        "file_name": request.file_name,
        "status": request.status,
        "created_at": timestamp(request.created_at),
        "progress": progress(request),
    }


#: Products rendered at a time into a status page: what one page holds in Python objects at once, whatever
#: its per_page (50 products of at most MAX_URLS_PER_PRODUCT images each).
PRODUCTS_PER_PART = 50


def request_status_parts(
    request: Request, page: Page, storage: Storage, public_base_url: str, dumps: Callable[[Any], str]
) -> Iterator[bytes]:
    """The full status answer as JSON (``dumps``), in parts: the request, then one page of its products with
    their images, PRODUCTS_PER_PART products at a time, then the pagination."""
    shown = [Product.request_id == request.id]
    if page.image_status is not None:
        shown.append(_has_image_in(page.image_status))
    products = db.session.scalars(
        select(Product)
        .where(*shown)
        .order_by(Product.position)
        .offset((page.page - 1) * page.per_page)
        .limit(page.per_page)
    ).all()
    head = dumps(
        {
            "request_id": str(request.id),
            "file_name": request.file_name,
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
            **catalog_fields(request),
            "importing": request.importing,
            "totals": totals(request),
            **planned_outputs.request_fields(request),
        }
    )
    total = request.product_count
    if page.image_status is not None:
        total = db.session.scalar(select(func.count()).select_from(Product).where(*shown)) or 0
    pagination = dumps(page.describe(total))
    yield f'{head[:-1]}, "products": ['.encode()
    for start in range(0, len(products), PRODUCTS_PER_PART):
        part = products[start : start + PRODUCTS_PER_PART]
        images_by_product = _images_of(part)
        extras = planned_outputs.ImageExtras.of(request, images_by_product, storage)
        answers = (dumps(_product_answer(p, images_by_product.get(p.id, []), storage, extras)) for p in part)
        yield (", " if start else "").encode() + ", ".join(answers).encode()
    yield f'], "pagination": {pagination}}}'.encode()


def _has_image_in(status: ImageStatus) -> ColumnElement[bool]:
    """The product (of the enclosing query) has an image in ``status``."""
    return (
        select(ProductImage.id)
        .join(Image, Image.id == ProductImage.image_id)
        .where(ProductImage.product_id == Product.id, Image.status == status)
        .exists()
    )


def _images_of(products: Sequence[Product | Row]) -> dict[int, list[Row]]:
    """Each product's images, in input order: only the columns an answer shows, no ORM objects."""
    if not products:
        return {}
    rows = db.session.execute(
        select(
            ProductImage.product_id,
            Image.id,
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


def _product_answer(
    product: Product, images: list[Row], storage: Storage, extras: planned_outputs.ImageExtras | None = None
) -> dict[str, Any]:
    answers = [_image_answer(image, storage) for image in images]
    if extras is not None:
        for image, answer in zip(images, answers, strict=True):
            answer |= extras.of_image(image.id, answer)
    return {
        "serial_number": product.serial_number,
        **({"product_key": product.key} if product.key is not None else {}),
        "product_name": product.name,
        "status": derive_status([image.status for image in images]),
        "images": answers,
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
