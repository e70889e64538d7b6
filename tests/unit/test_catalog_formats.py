"""catalog_formats: which format a header names (formats), the URLs of an image cell and the cell with them
replaced in place (image_cells), and a platform's export read as written (reading.parse_catalog): its products,
its records kept byte for byte, and every refusal with its row and its column as the header spells it."""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog_formats import formats
from catalog_formats.formats import GOOGLE_MERCHANT, SHOPIFY, WOOCOMMERCE, CellKind
from catalog_formats.image_cells import replaced, urls_in, written_cell
from catalog_formats.reading import ParsedCatalog, parse_catalog
from errors import ApiError
from intake.csv_input import CsvLimits
from intake.csv_records import cell_value, split_record, without_line_end

A = "https://img.example.com/a.jpg"
B = "https://img.example.com/b.jpg"
C = "https://img.example.com/c.jpg"
D = "https://img.example.com/d.jpg"
V = "https://img.example.com/variant.jpg"

CONTRACT_TEXT = f'S. No.,Product Name,Input Image Urls\n1,Shoe,{A}\n2,Hat,"{B},{C}"\n'
SHOPIFY_TEXT = f"Handle,Title,Image Src,Image Position\nhat,Hat,{A},1\n"
WOOCOMMERCE_TEXT = f'ID,SKU,Name,Images\n7,LAMP,Lamp,"{A}, {B}"\n'
GOOGLE_TEXT = f"id,title,image_link,additional_image_link\nG1,Shoe,{A},{B}\n"
GOOGLE_TAB_TEXT = f"id\ttitle\timage_link\tadditional_image_link\nG1\tShoe, red\t{A}\t{B},{C}\n"

SLOW = settings(max_examples=150, derandomize=True, database=None, deadline=None)


def parse(
    text: str | bytes,
    input_format: str = formats.AUTO,
    limits: CsvLimits | None = None,
    is_blocked_host: Callable[[str], bool] | None = None,
) -> ParsedCatalog:
    data = text.encode() if isinstance(text, str) else text
    return parse_catalog(data, input_format, limits or CsvLimits(), is_blocked_host)


def refused(
    text: str | bytes,
    input_format: str = formats.AUTO,
    limits: CsvLimits | None = None,
    is_blocked_host: Callable[[str], bool] | None = None,
) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(text, input_format, limits, is_blocked_host)
    return info.value


def row_problems(text: str | bytes, input_format: str = formats.AUTO, **kwargs: object) -> list[dict[str, object]]:
    """The details of a ``csv_invalid_rows`` refusal."""
    error = refused(text, input_format, **kwargs)  # type: ignore[arg-type]
    assert (error.status, error.code) == (422, "csv_invalid_rows"), (error.code, error.message)
    assert error.details
    return error.details


def as_written(parsed: ParsedCatalog) -> str:
    """The file the parse keeps: its header as written, its line ending, then every record as written."""
    assert parsed.records is not None
    return parsed.layout.header_record + parsed.layout.line_end + "".join(parsed.records)


def products(parsed: ParsedCatalog) -> dict[str, tuple[str, ...]]:
    return {str(row.key): row.image_urls for row in parsed.rows}


# --- formats: which format a header names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (["S. No.", "Product Name", "Input Image Urls"], "contract"),
        (["s_no", "PRODUCT NAME", "input-image-urls", "Notes"], "contract"),
        # The contract is tried first, even when a platform's columns are there too.
        (["Handle", "Image Src", "S. No.", "Product Name", "Input Image Urls"], "contract"),
        (["Handle", "Title", "Image Src", "Image Position"], "shopify"),
        (["handle", "image_src"], "shopify"),
        ([" HANDLE ", "Image-SRC"], "shopify"),
        (["ID", "Type", "SKU", "Name", "Images"], "woocommerce"),
        (["SKU", "Images"], "woocommerce"),
        (["id", "title", "image_link"], "google_merchant"),
        (["ID", "Image Link", "Additional Image Link"], "google_merchant"),
        # Google is tried before WooCommerce: id + image_link wins over ID + Images.
        (["id", "image_link", "Images"], "google_merchant"),
    ],
)
def test_recognised_names_the_format_of_a_header(header: list[str], expected: str) -> None:
    assert formats.recognised(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        [],
        [""],
        ["Title", "Image Src"],  # Shopify without its key
        ["Handle", "Image Source"],
        ["Name", "Images"],  # WooCommerce without ID or SKU
        ["title", "image_link"],  # Google without id
        ["id", "image links"],
        ["S. No.", "Product Name"],  # the contract without its URLs
        ["Handle,Image Src"],  # one cell: read with the wrong delimiter
    ],
)
def test_recognised_is_none_for_a_header_that_matches_no_format(header: list[str]) -> None:
    assert formats.recognised(header) is None


def test_input_formats_and_the_order_auto_tries_them() -> None:
    assert formats.INPUT_FORMATS == ("auto", "contract", "shopify", "google_merchant", "woocommerce")
    assert list(formats.PLATFORM_FORMATS.values()) == [SHOPIFY, GOOGLE_MERCHANT, WOOCOMMERCE]


def test_platform_format_is_none_for_the_contract() -> None:
    assert formats.platform_format(None) is None
    assert formats.platform_format("contract") is None
    assert formats.platform_format("shopify") is SHOPIFY
    assert formats.platform_format("woocommerce") is WOOCOMMERCE
    assert formats.platform_format("google_merchant") is GOOGLE_MERCHANT


def test_key_labels() -> None:
    assert (SHOPIFY.key_label, WOOCOMMERCE.key_label, GOOGLE_MERCHANT.key_label) == ("Handle", "ID/SKU", "id")


