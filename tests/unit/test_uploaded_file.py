"""An uploaded file's name as shown back, and a non-CSV upload named for what it is."""

from __future__ import annotations

import io
import zipfile

import pytest

from errors import ApiError
from intake.csv_records import decode_text
from intake.uploaded_file import clean_file_name


def _zip(*names: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in names:
            archive.writestr(name, b"\xff" * 64)
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("products.csv", "products.csv"),
        ("/home/me/products.csv", "products.csv"),
        ("C:\\Users\\me\\Spring catalog.csv", "Spring catalog.csv"),
        ("evil\u202egpj.csv", "evilgpj.csv"),
        ("tab\there\x00.csv", "tabhere.csv"),
        ("  ", None),
        ("", None),
        (None, None),
        ("a" * 300 + ".csv", "a" * 255),
    ],
)
def test_the_file_name_is_shown_without_folders_or_control_characters(raw, shown) -> None:
    assert clean_file_name(raw) == shown


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "This looks like a JPEG image, not a CSV file."),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff", "This looks like a PNG image, not a CSV file."),
        (b"GIF89a\x01\x00\x01\x00\x80\xff", "This looks like a GIF image, not a CSV file."),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 \xff", "This looks like a WebP image, not a CSV file."),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "This looks like a PDF document, not a CSV file."),
        (_zip("[Content_Types].xml", "xl/workbook.xml"), "This looks like an Excel workbook (.xlsx), not a CSV"),
        (_zip("notes.bin"), "This looks like a ZIP archive, not a CSV file."),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\xff", "This looks like an Excel 97-2003 workbook (.xls)"),
        ("S. No.,Product Name\n".encode("utf-16"), "The CSV is saved as UTF-16 text, not UTF-8."),
    ],
)
def test_a_known_non_csv_file_is_named_for_what_it_is(data: bytes, named: str) -> None:
    with pytest.raises(ApiError) as raised:
        decode_text(data)

    assert raised.value.code == "csv_not_utf8"
    assert raised.value.message.startswith(named), raised.value.message


def test_a_spreadsheet_is_told_how_to_save_it_as_csv() -> None:
    with pytest.raises(ApiError) as raised:
        decode_text(_zip("[Content_Types].xml", "xl/workbook.xml"))

    assert "save or download it as 'CSV UTF-8'" in raised.value.message


def test_only_a_known_signature_changes_the_row_message() -> None:
    with pytest.raises(ApiError) as latin_1:
        decode_text(b"S. No.,Product Name,Input Image Urls\n1,Caf\xe9,x\n")
    with pytest.raises(ApiError) as image:
        decode_text(b"\xff\xd8\xff\xe0" + b"S. No.,Product Name,Input Image Urls\n1,Caf\xe9,x\n")

    assert latin_1.value.message.startswith("The CSV is not UTF-8 text (the first bad byte is on row 2).")
    assert image.value.message.startswith("This looks like a JPEG image, not a CSV file.")
    assert latin_1.value.details == [{"row": 2, "message": "byte 0xE9 is not valid UTF-8"}]
    assert image.value.details == [{"row": 1, "message": "byte 0xFF is not valid UTF-8"}]
