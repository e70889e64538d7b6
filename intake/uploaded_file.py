"""What an uploaded file is beside its rows: the name it came with, and what its first bytes say it is."""

from __future__ import annotations

import unicodedata

MAX_FILE_NAME_LENGTH = 255

# Where a ZIP's first entries are named: an Office file says what it is within its first few headers.
_ZIP_SNIFF_BYTES = 64 * 1024
_NOT_A_CSV = "Upload the CSV that lists the products and their image URLs (S. No., Product Name, Input Image Urls)."
_SAVE_AS_CSV = "In your spreadsheet app, save or download it as 'CSV UTF-8' and upload that file."
_XLS = "an Excel 97-2003 workbook (.xls)"
_XLSX = "an Excel workbook (.xlsx)"
_ODS = "an OpenDocument spreadsheet (.ods)"


def clean_file_name(raw: str | None) -> str | None:
    """The name to show back: without any folder, control or formatting character, at most 255 characters."""
    if not raw:
        return None
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cf")).strip()
    return name[:MAX_FILE_NAME_LENGTH] or None


def not_text_message(data: bytes) -> str | None:
    """A sentence for a person when ``data`` (not UTF-8) starts like a known non-CSV file; None otherwise."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "The CSV is saved as UTF-16 text, not UTF-8. Save it as 'CSV UTF-8' and upload it again."
    kind = _kind_of(data)
    if kind is None:
        return None
    advice = _SAVE_AS_CSV if kind in (_XLS, _XLSX, _ODS) else _NOT_A_CSV
    return f"This looks like {kind}, not a CSV file. {advice}"


def _kind_of(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG image"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF image"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "an AVIF image" if brand in (b"avif", b"avis") else "a HEIC image" if brand[:3] == b"hei" else None
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "a TIFF image"
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        return "a BMP image"
    if head.startswith(b"%PDF-"):
        return "a PDF document"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return _XLS
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(data[:_ZIP_SNIFF_BYTES])
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    return None


def _zip_kind(head: bytes) -> str:
    if b"xl/" in head:
        return _XLSX
    if b"application/vnd.oasis.opendocument.spreadsheet" in head:
        return _ODS
    if b"word/" in head:
        return "a Word document (.docx)"
    return "a ZIP archive"