def test_image_columns_and_their_kinds() -> None:
    assert [(c.name, c.kind, c.max_urls) for c in SHOPIFY.image_columns] == [
        ("Image Src", CellKind.SINGLE, None),
        ("Variant Image", CellKind.SINGLE, None),
    ]
    assert [(c.name, c.kind) for c in WOOCOMMERCE.image_columns] == [("Images", CellKind.LIST)]
    assert [(c.name, c.kind, c.max_urls) for c in GOOGLE_MERCHANT.image_columns] == [
        ("image_link", CellKind.SINGLE, None),
        ("additional_image_link", CellKind.MERCHANT_LIST, 10),
    ]
    assert GOOGLE_MERCHANT.delimiters == (",", "\t")
    assert SHOPIFY.delimiters == WOOCOMMERCE.delimiters == (",",)


def test_matches_needs_every_required_column() -> None:
    assert SHOPIFY.matches({"handle", "imagesrc"})
    assert not SHOPIFY.matches({"handle"})
    assert WOOCOMMERCE.matches({"images"})  # the key is checked apart (recognised asks for one of ID, SKU)


def test_known_formats_sentence_names_each_format_and_its_columns() -> None:
    sentence = formats.known_formats_sentence()
    assert sentence == (
        "the service's CSV (S. No., Product Name, Input Image Urls); "
        "a Shopify product CSV (Handle, Image Src); "
        "a Google Merchant Center feed (id, image_link); "
        "a WooCommerce product CSV (ID or SKU, Images)"
    )


def test_default_output_mode() -> None:
    assert formats.default_output_mode("contract") == "append"
    for name in formats.PLATFORM_FORMATS:
        assert formats.default_output_mode(name) == "replace"


# --- parse_catalog: auto ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "delimiter"),
    [
        (SHOPIFY_TEXT, "shopify", ","),
        (WOOCOMMERCE_TEXT, "woocommerce", ","),
        (GOOGLE_TEXT, "google_merchant", ","),
        (GOOGLE_TAB_TEXT, "google_merchant", "\t"),
        (f"HANDLE,image_src\nhat,{A}\n", "shopify", ","),
        (f"sku,images\nS1,{A}\n", "woocommerce", ","),
        (f"ID\tImage Link\nG1\t{A}\n", "google_merchant", "\t"),
    ],
)
def test_auto_reads_each_platform_by_its_header(text: str, expected: str, delimiter: str) -> None:
    parsed = parse(text)
    assert parsed.input_format == expected
    assert parsed.layout.delimiter == delimiter
    assert parsed.rows and parsed.rows[0].image_urls[0] == A
    assert as_written(parsed) == text


def test_auto_reads_the_contract_csv_as_csv_input_does() -> None:
    parsed = parse(CONTRACT_TEXT)
    assert parsed.input_format == "contract"
    assert parsed.records is None
    assert [(r.serial_number, r.product_name, r.image_urls, r.key) for r in parsed.rows] == [
        (1, "Shoe", (A,), None),
        (2, "Hat", (B, C), None),
    ]


def test_auto_finds_the_header_after_blank_lines() -> None:
    # The contract's reader skips blank lines before the header; auto must place such a file too.
    parsed = parse("\n\r\n , \n" + CONTRACT_TEXT)
    assert parsed.input_format == "contract"
    assert [r.row for r in parsed.rows] == [5, 6]
    assert parse("\r\n\r\n" + GOOGLE_TAB_TEXT).layout.delimiter == "\t"
    assert parse("\n" + SHOPIFY_TEXT).input_format == "shopify"


def test_auto_refuses_a_tab_separated_shopify_file() -> None:
    # Shopify exports commas only: a tab-separated Handle/Image Src header is no format the service reads.
    error = refused(f"Handle\tImage Src\nhat\t{A}\n")
    assert error.code == "csv_missing_columns"
    assert "Shopify product CSV" in error.message


def test_a_header_that_matches_nothing_names_the_formats_it_knows() -> None:
    # The code and details are the contract's for a CSV without its columns; the message names every format.
    error = refused(f"Name,Picture\nShoe,{A}\n")
    assert (error.status, error.code) == (422, "csv_missing_columns")
    for named in ("S. No.", "Shopify product CSV", "Handle", "WooCommerce product CSV", "ID or SKU", "Images"):
        assert named in error.message
    assert "Google Merchant Center feed" in error.message and "image_link" in error.message
    assert "input_format" in error.message
    assert error.details == [
        {"row": 1, "message": f"the header has no column '{name}'"}
        for name in ("S. No.", "Product Name", "Input Image Urls")
    ]


def test_a_header_with_one_contract_column_gets_the_contracts_own_refusal() -> None:
    error = refused(f"Product Name,Notes\nShoe,{A}\n")
    assert (error.code, error.message) == (
        "csv_missing_columns",
        "The CSV has no columns 'S. No.' and 'Input Image Urls'.",
    )


@pytest.mark.parametrize("data", [b"", b"\n\r\n  \n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\r\n"])
def test_an_empty_file_is_csv_empty(data: bytes) -> None:
    error = refused(data)
    assert (error.status, error.code) == (400, "csv_empty")


@pytest.mark.parametrize("input_format", ["shopify", "woocommerce", "google_merchant"])
def test_an_empty_file_named_as_a_platform_is_csv_empty(input_format: str) -> None:
    error = refused(b"\r\n\r\n", input_format)
    assert (error.status, error.code) == (400, "csv_empty")


def test_a_header_alone_is_csv_no_rows() -> None:
    error = refused("Handle,Image Src\r\n\r\n\r\n")
    assert (error.status, error.code) == (422, "csv_no_rows")


def test_a_file_without_any_image_is_csv_no_images() -> None:
    error = refused("Handle,Title,Image Src,Variant Image\ngift,Gift card,,\n")
    assert (error.status, error.code) == (422, "csv_no_images")
    assert "Image Src, Variant Image" in error.message


