"""How a pack names each image: Amazon's ``<identifier>.<slot>.<ext>``, or plainly ``<key>_<position>.<ext>``."""

from __future__ import annotations

import re
import unicodedata

NAMINGS = ("amazon", "plain")
#: Amazon's image slots by position in the product: the main image, then eight others (its bulk upload's codes).
AMAZON_SLOTS = ("MAIN", *(f"PT{number:02d}" for number in range(1, 9)))
#: Amazon takes JPEG, PNG, GIF and TIFF files only (of the outputs the service makes: JPEG).
AMAZON_EXTENSIONS = frozenset({"jpg", "png", "gif", "tif"})

# Amazon refuses a name with a dash, an underscore, a space or any other mark: letters and digits only.
_AMAZON_IDENTIFIER_RE = re.compile(r"[A-Za-z0-9]+")
_UNSAFE_IN_NAME_RE = re.compile(r"[^\w.+=@()\[\]-]+")
MAX_NAME_KEY_LENGTH = 100


def amazon_identifier_problem(identifier: str) -> str | None:
    """Why Amazon's bulk upload would refuse a file named by ``identifier``; None if it would not."""
    if not identifier:
        return "the identifier is empty"
    if _AMAZON_IDENTIFIER_RE.fullmatch(identifier) is None:
        return f"{identifier[:100]!r} holds characters Amazon refuses in a file name (letters and digits only)"
    return None


def amazon_name(identifier: str, position: int, extension: str) -> str:
    """``B00EXAMPLE.MAIN.jpg`` for the first image, ``.PT01`` for the second, and so on; position from 1."""
    if not 1 <= position <= len(AMAZON_SLOTS):
        raise ValueError(f"Amazon's slots take positions 1 to {len(AMAZON_SLOTS)}, not {position}")
    return f"{identifier}.{AMAZON_SLOTS[position - 1]}.{extension}"


def plain_name(key: str, position: int, extension: str) -> str:
    """``<key>_<position>.<ext>``, the key made safe as a file name in any archive tool (no folders, no controls)."""
    cleaned = "".join(char for char in unicodedata.normalize("NFC", key) if unicodedata.category(char)[0] != "C")
    safe = _UNSAFE_IN_NAME_RE.sub("_", cleaned).strip("._") or "product"
    return f"{safe[:MAX_NAME_KEY_LENGTH]}_{position}.{extension}"
