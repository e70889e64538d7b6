"""A request's image pack: every refusal decided from the database first, then the ZIP streamed from storage.

Nothing of the archive is built on disk or in memory: entries are stored (JPEG does not deflate) and
each output is read from storage a chunk at a time as the client takes the archive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import zipstream

from catalog_formats.formats import platform_format
from config import Settings
from errors import ApiError
from image_packs import naming
from intake import csv_records
from models import ImageStatus, Request
from reading import catalog_files, planned_outputs
from reading.output_csv import _product_batches
from storage import Storage

#: How many problems a refusal lists at most.
MAX_LISTED = 100


@dataclass(frozen=True)
class PackEntry:
    name: str
    key: str
    size: int


@dataclass(frozen=True)
class PackRequest:
    naming: str = "plain"
    #: The column naming each product's files; None: the format's key (``S. No.`` for the service's CSV).
    identifier: str | None = None
    #: The rendition packed; None: the one the output file holds.
    rendition: str | None = None


def plan_pack(request: Request, asked: PackRequest, settings: Settings) -> list[PackEntry]:
    """The pack's entries, in product then image order; raises ApiError for anything that would refuse it."""
    position = _rendition_position(request, asked.rendition)
    identifiers = _identifiers(request, asked.identifier)
    entries: list[PackEntry] = []
    names: dict[str, str] = {}
    problems: list[dict[str, str]] = []
    total_bytes = 0
    for products, images_by_product in _product_batches(request):
        renditions = (
            planned_outputs.renditions_of([i.id for images in images_by_product.values() for i in images])
            if position
            else {}
        )
        for product in products:
            identifier = identifiers(product)
            images = images_by_product.get(product.id, [])
            if asked.naming == "amazon":
                problem = naming.amazon_identifier_problem(identifier)
                if problem is None and len(images) > len(naming.AMAZON_SLOTS):
                    problem = f"{len(images)} images; Amazon's slots take {len(naming.AMAZON_SLOTS)} (MAIN, PT01-PT08)"
                if problem is not None:
                    problems.append({"product": identifier or str(product.serial_number), "message": problem})
                    continue
            for number, image in enumerate(images, start=1):
                stored = _stored(image, position, renditions)
                if stored is None:
                    continue
                key, size = stored
                extension = key.rsplit(".", 1)[-1]
                if asked.naming == "amazon":
                    if extension not in naming.AMAZON_EXTENSIONS:
                        problems.append({"product": identifier, "message": f"a .{extension} output; Amazon takes JPEG"})
                        break
                    name = naming.amazon_name(identifier, number, extension)
                    if name in names:
                        problems.append({"product": identifier, "message": f"{name} is also {names[name]}'s"})
                        break
                else:
                    name = _unused(naming.plain_name(identifier, number, extension), names)
                names[name] = identifier
                entries.append(PackEntry(name, key, size))
                total_bytes += size
                _check_bounds(len(entries), total_bytes, settings)
    if problems:
        raise ApiError(
            422,
            "pack_refused",
            f"Amazon's bulk image upload would refuse {len(problems)} of these files; nothing was sent. "
            "Name the files by another column with 'identifier', or use naming=plain.",
            problems[:MAX_LISTED],
        )
    if not entries:
        raise ApiError(409, "pack_empty", "The request has no completed image to pack.")
    return entries


def pack_chunks(entries: list[PackEntry], storage: Storage) -> Iterator[bytes]:
    """The ZIP of ``entries``, a chunk at a time: each output is opened only when the archive reaches it."""
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED)
    for entry in entries:
        archive.add(storage.read_chunks(entry.key), entry.name)
    yield from archive


def _rendition_position(request: Request, asked: str | None) -> int:
    names = planned_outputs.rendition_names(request) or [""]
    wanted = asked if asked is not None else request.output_rendition
    if wanted is None:
        return 0
    if wanted not in names:
        known = ", ".join(name for name in names if name) or "none: the request has a single output per image"
        raise ApiError(
            422,
            "invalid_rendition",
            f"'rendition' names no rendition of this request ({known}), got {wanted[:32]!r}.",
            [{"field": "rendition", "message": f"renditions: {known}"}],
        )
    return names.index(wanted)


def _stored(image, position: int, renditions: dict) -> tuple[str, int] | None:
    if image.status != ImageStatus.COMPLETED or not image.output_key:
        return None
    if position == 0:
        return image.output_key, image.bytes_out or 0
    row = renditions.get(image.id, {}).get(position)
    return (row.output_key, row.bytes_out or 0) if row is not None else None


def _identifiers(request: Request, column: str | None):
    """A function giving each product's identifier: the ``column``'s value, or the product's key."""
    catalog_format = platform_format(request.input_format)
    if column is None:
        if catalog_format is not None:
            return lambda product: product.key or ""
        column = "S. No."
    header = request.csv_header
    delimiter = request.csv_delimiter or ","
    index = csv_records.column_index(header, column, delimiter) if header else None
    if index is None:
        if header is None and csv_records.column_key(column) == "sno":
            return lambda product: str(product.serial_number)
        named = ", ".join(
            repr(csv_records.cell_value(cell)) for cell in csv_records.split_record(header or "", delimiter)
        )
        raise ApiError(
            422,
            "invalid_identifier",
            f"The file has no column {column[:100]!r} to name the images by; its columns are {named[:2000]}.",
            [{"field": "identifier", "message": f"no column {column[:100]!r}"}],
        )
    if catalog_format is not None:
        by_key = catalog_files.values_by_key(request, catalog_format, index)
        return lambda product: by_key.get(product.key or "", "")

    def from_record(product) -> str:
        cells = csv_records.split_record(product.source_record or "")
        return csv_records.cell_value(cells[index]).strip() if index < len(cells) else ""

    return from_record


def _unused(name: str, names: dict[str, str]) -> str:
    if name not in names:
        return name
    stem, extension = name.rsplit(".", 1)
    copy = 2
    while f"{stem}~{copy}.{extension}" in names:
        copy += 1
    return f"{stem}~{copy}.{extension}"


def _check_bounds(files: int, total_bytes: int, settings: Settings) -> None:
    if files > settings.zip_max_files:
        raise ApiError(
            413,
            "pack_too_large",
            f"The pack would hold more than {settings.zip_max_files} files (ZIP_MAX_FILES). "
            "Ask for it with a rendition of fewer images, or download the output CSV.",
        )
    if total_bytes > settings.zip_max_bytes:
        raise ApiError(
            413,
            "pack_too_large",
            f"The pack would hold more than {settings.zip_max_bytes} bytes of images (ZIP_MAX_BYTES).",
        )