def test_bytes_that_are_not_utf8_are_refused_before_the_format_is_placed() -> None:
    assert refused(b"Handle,Image Src\nh\xff,x\n").code == "csv_not_utf8"


def test_control_characters_are_refused() -> None:
    assert refused(f"Handle,Image Src\nh\x00,{A}\n".encode()).code == "csv_invalid_characters"


# --- parse_catalog: a named format ---------------------------------------------------------------------


def test_a_named_format_whose_columns_are_missing_is_csv_missing_columns() -> None:
    error = refused(f"Handle,Picture\nh,{A}\n", "shopify")
    assert (error.status, error.code) == (422, "csv_missing_columns")
    assert "'Image Src'" in error.message
    assert error.details == [{"row": 1, "message": "the header has no column 'Image Src'"}]


def test_woocommerce_without_id_or_sku_is_csv_missing_columns() -> None:
    error = refused(f"Name,Images\nLamp,{A}\n", "woocommerce")
    assert error.code == "csv_missing_columns"
    assert "'ID or SKU'" in error.message


def test_a_column_given_twice_is_csv_duplicate_columns() -> None:
    error = refused(f"Handle,Image Src,image_src\nh,{A},{B}\n")
    assert (error.status, error.code) == (422, "csv_duplicate_columns")
    assert error.details == [{"row": 1, "column": "Image Src", "message": "column 'Image Src' is given more than once"}]


def test_an_unused_column_may_be_given_twice() -> None:
    parsed = parse(f"Handle,Image Src,Vendor,Vendor\nh,{A},x,y\n")
    assert products(parsed) == {"h": (A,)}


def test_a_named_format_is_read_as_named() -> None:
    # The header also names the contract's columns; asked for Shopify, the file is read as Shopify.
    text = f"Handle,Image Src,S. No.,Product Name,Input Image Urls\nh,{A},1,Shoe,{B}\n"
    assert parse(text).input_format == "contract"
    parsed = parse(text, "shopify")
    assert parsed.input_format == "shopify"
    assert products(parsed) == {"h": (A,)}


# --- Shopify ----------------------------------------------------------------------------------------------

SHOPIFY_HEADER = "Handle,Title,Image Src,Image Position,Variant Image"


def shopify(*records: str, header: str = SHOPIFY_HEADER, newline: str = "\n") -> str:
    return newline.join([header, *records]) + newline


def test_shopify_rows_are_grouped_by_handle_even_apart() -> None:
    parsed = parse(shopify(f"tee,Tee,{A},1,", f"mug,Mug,{B},1,", f"tee,,{C},2,", f"mug,,{D},2,"))
    assert parsed.input_format == "shopify"
    assert [(r.serial_number, r.key, r.product_name, r.image_urls, r.row) for r in parsed.rows] == [
        (1, "tee", "Tee", (A, C), 2),
        (2, "mug", "Mug", (B, D), 3),
    ]


def test_shopify_handle_is_stripped() -> None:
    parsed = parse(shopify(f" tee ,Tee,{A},1,", f"tee,,{B},2,"))
    assert products(parsed) == {"tee": (A, B)}


def test_shopify_title_comes_from_the_first_row_that_has_one() -> None:
    parsed = parse(shopify(f"tee,,{A},1,", f"tee, Soft tee ,{B},2,", f"tee,Other,{C},3,"))
    assert parsed.rows[0].product_name == "Soft tee"


def test_shopify_title_may_come_from_a_row_without_images() -> None:
    parsed = parse(shopify("tee,Tee,,,", f"tee,,{A},1,"))
    assert (parsed.rows[0].product_name, parsed.rows[0].row) == ("Tee", 2)


def test_a_product_without_a_title_is_named_by_its_handle() -> None:
    assert parse(shopify(f"tee,,{A},1,")).rows[0].product_name == "tee"
    assert parse(f"Handle,Image Src\ntee,{A}\n").rows[0].product_name == "tee"


def test_a_long_title_is_cut_to_the_product_name_limit() -> None:
    parsed = parse(shopify(f"tee,{'x' * 50},{A},1,"), limits=CsvLimits(max_product_name_length=10))
    assert parsed.rows[0].product_name == "x" * 10


def test_shopify_images_follow_image_position_with_empty_positions_after_in_file_order() -> None:
    parsed = parse(shopify(f"tee,Tee,{A},,", f"tee,,{B},3,", f"tee,,{C},,", f"tee,,{D}, 1 ,"))
    assert parsed.rows[0].image_urls == (D, B, A, C)


def test_shopify_positions_compare_as_numbers() -> None:
    parsed = parse(shopify(f"tee,Tee,{A},10,", f"tee,,{B},9,", f"tee,,{C},02,"))
    assert parsed.rows[0].image_urls == (C, B, A)


def test_variant_images_come_after_the_product_images_once_each() -> None:
    parsed = parse(
        shopify(
            f"tee,Tee,{A},1,{V}",  # a variant image that is no product image: after all of them
            f"tee,,{B},2,{A}",  # one that is: not again
            f"tee,,,,{V}",  # the same variant image on another row: once
            f"tee,,{C},3,",
        )
    )
    assert parsed.rows[0].image_urls == (A, B, C, V)


def test_variant_images_follow_each_other_in_file_order() -> None:
    parsed = parse(shopify(f"tee,Tee,{A},2,{D}", f"tee,,{B},1,{C}"))
    assert parsed.rows[0].image_urls == (B, A, D, C)


def test_a_product_of_variant_images_only() -> None:
    parsed = parse(shopify(f"tee,Tee,,,{V}", f"tee,,,,{A}", f"tee,,,,{V}"))
    assert products(parsed) == {"tee": (V, A)}


