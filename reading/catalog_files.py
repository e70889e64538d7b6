"""A platform's export given back: the file as uploaded, byte for byte, but for its image cells.

``replace`` swaps each image URL for its output's in place (a failed image keeps its source, so a
re-import never loses a picture); ``append`` adds ``Output Image Urls`` instead. Renditions other
than the one chosen for the file are added as columns either way. Records are read a batch at a
time, each batch in a short transaction of its own, like the output CSV of the contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from catalog_formats.formats import CatalogFormat, ImageColumn, platform_format
from catalog_formats.image_cells import replaced, urls_in, written_cell
from intake import csv_input
from intake.csv_records import cell_value, column_index, split_record, without_line_end
from models import Image, ImageStatus, Request, RequestRecord, db
from reading import planned_outputs
from reading.formula_safety import formula_safe
from storage import Storage

RECORDS_PER_BATCH = 500
#: How many URLs one lookup names at most: well under any database's bound on a statement's parameters.
_URLS_PER_LOOKUP = 500


@dataclass(frozen=True)
class OutputChoice:
    """Which rendition (by position) goes into the file's image cells, and which are added as columns."""

    chosen: int
    #: (column name, rendition position), in the order the columns are added.
    added: tuple[tuple[str, int], ...]
    #: The chosen rendition's URLs replace the source URLs in place (``output_mode=replace``).
    replace: bool = False


def output_choice(request: Request) -> OutputChoice:
    """The columns ``request.output_mode`` and ``output_rendition`` ask for: in ``append`` mode the chosen
    rendition's column comes first, named ``Output Image Urls``; every other rendition is ``Output Image Urls (name)``.
    """
    names = planned_outputs.rendition_names(request) or [""]
    chosen = names.index(request.output_rendition) if request.output_rendition in names else 0
    others = tuple((rendition_column(name), position) for position, name in enumerate(names) if position != chosen)
    if request.output_mode == "replace":
        return OutputChoice(chosen, others, replace=True)
    return OutputChoice(chosen, ((csv_input.OUTPUT_COLUMN, chosen), *others))


def rendition_column(name: str) -> str:
    """The added column of a rendition other than the one in ``Output Image Urls``."""
    return f"{csv_input.OUTPUT_COLUMN} ({name})"


@dataclass(frozen=True)
class _Layout:
    delimiter: str
    line_end: str
    images: list[tuple[int, ImageColumn]]
    #: Where each added column goes: the header's own column of that name (an output uploaded again), or None: added.
    added_at: list[int | None]


def _layout(request: Request, catalog_format: CatalogFormat, choice: OutputChoice) -> _Layout:
    delimiter = request.csv_delimiter or ","
    header = request.csv_header or ""
    images = [
        (index, column)
        for column in catalog_format.image_columns
        if (index := column_index(header, column.name, delimiter)) is not None
    ]
    added_at = [column_index(header, name, delimiter) for name, _ in choice.added]
    return _Layout(delimiter, request.csv_line_end or "\r\n", images, added_at)


def catalog_output_lines(request: Request, storage: Storage) -> Iterator[str]:
    """The output file of a request read from a platform's export."""
    catalog_format = platform_format(request.input_format)
    assert catalog_format is not None
    choice = output_choice(request)
    layout = _layout(request, catalog_format, choice)
    header_cells = [formula_safe(cell) for cell in split_record(request.csv_header or "", layout.delimiter)]
    for (name, _), index in zip(choice.added, layout.added_at, strict=True):
        if index is None:
            header_cells.append(written_cell("", name, layout.delimiter))
    db.session.rollback()
    yield ("\ufeff" if request.csv_bom else "") + layout.delimiter.join(header_cells) + layout.line_end
    for records in _record_batches(request):
        outputs = _outputs_of(request, records, layout, choice, storage)
        yield "".join(_output_record(record, layout, choice, outputs) for record in records)


def failed_catalog_lines(request: Request) -> Iterator[str]:
    """The header and the records that hold a failed image, as uploaded, to fix and upload again."""
    catalog_format = platform_format(request.input_format)
    assert catalog_format is not None
    layout = _layout(request, catalog_format, OutputChoice(0, ()))
    header = layout.delimiter.join(
        formula_safe(cell) for cell in split_record(request.csv_header or "", layout.delimiter)
    )
    db.session.rollback()
    yield ("\ufeff" if request.csv_bom else "") + header + layout.line_end
    for records in _record_batches(request):
        failed = _failed_urls(request, [url for record in records for url in _record_urls(record, layout)])
        db.session.rollback()
        yield "".join(
            _safe_record(record, layout.delimiter)
            for record in records
            if any(url in failed for url in _record_urls(record, layout))
        )


