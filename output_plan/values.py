"""The values an output plan's fields take, each read or refused with ``422`` naming its field."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from errors import ApiError
from imaging import canvas, pipeline

MAX_SIDE = 10_000
MAX_BYTES = (1_000, 100_000_000)
MAX_MARGIN = 0.4
DEFAULT_TRIM = 12
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
_NAMED_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0)}


def output_format(value: Any, field: str) -> str:
    name = str(value).strip().lower()
    name = "jpeg" if name == "jpg" else name
    makeable = [name for name in pipeline.OUTPUT_FORMATS if name in pipeline.encodable_formats()]
    if name not in makeable:
        raise invalid(field, f"'{field}' must be one of: {', '.join(makeable)}.")
    return name


def side(value: Any, field: str) -> int:
    return integer(value, field, 1, MAX_SIDE)


def max_bytes(value: Any, field: str) -> int:
    return integer(value, field, *MAX_BYTES)


def integer(value: Any, field: str, low: int, high: int) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise invalid(field, f"'{field}' must be an integer from {low} to {high}, got {text[:40]!r}.")
    return int(text)


def number(value: Any, field: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise invalid(field, f"'{field}' must be a number, got {str(value)[:40]!r}.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise invalid(field, f"'{field}' must be a finite number.")
    return number


def aspect(value: Any, field: str) -> tuple[float, float]:
    parts = str(value).strip().split(":")
    try:
        ratio = tuple(float(part) for part in parts)
    except ValueError:
        ratio = ()
    if len(ratio) != 2 or not all(0 < part <= 100 for part in ratio) or not 0.1 <= ratio[0] / ratio[1] <= 10:
        raise invalid(field, f"'{field}' must be a ratio such as 1:1 or 1:1.44, got {str(value)[:40]!r}.")
    return ratio


def colour(value: Any, field: str) -> tuple[int, int, int]:
    text = str(value).strip().lower()
    if text in _NAMED_COLOURS:
        return _NAMED_COLOURS[text]
    found = _HEX.fullmatch(text)
    if found is None:
        raise invalid(field, f"'{field}' must be a colour such as #ffffff or white, got {text[:40]!r}.")
    digits = found[1] if len(found[1]) == 6 else "".join(digit * 2 for digit in found[1])
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def trim(value: Any, field: str) -> int | None:
    """A tolerance 0..255 (digits are always one: ``1`` is a tolerance of 1), or on (DEFAULT_TRIM) and off."""
    text = str(value).strip().lower()
    if isinstance(value, bool) or not text.isdigit():
        if text in TRUE:
            return DEFAULT_TRIM
        if text in FALSE:
            return None
    return integer(value, field, 0, 255)


def margin(value: Any, field: str) -> float:
    text = str(value).strip()
    share = number(text[:-1], field) / 100 if text.endswith("%") else number(text, field)
    if not 0 <= share <= MAX_MARGIN:
        raise invalid(field, f"'{field}' must be a share of the canvas from 0 to {MAX_MARGIN} (or 0% to 40%).")
    return share


def flag(value: Any, field: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise invalid(field, f"'{field}' must be true or false, got {text[:20]!r}.")


def one_of(value: Any, field: str, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text == "center":
        text = "centre"
    if text not in choices:
        raise invalid(field, f"'{field}' must be one of: {', '.join(choices)}, got {text[:20]!r}.")
    return text


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_option", message, details=[{"field": field, "message": message}])


#: How each canvas or encoding value is read, apart from the others.
READERS: dict[str, Callable[[Any, str], Any]] = {
    "fit": lambda value, field: one_of(value, field, canvas.FITS),
    "gravity": lambda value, field: one_of(value, field, canvas.GRAVITIES),
    "width": side,
    "height": side,
    "max_dimension": side,
    "min_dimension": side,
    "aspect": aspect,
    "background": colour,
    "trim": trim,
    "margin": margin,
    "max_bytes": max_bytes,
    "upscale": lambda value, field: flag(value, field, False),
    "format": output_format,
}