def test_the_same_image_twice_is_one_image_at_its_first_position() -> None:
    parsed = parse(shopify(f"tee,Tee,{A},2,", f"tee,,{B},1,", f"tee,,{A},3,"))
    assert parsed.rows[0].image_urls == (B, A)


def test_a_product_without_images_is_no_product_but_its_records_are_kept() -> None:
    text = shopify("gift,Gift card,,,", f"tee,Tee,{A},1,", "gift,,,,")
    parsed = parse(text)
    assert [r.key for r in parsed.rows] == ["tee"]
    assert parsed.rows[0].serial_number == 1
    assert parsed.records == ["gift,Gift card,,,\n", f"tee,Tee,{A},1,\n", "gift,,,,\n"]


def test_blank_lines_are_kept_in_the_records_verbatim() -> None:
    text = f"Handle,Image Src\r\n\r\nh1,{A}\r\n\n   \r\n,\r\nh2,{B}\r\n\r\n"
    parsed = parse(text)
    assert parsed.records == ["\r\n", f"h1,{A}\r\n", "\n", "   \r\n", ",\r\n", f"h2,{B}\r\n", "\r\n"]
    assert [(r.key, r.row) for r in parsed.rows] == [("h1", 3), ("h2", 7)]
    assert as_written(parsed) == text


def test_bom_and_crlf_are_kept_in_the_layout() -> None:
    text = shopify(f"tee,Tee,{A},1,", newline="\r\n")
    parsed = parse(codecs.BOM_UTF8 + text.encode())
    assert parsed.layout.bom is True
    assert parsed.layout.header_record == SHOPIFY_HEADER  # without the BOM nor the line ending
    assert parsed.layout.line_end == "\r\n"
    assert parsed.layout.delimiter == ","
    assert parsed.records == [f"tee,Tee,{A},1,\r\n"]


def test_without_bom_and_with_lf() -> None:
    parsed = parse(shopify(f"tee,Tee,{A},1,"))
    assert (parsed.layout.bom, parsed.layout.line_end) == (False, "\n")


def test_a_last_record_without_line_end_is_kept_as_is() -> None:
    text = f"Handle,Image Src\rh1,{A}\rh2,{B}"
    parsed = parse(text)
    assert parsed.layout.line_end == "\r"
    assert parsed.records == [f"h1,{A}\r", f"h2,{B}"]
    assert products(parsed) == {"h1": (A,), "h2": (B,)}


def test_quoted_cells_with_commas_quotes_and_line_breaks() -> None:
    body = '"<p>Soft ""combed"" cotton,\r\nsee <b>this</b></p>"'
    text = (
        "Handle,Title,Body (HTML),Image Src,Image Position\r\n"
        f'tee,"Tee, ""red""\nlarge",{body},"{A}",1\r\n'
        f"tee,,,{B},2\r\n"
        f'"mug, big",Mug,"",{C},\r\n'
    )
    parsed = parse(text)
    assert [(r.key, r.product_name, r.image_urls, r.row) for r in parsed.rows] == [
        ("tee", 'Tee, "red"\nlarge', (A, B), 2),
        ("mug, big", "Mug", (C,), 6),
    ]
    assert parsed.records == [
        f'tee,"Tee, ""red""\nlarge",{body},"{A}",1\r\n',
        f"tee,,,{B},2\r\n",
        f'"mug, big",Mug,"",{C},\r\n',
    ]
    assert as_written(parsed) == text


def test_a_row_without_handle_is_a_problem_in_the_handle_column() -> None:
    details = row_problems(shopify(f"tee,Tee,{A},1,", f",,{B},2,", ",Orphan,,,"))
    assert details == [
        {"row": 3, "column": "Handle", "message": "'Handle' is empty: nothing names this row's product"},
        {"row": 4, "column": "Handle", "message": "'Handle' is empty: nothing names this row's product"},
    ]


def test_columns_are_named_as_the_header_spells_them() -> None:
    details = row_problems(f" handle ,IMAGE SRC,image_position\n,{A},1\nh,ftp://x/a.jpg,x\n")
    assert [(d["row"], d["column"]) for d in details] == [(2, " handle "), (3, "IMAGE SRC"), (3, "image_position")]


@pytest.mark.parametrize("position", ["first", "0", "-1", "1.5", "+2", "1e3", "²", "٣"])
def test_a_bad_image_position_is_a_problem_in_that_column(position: str) -> None:
    details = row_problems(shopify(f"tee,Tee,{A},{position},"))
    assert details == [
        {
            "row": 2,
            "column": "Image Position",
            "message": f"image position must be a whole number from 1: {position!r}",
        }
    ]


def test_an_image_position_without_an_image_is_not_checked() -> None:
    parsed = parse(shopify("tee,Tee,,junk,", f"tee,,{A},1,"))
    assert products(parsed) == {"tee": (A,)}


def test_a_row_with_a_cell_too_many_or_too_few_is_a_problem() -> None:
    details = row_problems(shopify(f"tee,Tee,{A},1,,extra", "mug,Mug"))
    assert details == [
        {"row": 2, "message": "row has 6 cells but the header has 5"},
        {"row": 3, "message": "row has 2 cells but the header has 5"},
    ]


def test_a_bad_url_is_a_problem_in_its_column() -> None:
    details = row_problems(shopify(f"tee,Tee,{A},1,not a url", "mug,Mug,ftp://img.example.com/m.jpg,1,"))
    assert [(d["row"], d["column"]) for d in details] == [(2, "Variant Image"), (3, "Image Src")]


def test_an_unclosed_quote_is_csv_malformed() -> None:
    error = refused(f'Handle,Title,Image Src\ntee,"Tee,{A}\n')
    assert error.code == "csv_malformed"


# --- WooCommerce --------------------------------------------------------------------------------------------

WOO_HEADER = "ID,Type,SKU,Name,Images"


def woo(*records: str) -> str:
    return "\n".join([WOO_HEADER, *records]) + "\n"


