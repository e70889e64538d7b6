"""Cells a spreadsheet would run as a formula, written so that it shows them as text (OWASP CSV injection)."""

from __future__ import annotations

from intake import csv_records

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
#: What makes a cell need quotes, as csv.writer's minimal quoting decides with our dialect.
_QUOTE_WHEN = (",", '"', "\r", "\n")


def neutralize_formula(cell: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would run as a formula."""
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def formula_safe_cells(record: str, delimiter: str = ",") -> list[str]:
    """The cells of a record as written, only those a spreadsheet would run as a formula written anew."""
    return [formula_safe(written) for written in csv_records.split_record(record, delimiter)]


def formula_safe(written: str) -> str:
    """One cell as written, written anew (neutralized, quoted) only if a spreadsheet would run it as a formula."""
    value = csv_records.cell_value(written)
    return csv_cell(neutralize_formula(value)) if value.startswith(FORMULA_TRIGGERS) else written


def csv_cell(value: str) -> str:
    """``value`` as one CSV cell, quoted only when it must be (csv.writer's minimal quoting)."""
    if any(special in value for special in _QUOTE_WHEN):
        return '"' + value.replace('"', '""') + '"'
    return value
