"""The URLs of one image cell, where they stand in it, and the cell with each URL replaced in place."""

from __future__ import annotations

from collections.abc import Callable

from catalog_formats.formats import CellKind


def urls_in(value: str, kind: CellKind) -> list[str]:
    """The URLs a cell holds, in order, each stripped; an empty entry of a list is kept as ``""``."""
    if not value.strip():
        return []
    if kind is CellKind.SINGLE:
        return [value.strip()]
    return [entry.strip() for entry in value.split(",")]


def replaced(value: str, kind: CellKind, replacement: Callable[[str], str]) -> str:
    """``value`` with each URL swapped for ``replacement(url)``, every separator and space kept as written."""
    if not value.strip():
        return value
    if kind is CellKind.SINGLE:
        return _swapped(value, replacement)
    escape = kind is CellKind.MERCHANT_LIST
    return ",".join(_swapped(entry, replacement, escape) for entry in value.split(","))


def _swapped(entry: str, replacement: Callable[[str], str], escape_commas: bool = False) -> str:
    url = entry.strip()
    if not url:
        return entry
    new = replacement(url)
    if escape_commas:
        new = new.replace(",", "%2C")
    start = entry.index(url)
    return entry[:start] + new + entry[start + len(url) :]


def written_cell(original: str, value: str, delimiter: str) -> str:
    """``value`` as a cell in place of the cell ``original`` (as written): quoted if that was, or if it must be."""
    if original.startswith('"') or any(special in value for special in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value