def test_woocommerce_is_keyed_by_id_or_by_sku_when_id_is_empty() -> None:
    parsed = parse(woo(f"7,simple,LAMP,Lamp,{A}", f",simple, CHAIR ,Chair,{B}", f" 9 ,simple,,Desk,{C}"))
    assert parsed.input_format == "woocommerce"
    assert [(r.serial_number, r.key, r.product_name, r.image_urls, r.row) for r in parsed.rows] == [
        (1, "7", "Lamp", (A,), 2),
        (2, "CHAIR", "Chair", (B,), 3),
        (3, "9", "Desk", (C,), 4),
    ]


def test_woocommerce_images_are_comma_separated_with_spaces() -> None:
    parsed = parse(woo(f'7,simple,LAMP,Lamp,"{A}, {B} ,{C}"'))
    assert parsed.rows[0].image_urls == (A, B, C)


def test_woocommerce_images_given_twice_are_one() -> None:
    parsed = parse(woo(f'7,simple,LAMP,Lamp,"{A}, {B}, {A}"'))
    assert parsed.rows[0].image_urls == (A, B)


def test_a_duplicate_id_names_its_column_and_first_row() -> None:
    details = row_problems(woo(f"7,simple,A1,Lamp,{A}", f"8,simple,B1,Chair,{B}", f"7,simple,C1,Desk,{C}"))
    assert details == [{"row": 4, "column": "ID", "message": "duplicate ID '7'; first used on row 2"}]


def test_a_duplicate_sku_names_the_sku_column() -> None:
    details = row_problems(woo(f",simple,LAMP,Lamp,{A}", "", f",variation,LAMP,Lamp 2,{B}"))
    assert details == [{"row": 4, "column": "SKU", "message": "duplicate SKU 'LAMP'; first used on row 2"}]


def test_a_duplicate_key_is_a_problem_even_without_images() -> None:
    details = row_problems(woo(f"7,simple,A1,Lamp,{A}", "7,simple,A2,Lamp,"))
    assert details[0]["row"] == 3 and details[0]["column"] == "ID"


@pytest.mark.parametrize(("cell", "number"), [(f'"{A},,{B}"', 2), (f'"{A},"', 2), (f'", {A}"', 1), (f'"{A}, , "', 2)])
def test_an_empty_entry_in_images_is_a_problem(cell: str, number: int) -> None:
    details = row_problems(woo(f"7,simple,LAMP,Lamp,{cell}"))
    assert details[0] == {
        "row": 2,
        "column": "Images",
        "message": f"image URL number {number} is empty (two commas in a row, or one at an end)",
    }


def test_a_woocommerce_row_without_key_or_images_passes_through() -> None:
    text = woo("  ,simple,,Draft,", f"7,simple,LAMP,Lamp,{A}")
    parsed = parse(text)
    assert products(parsed) == {"7": (A,)}
    assert as_written(parsed) == text


def test_a_woocommerce_row_with_images_but_no_key_is_a_problem() -> None:
    details = row_problems(woo(f",simple,,Draft,{A}"))
    assert details == [
        {"row": 2, "column": "ID", "message": "'ID' or 'SKU' is empty: nothing names this row's product"}
    ]


def test_a_woocommerce_file_keyed_by_sku_only() -> None:
    parsed = parse(f"SKU,Name,Images\nLAMP,Lamp,{A}\n")
    assert products(parsed) == {"LAMP": (A,)}


# --- Google Merchant Center -----------------------------------------------------------------------------


def test_an_encoded_comma_stays_inside_its_url() -> None:
    odd = "https://img.example.com/a%2Cb.jpg"
    parsed = parse(f'id,title,image_link,additional_image_link\nG1,Shoe,{A},"{odd},{B}"\n')
    assert parsed.rows[0].image_urls == (A, odd, B)


def test_google_image_link_comes_before_the_additional_ones() -> None:
    parsed = parse(f'id,additional_image_link,image_link\nG1,"{B}, {C}",{A}\n')
    assert parsed.rows[0].image_urls == (A, B, C)


def test_ten_additional_images_are_allowed_eleven_are_not() -> None:
    ten = ",".join(f"https://img.example.com/{n}.jpg" for n in range(10))
    parsed = parse(f'id,image_link,additional_image_link\nG1,{A},"{ten}"\n')
    assert len(parsed.rows[0].image_urls) == 11
    eleven = ten + f",{B}"
    details = row_problems(f'id,image_link,additional_image_link\nG1,{A},"{eleven}"\n')
    assert details == [
        {
            "row": 2,
            "column": "additional_image_link",
            "message": "11 image URLs are given; additional_image_link takes at most 10",
        }
    ]


def test_the_tab_delimiter_is_detected_and_kept() -> None:
    parsed = parse(GOOGLE_TAB_TEXT)
    assert parsed.layout.delimiter == "\t"
    assert parsed.layout.header_record == "id\ttitle\timage_link\tadditional_image_link"
    assert [(r.key, r.product_name, r.image_urls) for r in parsed.rows] == [("G1", "Shoe, red", (A, B, C))]
    assert parse(GOOGLE_TAB_TEXT, "google_merchant").layout.delimiter == "\t"


def test_a_comma_separated_google_file_whose_cells_hold_tabs() -> None:
    text = f'id,title,image_link\nG1,"Shoe\tred",{A}\n'
    parsed = parse(text)
    assert parsed.layout.delimiter == ","
    assert parsed.rows[0].product_name == "Shoe\tred"


def test_duplicate_google_ids_are_a_problem() -> None:
    details = row_problems(f"id\timage_link\nG1\t{A}\nG1\t{B}\n")
    assert details == [{"row": 3, "column": "id", "message": "duplicate id 'G1'; first used on row 2"}]


# --- limits and blocked addresses --------------------------------------------------------------------------