def _record_batches(request: Request) -> Iterator[list[str]]:
    request_id = request.id
    last = -1
    while True:
        rows = db.session.execute(
            select(RequestRecord.position, RequestRecord.record)
            .where(RequestRecord.request_id == request_id, RequestRecord.position > last)
            .order_by(RequestRecord.position)
            .limit(RECORDS_PER_BATCH)
        ).all()
        if not rows:
            db.session.rollback()
            return
        last = rows[-1].position
        yield [row.record for row in rows]


def _record_urls(record: str, layout: _Layout) -> list[str]:
    text, _ = without_line_end(record)
    if not text.strip(layout.delimiter + " "):
        return []
    cells = split_record(text, layout.delimiter)
    return [
        url
        for index, column in layout.images
        if index < len(cells)
        for url in urls_in(cell_value(cells[index]), column.kind)
        if url
    ]


def _images_by_url(request: Request, urls: Sequence[str]) -> dict[str, tuple[int, str, str | None]]:
    """The request's images named by ``urls``: URL -> (id, status, output key)."""
    wanted = list(dict.fromkeys(urls))
    found: dict[str, tuple[int, str, str | None]] = {}
    for start in range(0, len(wanted), _URLS_PER_LOOKUP):
        rows = db.session.execute(
            select(Image.source_url, Image.id, Image.status, Image.output_key).where(
                Image.request_id == request.id, Image.source_url.in_(wanted[start : start + _URLS_PER_LOOKUP])
            )
        ).all()
        found.update({row.source_url: (row.id, row.status, row.output_key) for row in rows})
    return found


def _failed_urls(request: Request, urls: Sequence[str]) -> set[str]:
    return {url for url, (_, status, _) in _images_by_url(request, urls).items() if status == ImageStatus.FAILED}


def _outputs_of(
    request: Request, records: list[str], layout: _Layout, choice: OutputChoice, storage: Storage
) -> dict[str, dict[int, str]]:
    """Each image URL of ``records`` -> rendition position -> its output's URL, for completed images only."""
    images = _images_by_url(request, [url for record in records for url in _record_urls(record, layout)])
    positions = {choice.chosen, *(position for _, position in choice.added)}
    renditions = (
        planned_outputs.renditions_of([image_id for image_id, _, _ in images.values()]) if positions != {0} else {}
    )
    db.session.rollback()
    outputs: dict[str, dict[int, str]] = {}
    for url, (image_id, status, output_key) in images.items():
        if status != ImageStatus.COMPLETED or not output_key:
            continue
        by_position = {0: storage.url_for(output_key)}
        for position, row in renditions.get(image_id, {}).items():
            by_position[position] = storage.url_for(row.output_key)
        outputs[url] = by_position
    return outputs


def _output_record(record: str, layout: _Layout, choice: OutputChoice, outputs: dict[str, dict[int, str]]) -> str:
    text, line_end = without_line_end(record)
    if not text.strip(layout.delimiter + " "):
        return record
    cells = [formula_safe(cell) for cell in split_record(text, layout.delimiter)]
    urls: list[str] = []
    for index, column in layout.images:
        value = cell_value(cells[index])
        urls += [url for url in urls_in(value, column.kind) if url]
        if choice.replace:

            def output_or_source(url: str) -> str:
                return outputs.get(url, {}).get(choice.chosen, url)

            new = replaced(value, column.kind, output_or_source)
            if new != value:
                cells[index] = written_cell(cells[index], new, layout.delimiter)
    for (_, position), index in zip(choice.added, layout.added_at, strict=True):
        cell = written_cell("", ",".join(outputs.get(url, {}).get(position, "") for url in urls), layout.delimiter)
        if index is None:
            cells.append(cell)
        else:
            cells[index] = cell
    return layout.delimiter.join(cells) + line_end


def _safe_record(record: str, delimiter: str) -> str:
    text, line_end = without_line_end(record)
    return delimiter.join(formula_safe(cell) for cell in split_record(text, delimiter)) + line_end


def values_by_key(request: Request, catalog_format: CatalogFormat, index: int) -> dict[str, str]:
    """Each product key of the file -> the first non-empty cell its records hold in column ``index``."""
    delimiter = request.csv_delimiter or ","
    header = request.csv_header or ""
    key_indexes = [i for name in catalog_format.key_columns if (i := column_index(header, name, delimiter)) is not None]
    found: dict[str, str] = {}
    for records in _record_batches(request):
        for record in records:
            text, _ = without_line_end(record)
            cells = [cell_value(cell).strip() for cell in split_record(text, delimiter)]
            if index >= len(cells) or not cells[index]:
                continue
            key = next((cells[i] for i in key_indexes if i < len(cells) and cells[i]), "")
            found.setdefault(key, cells[index])
    return found