def test_max_rows_counts_rows_not_products_nor_blank_lines() -> None:
    text = shopify(f"tee,Tee,{A},1,", "", f"tee,,{B},2,", "", "")
    assert len(parse(text, limits=CsvLimits(max_rows=2)).rows) == 1
    error = refused(shopify(f"tee,Tee,{A},1,", "", f"tee,,{B},2,", f"tee,,{C},3,"), limits=CsvLimits(max_rows=2))
    assert (error.status, error.code) == (422, "csv_too_many_rows")
    assert error.details == [{"row": 5, "message": "product row 3 is over the limit of 2"}]


def test_max_urls_per_product_counts_distinct_urls() -> None:
    limits = CsvLimits(max_urls_per_product=2)
    parsed = parse(shopify(f"tee,Tee,{A},1,{B}", f"tee,,{B},2,{A}", f"tee,,{A},3,"), limits=limits)
    assert parsed.rows[0].image_urls == (A, B)
    details = row_problems(shopify(f"mug,Mug,{D},1,", f"tee,Tee,{A},1,", f"tee,,{B},2,", f"tee,,,,{C}"), limits=limits)
    assert details == [{"row": 3, "column": "Image Src", "message": "3 image URLs are given for 'tee'; the limit is 2"}]


def test_max_urls_per_product_in_a_woocommerce_cell() -> None:
    details = row_problems(woo(f'7,simple,LAMP,Lamp,"{A},{B},{C}"'), limits=CsvLimits(max_urls_per_product=2))
    assert [(d["row"], d["column"]) for d in details] == [(2, "Images")]


def test_max_url_length() -> None:
    long_url = "https://img.example.com/" + "x" * 40 + ".jpg"
    limits = CsvLimits(max_url_length=len(long_url) - 1)
    details = row_problems(woo(f'7,simple,LAMP,Lamp,"{A}, {long_url}"'), limits=limits)
    assert details == [
        {
            "row": 2,
            "column": "Images",
            "message": f"URL is {len(long_url)} characters long; the limit is {len(long_url) - 1}: {long_url!r}",
        }
    ]
    assert parse(woo(f'7,simple,LAMP,Lamp,"{A}, {long_url}"'), limits=CsvLimits(max_url_length=len(long_url)))


def blocked(host: str) -> bool:
    return host == "10.0.0.1" or host.endswith(".internal")


def test_only_blocked_addresses_is_blocked_address() -> None:
    asked: list[str] = []

    def is_blocked_host(host: str) -> bool:
        asked.append(host)
        return blocked(host)

    text = shopify(f"tee,Tee,{A},1,http://10.0.0.1/x.jpg", "mug,Mug,https://CDN.Internal/m.jpg,1,")
    error = refused(text, is_blocked_host=is_blocked_host)
    assert (error.status, error.code) == (422, "blocked_address")
    assert error.details == [
        {"row": 2, "column": "Variant Image", "message": "address not allowed: 'http://10.0.0.1/x.jpg'"},
        {"row": 3, "column": "Image Src", "message": "address not allowed: 'https://CDN.Internal/m.jpg'"},
    ]
    assert asked == ["img.example.com", "10.0.0.1", "cdn.internal"]


def test_blocked_addresses_with_other_problems_are_csv_invalid_rows() -> None:
    text = shopify(f"tee,Tee,http://10.0.0.1/x.jpg,1,{A}", f"tee,,{B},second,")
    details = row_problems(text, is_blocked_host=blocked)
    assert [(d["row"], d["column"]) for d in details] == [(2, "Image Src"), (3, "Image Position")]
    assert all(set(d) == {"row", "column", "message"} for d in details)


def test_a_file_without_blocked_addresses_is_read() -> None:
    assert parse(GOOGLE_TEXT, is_blocked_host=blocked).rows[0].image_urls == (A, B)


def test_every_problem_is_listed_with_its_row_and_column() -> None:
    text = (
        "ID,SKU,Name,Images\n"
        f'1,,One,"{A},,{B}"\n'
        f",,Two,{C}\n"
        "3,,Three,ftp://img.example.com/3.jpg\n"
        "1,,Again,\n"
        f"5,,Five,http://10.0.0.1/5.jpg\n"
    )
    details = row_problems(text, is_blocked_host=blocked)
    assert [(d["row"], d["column"]) for d in details] == [
        (2, "Images"),
        (3, "ID"),
        (4, "Images"),
        (5, "ID"),
        (6, "Images"),
    ]


# --- the records: the file as uploaded ------------------------------------------------------------------


MESSY = (
    "Handle,Title,Body (HTML),Vendor,Image Src,Image Position,Image Alt Text,Variant Image,Status\r\n"
    "\r\n"
    'red-tee,"Tee, red","<p>Soft ""combed"" cotton,\r\nsee <img src=""x""></p>",Acme,'
    f"{A},2,Back of the tee,{B},active\r\n"
    f'red-tee,,,,  {B}  ,1,"Front\nview",{B},\n'
    "red-tee,,,,,,,,\r\n"
    "   \r\n"
    ",,,,,,,,\n"
    "gift-card,Gift card,<p>No picture</p>,Acme,,,,,active\r"
    f'mug,Mug,"",,"{C}",,"",,draft\r\n'
    '"odd ""handle""",Odd,,,' + f"{D},,,,\r\n"
    "\r\n"
    f"mug,,,,{D},1,,,"
)


def test_a_messy_file_is_kept_byte_for_byte() -> None:
    data = codecs.BOM_UTF8 + MESSY.encode()
    parsed = parse(data)
    assert parsed.input_format == "shopify"
    assert codecs.BOM_UTF8 + as_written(parsed).encode() == data
    assert parsed.layout.line_end == "\r\n"
    assert [(r.key, r.product_name, r.image_urls, r.row) for r in parsed.rows] == [
        ("red-tee", "Tee, red", (B, A), 3),
        ("mug", "Mug", (D, C), 11),
        ('odd "handle"', "Odd", (D,), 12),
    ]
    assert len(parsed.records or []) == 11


def cdn(url: str) -> str:
    return url.replace("https://img.example.com/", "https://cdn.example.net/out/")


def replaced_in_place(parsed: ParsedCatalog, replacement: Callable[[str], str]) -> str:
    """The records with each image cell's URLs replaced, as the output file of ``replace`` mode writes them."""
    delimiter = parsed.layout.delimiter
    header = split_record(parsed.layout.header_record, delimiter)
    catalog_format = formats.PLATFORM_FORMATS[parsed.input_format]
    names = {column.name.lower(): column for column in catalog_format.image_columns}
    columns = {i: names[cell_value(cell).lower()] for i, cell in enumerate(header) if cell_value(cell).lower() in names}
    out = []
    for record in parsed.records or []:
        text, line_end = without_line_end(record)
        if not text.strip(delimiter + " "):
            out.append(record)
            continue
        cells = split_record(text, delimiter)
        for index, column in columns.items():
            value = cell_value(cells[index])
            new = replaced(value, column.kind, replacement)
            if new != value:
                cells[index] = written_cell(cells[index], new, delimiter)
        out.append(delimiter.join(cells) + line_end)
    return "".join(out)


def test_replacing_the_urls_of_the_messy_file_changes_its_image_cells_only() -> None:
    parsed = parse(MESSY)
    assert replaced_in_place(parsed, lambda url: url) == "".join(parsed.records or [])
    expected = MESSY.split("\r\n", 1)[1].replace("https://img.example.com/", "https://cdn.example.net/out/")
    # The HTML body holds no image URL of ours, so every occurrence is an image cell's.
    assert replaced_in_place(parsed, cdn) == expected


def test_replacing_a_google_list_escapes_commas_in_the_new_urls_only() -> None:
    odd = "https://img.example.com/a%2Cb.jpg"
    parsed = parse(f"id\timage_link\tadditional_image_link\r\nG1\t{A}\t {odd} , {B}\r\n")
    out = replaced_in_place(parsed, lambda url: url.replace("img.example.com/", "cdn.example.net/x,"))
    assert out == (
        "G1\thttps://cdn.example.net/x,a.jpg\t https://cdn.example.net/x%2Ca%2Cb.jpg , "
        "https://cdn.example.net/x%2Cb.jpg\r\n"
    )


CELL_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(',"\t\n\r ;|')),
        st.characters(blacklist_categories=("Cs", "Cc")),
    ),
    max_size=12,
)


@st.composite
def exports(draw: st.DrawFn) -> tuple[str, str, dict[str, tuple[str, ...]]]:
    """A Shopify or Google export written by csv.writer: (text, format, each key's image URLs in order)."""
    google = draw(st.booleans())
    delimiter = draw(st.sampled_from(["\t", ","])) if google else ","
    line_end = draw(st.sampled_from(["\r\n", "\n"]))
    header = (
        ["id", "title", "description", "image_link", "additional_image_link"]
        if google
        else ["Handle", "Title", "Body (HTML)", "Image Src", "Image Position", "Variant Image"]
    )
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=line_end)
    writer.writerow(header)
    expected: dict[str, list[tuple[float, int, str]]] = {}
    in_google: dict[str, tuple[str, ...]] = {}
    variants: dict[str, list[str]] = {}
    order = 0

    def cell() -> str:
        text = draw(CELL_TEXT)
        # csv.writer (before Python 3.12) quotes a cell holding "\r" only when "\r" is in the line terminator.
        return text if line_end == "\r\n" else text.replace("\r", "")

    for number in range(draw(st.integers(1, 8))):
        for _ in range(draw(st.integers(0, 2))):
            buffer.write(draw(st.sampled_from(["", " ", delimiter * (len(header) - 1)])) + line_end)
        url = f"https://img.example.com/{draw(st.integers(0, 5))}.jpg"
        if google:
            key = f"G{number}"
            more = [f"https://img.example.com/m{n}.jpg" for n in draw(st.lists(st.integers(0, 5), max_size=3))]
            separator = draw(st.sampled_from([",", ", ", " , "]))
            writer.writerow([key, cell(), cell(), url, separator.join(more)])
            in_google[key] = tuple(dict.fromkeys([url, *more]))
        else:
            key = draw(st.sampled_from(["tee", "mug", "hat-1", "a b"]))
            position = draw(st.one_of(st.none(), st.integers(1, 4)))
            variant = draw(st.sampled_from(["", "", V, A]))
            padding = draw(st.sampled_from(["", " "]))
            writer.writerow([key, cell(), cell(), padding + url, "" if position is None else str(position), variant])
            order += 1
            expected.setdefault(key, []).append((math.inf if position is None else position, order, url))
            if variant:
                variants.setdefault(key, []).append(variant)
    text = buffer.getvalue()
    if draw(st.booleans()):
        text = text.removesuffix(line_end)
    if google:
        return text, "google_merchant", in_google
    ordered = {
        key: tuple(dict.fromkeys([*(u for *_, u in sorted(images)), *variants.get(key, [])]))
        for key, images in expected.items()
    }
    return text, "shopify", ordered


@SLOW
@given(exports())
def test_any_export_is_kept_byte_for_byte(export: tuple[str, str, dict[str, tuple[str, ...]]]) -> None:
    text, input_format, expected = export
    parsed = parse(text)
    assert parsed.input_format == input_format
    assert as_written(parsed) == text
    assert list(products(parsed).items()) == list(expected.items())
    # Replacing each URL by itself gives the records back; by another, only the URLs change.
    assert replaced_in_place(parsed, lambda url: url) == "".join(parsed.records or [])
    new = replaced_in_place(parsed, cdn)
    assert new.replace("https://cdn.example.net/out/", "https://img.example.com/") == "".join(parsed.records or [])


# --- image_cells --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("", CellKind.SINGLE, []),
        ("  \t ", CellKind.SINGLE, []),
        (f"  {A} ", CellKind.SINGLE, [A]),
        (f"{A},{B}", CellKind.SINGLE, [f"{A},{B}"]),  # one URL, commas and all
        ("", CellKind.LIST, []),
        (" ", CellKind.LIST, []),
        (A, CellKind.LIST, [A]),
        (f"{A}, {B} ,{C}", CellKind.LIST, [A, B, C]),
        (f"{A},,{B}", CellKind.LIST, [A, "", B]),
        (f"{A},", CellKind.LIST, [A, ""]),
        (f" , {A}", CellKind.LIST, ["", A]),
        (
            "https://x.example/a%2Cb.jpg, https://x.example/c.jpg",
            CellKind.MERCHANT_LIST,
            [
                "https://x.example/a%2Cb.jpg",
                "https://x.example/c.jpg",
            ],
        ),
        ("", CellKind.MERCHANT_LIST, []),
    ],
)
def test_urls_in(value: str, kind: CellKind, expected: list[str]) -> None:
    assert urls_in(value, kind) == expected


def upper(url: str) -> str:
    return url.upper()


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("a", CellKind.SINGLE, "A"),
        ("  a \t", CellKind.SINGLE, "  A \t"),
        ("a,b", CellKind.SINGLE, "A,B"),
        ("", CellKind.SINGLE, ""),
        ("   ", CellKind.SINGLE, "   "),
        ("a, b ,c", CellKind.LIST, "A, B ,C"),
        ("a,,b", CellKind.LIST, "A,,B"),
        ("a, ,b,", CellKind.LIST, "A, ,B,"),
        ("  a  ,  b  ", CellKind.LIST, "  A  ,  B  "),
        ("  ", CellKind.LIST, "  "),
        ("a%2cb , c", CellKind.MERCHANT_LIST, "A%2CB , C"),
        (" a,b ", CellKind.MERCHANT_LIST, " A,B "),
    ],
)
def test_replaced_keeps_every_separator_and_space(value: str, kind: CellKind, expected: str) -> None:
    assert replaced(value, kind, upper) == expected


def test_replaced_hands_the_replacement_each_url_stripped() -> None:
    seen: list[str] = []

    def record(url: str) -> str:
        seen.append(url)
        return "x"

    assert replaced(" a ,, b%2Cc ,", CellKind.MERCHANT_LIST, record) == " x ,, x ,"
    assert seen == ["a", "b%2Cc"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (CellKind.SINGLE, "https://cdn.example.net/a,b.jpg"),
        (CellKind.LIST, "https://cdn.example.net/a,b.jpg"),
        (CellKind.MERCHANT_LIST, "https://cdn.example.net/a%2Cb.jpg"),
    ],
)
def test_a_comma_in_a_new_url_is_written_percent_2c_in_a_merchant_list_only(kind: CellKind, expected: str) -> None:
    assert replaced(A, kind, lambda url: "https://cdn.example.net/a,b.jpg") == expected


def test_an_old_url_with_percent_2c_is_handed_over_as_written() -> None:
    old = "https://img.example.com/a%2Cb.jpg"
    assert replaced(f"{old},{B}", CellKind.MERCHANT_LIST, lambda url: url + "?v=1") == f"{old}?v=1,{B}?v=1"


@pytest.mark.parametrize(
    ("original", "value", "delimiter", "expected"),
    [
        ("a", "b", ",", "b"),
        ('"a"', "b", ",", '"b"'),  # was quoted: stays quoted
        ('""', "b", "\t", '"b"'),
        ("a", "b,c", ",", '"b,c"'),
        ("a", "b,c", "\t", "b,c"),  # a comma needs no quotes in a tab-separated file
        ("a", "b\tc", "\t", '"b\tc"'),
        ("a", "b\tc", ",", "b\tc"),
        ("a", 'say "hi"', ",", '"say ""hi"""'),
        ('"a"', 'say "hi"', ",", '"say ""hi"""'),
        ("a", "line\nbreak", ",", '"line\nbreak"'),
        ("a", "line\rbreak", "\t", '"line\rbreak"'),
        ("", "", ",", ""),
        ("", " x ", ",", " x "),
    ],
)
def test_written_cell(original: str, value: str, delimiter: str, expected: str) -> None:
    assert written_cell(original, value, delimiter) == expected


WRITTEN_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(list(',"\t\n\r ')), st.characters(blacklist_categories=("Cs", "Cc"))),
    max_size=20,
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(value=WRITTEN_TEXT, delimiter=st.sampled_from([",", "\t"]), was_quoted=st.booleans())
def test_a_written_cell_reads_back_as_its_value(value: str, delimiter: str, was_quoted: bool) -> None:
    cell = written_cell('"old"' if was_quoted else "old", value, delimiter)
    record = delimiter.join(["left", cell, "right"])
    assert [cell_value(c) for c in split_record(record, delimiter)] == ["left", value, "right"]
    assert next(csv.reader(io.StringIO(record, newline=""), delimiter=delimiter, strict=True)) == [
        "left",
        value,
        "right",
    ]


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(value=WRITTEN_TEXT, kind=st.sampled_from(list(CellKind)))
def test_replaced_by_a_new_url_each_is_read_back_as_the_new_urls(value: str, kind: CellKind) -> None:
    assert replaced(value, kind, lambda url: url) == value
    new = replaced(value, kind, lambda url: f"<{url}>")
    assert urls_in(new, kind) == [f"<{url}>" if url else "" for url in urls_in(value, kind)]
