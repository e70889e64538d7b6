"""Unit tests for csv_input: the upload CSV contract, accepted variants and every error."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Callable

import pytest

from errors import ApiError
from intake import csv_input, csv_records
from intake.csv_input import CsvLimits, ProductRow, parse_csv, parse_rows

HEADER = "S. No.,Product Name,Input Image Urls"
A = "https://img.example.com/a.jpg"
B = "https://img.example.com/b.jpg"
C = "https://img.example.com/c.jpg"


def make_csv(*lines: str, header: str = HEADER, newline: str = "\n") -> bytes:
    """Join a header and lines into UTF-8 CSV bytes."""
    return newline.join([header, *lines]).encode() + newline.encode()


def row(serial: object = 1, name: str = "SKU1", urls: str = A) -> str:
    """One product line with the URL cell quoted."""
    return f'{serial},{name},"{urls}"'


def fail(
    data: bytes,
    limits: CsvLimits | None = None,
    is_blocked_host: Callable[[str], bool] | None = None,
) -> ApiError:
    """Parse data, expecting an ApiError, and return it."""
    with pytest.raises(ApiError) as info:
        parse_rows(data, limits or CsvLimits(), is_blocked_host)
    return info.value


def only_detail(error: ApiError) -> dict[str, object]:
    """The single detail of an error."""
    assert error.details is not None and len(error.details) == 1, error.details
    return error.details[0]


def bad_row(data: bytes, **kwargs: object) -> dict[str, object]:
    """Assert the data fails with csv_invalid_rows and one detail; return it."""
    error = fail(data, **kwargs)  # type: ignore[arg-type]
    assert (error.status, error.code) == (422, "csv_invalid_rows"), error.message
    return only_detail(error)


# --- accepted input -------------------------------------------------------------------------


def test_the_contract_example() -> None:
    data = (
        b"S. No.,Product Name,Input Image Urls\n"
        b'1,SKU1,"https://img.example.com/a.jpg,https://img.example.com/b.jpg,https://img.example.com/c.jpg"\n'
        b'2,SKU2,"https://img.example.com/d.png,https://img.example.com/e.jpg"\n'
    )
    assert parse_rows(data) == [
        ProductRow(1, "SKU1", (A, B, C), 2),
        ProductRow(
            2,
            "SKU2",
            ("https://img.example.com/d.png", "https://img.example.com/e.jpg"),
            3,
        ),
    ]


def test_without_final_newline() -> None:
    assert parse_rows(f"{HEADER}\n{row()}".encode()) == [ProductRow(1, "SKU1", (A,), 2)]


def test_defaults_and_frozen_dataclasses() -> None:
    assert CsvLimits() == CsvLimits(10_000, 50, 2048, 1000)
    product = ProductRow(1, "x", (A,), 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        product.row = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CsvLimits().max_rows = 1  # type: ignore[misc]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_columns_in_any_order(order: tuple[int, ...]) -> None:
    names = ["S. No.", "Product Name", "Input Image Urls"]
    cells = ["7", "SKU7", f'"{A},{B}"']
    data = make_csv(",".join(cells[i] for i in order), header=",".join(names[i] for i in order))
    assert parse_rows(data) == [ProductRow(7, "SKU7", (A, B), 2)]


@pytest.mark.parametrize(
    "header",
    [
        "S.No,Product Name,Input Image Urls",
        " s no ,Product Name,Input Image Urls",
        "S No,PRODUCT NAME,INPUT IMAGE URLS",
        "s_no,product_name,input-image-urls",
        '"S. No.","Product Name","Input Image Urls"',
        "sno , Product  Name , Input Image URLs",
    ],
)
def test_header_spellings(header: str) -> None:
    assert parse_rows(make_csv(row(), header=header)) == [ProductRow(1, "SKU1", (A,), 2)]


def test_extra_columns_are_ignored() -> None:
    data = make_csv(
        f'x,1,note,SKU1,"{A}",,y',
        header="Id,S. No.,Notes,Product Name,Input Image Urls,,Output Image Urls",
    )
    assert parse_rows(data) == [ProductRow(1, "SKU1", (A,), 2)]


def test_byte_order_mark() -> None:
    data = b"\xef\xbb\xbf" + make_csv(row())
    assert parse_rows(data) == [ProductRow(1, "SKU1", (A,), 2)]


def test_crlf_line_ends() -> None:
    data = make_csv(row(1), row(2, "SKU2", f"{A},{B}"), newline="\r\n")
    assert parse_rows(data) == [ProductRow(1, "SKU1", (A,), 2), ProductRow(2, "SKU2", (A, B), 3)]


def test_blank_lines_are_skipped_but_counted() -> None:
    data = f"\n\r\n{HEADER}\n\n{row(1)}\n   \n\n{row(2)}\r\n\r\n{row(3)}\n\n\n".encode()
    assert [(p.serial_number, p.row) for p in parse_rows(data)] == [(1, 5), (2, 8), (3, 10)]


def test_rows_of_only_empty_cells_are_skipped() -> None:
    data = make_csv(row(1), ",,", " , , ", row(2))
    assert [(p.serial_number, p.row) for p in parse_rows(data)] == [(1, 2), (2, 5)]


def test_multiline_quoted_cells_keep_row_numbers_right() -> None:
    data = make_csv(
        f'1,"SKU\n1","{A},\n{B}"',
        "",
        row(2),
        f'3,SKU3,"\n\n{C}\n"',
        row(4),
    )
    products = parse_rows(data)
    assert [(p.serial_number, p.row) for p in products] == [(1, 2), (2, 6), (3, 7), (4, 11)]
    assert products[0].product_name == "SKU\n1"
    assert products[0].image_urls == (A, B)
    assert products[2].image_urls == (C,)


def test_row_numbers_after_a_multiline_error_row() -> None:
    data = make_csv(f'1,"a\nb\nc",{A}', "", row(0))
    detail = bad_row(data)
    assert detail["row"] == 6


@pytest.mark.parametrize(
    ("cell", "number"), [("1", 1), ("01", 1), ("007", 7), (" 3 ", 3), ("9223372036854775807", 2**63 - 1)]
)
def test_serial_numbers_accepted(cell: str, number: int) -> None:
    assert parse_rows(make_csv(row(cell)))[0].serial_number == number


def test_names_and_urls_are_trimmed_and_kept_as_written() -> None:
    urls = f"  {A} ,\t{B},{A}  ,HTTPS://IMG.Example.COM:8443/X.JPG?a=1&b=%20#frag "
    products = parse_rows(make_csv(row(1, '"  Café, “Deluxe” "', urls)))
    assert products[0].product_name == "Café, “Deluxe”"
    assert products[0].image_urls == (A, B, A, "HTTPS://IMG.Example.COM:8443/X.JPG?a=1&b=%20#frag")


def test_tab_inside_a_name_is_allowed() -> None:
    assert parse_rows(make_csv(row(1, '"a\tb"')))[0].product_name == "a\tb"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/",
        "HTTP://EXAMPLE.COM/A.JPG",
        "http://example.com:80/a.jpg",
        "http://example.com:/a.jpg",
        "https://127.0.0.1/a.jpg",
        "http://[::1]/a.jpg",
        "http://[2001:db8::1]:8080/a.jpg",
        "https://bücher.example/a.jpg",
        "https://xn--bcher-kva.example/a.jpg",
        "https://my_host.example.com/a.jpg",
        "https://example.com/a.jpg?size=large&x=[1]#top",
        "https://example.com/path/with@sign.jpg",
        "https://example.com?q=1",
        "https://example.com#f",
    ],
)
def test_valid_urls(url: str) -> None:
    assert parse_rows(make_csv(row(urls=url)))[0].image_urls == (url,)


def test_limits_are_inclusive() -> None:
    limits = CsvLimits(max_rows=3, max_urls_per_product=4, max_url_length=40, max_product_name_length=5)
    url = "https://example.com/" + "x" * 20
    assert len(url) == 40
    data = make_csv(*(row(i, "abcde", ",".join([url] * 4)) for i in range(1, 4)))
    assert len(parse_rows(data, limits)) == 3


def test_ten_thousand_rows_of_fifty_urls() -> None:
    lines = [
        row(i, f"SKU{i}", ",".join(f"https://img.example.com/{i}/{j}.jpg" for j in range(50))) for i in range(1, 10_001)
    ]
    products = parse_rows(make_csv(*lines))
    assert len(products) == 10_000
    assert products[-1] == ProductRow(
        10_000,
        "SKU10000",
        tuple(f"https://img.example.com/10000/{j}.jpg" for j in range(50)),
        10_001,
    )
    assert all(len(p.image_urls) == 50 for p in products)


# --- encoding, characters, emptiness ------------------------------------------------------------


def test_not_utf8_names_the_row() -> None:
    data = make_csv(row(1)) + b'2,Caf\xe9,"' + A.encode() + b'"\n'
    error = fail(data)
    assert (error.status, error.code) == (400, "csv_not_utf8")
    assert only_detail(error)["row"] == 3
    assert "UTF-8" in error.message


def test_not_utf8_row_counts_crlf_and_bom() -> None:
    data = b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n\r\n" + b"1,\xff,x\r\n"
    assert only_detail(fail(data))["row"] == 3


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)) * 4,
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8",
        "S. No.,Product Name,Input Image Urls\n".encode("utf-16"),
        b"\xc0\xaf",  # overlong encoding
        b"\xed\xa0\x80",  # encoded surrogate
    ],
)
def test_binary_and_other_encodings_are_not_utf8(data: bytes) -> None:
    error = fail(data)
    assert (error.status, error.code) == (400, "csv_not_utf8")


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\x00", "U+0000"),
        ("\x01", "U+0001"),
        ("\x08", "U+0008"),
        ("\x0b", "U+000B"),
        ("\x0c", "U+000C"),
        ("\x1b", "U+001B"),
        ("\x1f", "U+001F"),
        ("\x7f", "U+007F"),
        ("\x85", "U+0085"),
        ("\x9f", "U+009F"),
    ],
)
def test_control_characters_are_rejected(char: str, name: str) -> None:
    data = make_csv(row(1), row(2, f"SK{char}U2"), row(3))
    error = fail(data)
    assert (error.status, error.code) == (400, "csv_invalid_characters")
    detail = only_detail(error)
    assert detail["row"] == 3
    assert name in str(detail["message"])


def test_nul_in_the_header_and_several_lines() -> None:
    data = b"S. No.\x00,Product Name,Input Image Urls\n" + b"1,a,\x01\x02\n\n" + b'2,"b\n\x00",x\n'
    error = fail(data)
    assert error.code == "csv_invalid_characters"
    assert [d["row"] for d in error.details or []] == [1, 2, 5]
    assert "3 lines" in error.message


def test_control_character_details_are_capped() -> None:
    data = make_csv(*(f"{i},\x00,x" for i in range(1, 251)))
    error = fail(data)
    assert error.code == "csv_invalid_characters"
    assert len(error.details or []) == 100
    assert "250" in error.message


def test_control_characters_are_checked_before_csv_parsing() -> None:
    data = make_csv('1,"unterminated\x00')
    assert fail(data).code == "csv_invalid_characters"


@pytest.mark.parametrize(
    "data", [b"", b"\n", b"\r\n\r\n\n", b"   \n \t \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n", b",,\n"]
)
def test_empty_file(data: bytes) -> None:
    error = fail(data)
    assert (error.status, error.code) == (400, "csv_empty")


@pytest.mark.parametrize("data", [HEADER.encode(), make_csv(), make_csv("", "  ", ",,", newline="\r\n")])
def test_header_without_rows(data: bytes) -> None:
    error = fail(data)
    assert (error.status, error.code) == (422, "csv_no_rows")


# --- header problems ----------------------------------------------------------------------------


def test_missing_column() -> None:
    error = fail(make_csv("1,http://a.com/x", header="S. No.,Input Image Urls"))
    assert (error.status, error.code) == (422, "csv_missing_columns")
    assert error.message == "The CSV has no column 'Product Name'."


def test_missing_columns_are_all_named() -> None:
    error = fail(make_csv("1,2", header="Serial,Name"))
    assert error.code == "csv_missing_columns"
    for name in ("'S. No.'", "'Product Name'", "'Input Image Urls'"):
        assert name in error.message
    assert len(error.details or []) == 3


def test_missing_column_header_row_after_blank_lines() -> None:
    error = fail(b"\n\nProduct Name,Input Image Urls\nx,y\n")
    assert only_detail(error)["row"] == 3


def test_similar_but_wrong_header_does_not_match() -> None:
    error = fail(make_csv(row(), header="S. No. 2,Product Name,Input Image Url"))
    assert error.code == "csv_missing_columns"
    assert "'S. No.'" in error.message and "'Input Image Urls'" in error.message


def test_doubled_column() -> None:
    error = fail(make_csv("1,a,b,c", header="S. No.,Product Name,S.No,Input Image Urls"))
    assert (error.status, error.code) == (422, "csv_duplicate_columns")
    detail = only_detail(error)
    assert detail["column"] == "S.No"
    assert "'S. No.'" in str(detail["message"]) and "'S.No'" in str(detail["message"])


# --- row problems ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "serial",
    [
        "+1",
        "1.0",
        "1e0",
        "0",
        "00",
        "-1",
        "",
        "  ",
        "abc",
        "1 2",
        "١",
        "²",
        "0x1",
        "9223372036854775808",
        "9" * 5000,
    ],
)
def test_bad_serial_numbers(serial: str) -> None:
    detail = bad_row(make_csv(row(serial)))
    assert detail["row"] == 2
    assert detail["column"] == "S. No."
    if serial.strip():
        assert repr(serial.strip()[:100]) in str(detail["message"])


def test_duplicate_serial_names_the_first_row() -> None:
    data = make_csv(row(1), row(2), "", row("01"), row(2))
    error = fail(data)
    assert error.code == "csv_invalid_rows"
    assert [(d["row"], d["column"]) for d in error.details or []] == [(5, "S. No."), (6, "S. No.")]
    assert "row 2" in str((error.details or [])[0]["message"])
    assert "row 3" in str((error.details or [])[1]["message"])


@pytest.mark.parametrize("name", ["", "   ", '"  "', '" \n "'])
def test_empty_product_name(name: str) -> None:
    detail = bad_row(make_csv(row(1, name)))
    assert detail["column"] == "Product Name"
    assert "empty" in str(detail["message"])


def test_product_name_too_long() -> None:
    detail = bad_row(make_csv(row(1, "n" * 1001)))
    assert detail["column"] == "Product Name"
    assert "1000" in str(detail["message"])


def test_huge_product_name_is_a_row_problem_not_a_parse_failure() -> None:
    detail = bad_row(make_csv(row(1, "n" * 300_000)))
    assert detail["column"] == "Product Name"
    assert len(str(detail["message"])) < 300


@pytest.mark.parametrize(
    "urls",
    [
        "",
        "   ",
        f"{A},,{B}",
        f"{A},",
        f",{A}",
        f"{A}, ,{B}",
    ],
)
def test_empty_url_entries(urls: str) -> None:
    detail = bad_row(make_csv(row(urls=urls)))
    assert detail["column"] == "Input Image Urls"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://x", "not an http(s) URL: 'ftp://x'"),
        ("javascript:alert(1)", "not an http(s) URL"),
        ("mailto:a@example.com", "not an http(s) URL"),
        ("data:image/png;base64", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("a.jpg", "not an http(s) URL"),
        ("/images/a.jpg", "not an http(s) URL"),
        ("//img.example.com/a.jpg", "not an http(s) URL"),
        ("www.example.com/a.jpg", "not an http(s) URL"),
        ("http:/a.jpg", "no host"),
        ("http:a.jpg", "no host"),
        ("http://", "no host"),
        ("https:///a.jpg", "no host"),
        ("http://:80/a.jpg", "no host"),
        ("http://user:pass@example.com/a.jpg", "user name or password"),
        ("http://user@example.com/a.jpg", "user name or password"),
        ("http://@example.com/a.jpg", "user name or password"),
        ("http://example.com:99999/a.jpg", "invalid port"),
        ("http://example.com:abc/a.jpg", "invalid port"),
        ("http://example.com:0/a.jpg", "invalid port"),
        ("http://example.com:-1/a.jpg", "invalid port"),
        ("http://example.com:+80/a.jpg", "invalid port"),
        ("http://[::1/a.jpg", "not a valid URL"),
        ("http://[zz]/a.jpg", "not a valid URL"),
        ("http://exa mple.com/a.jpg", "white space"),
        ("https://example.com/a b.jpg", "white space"),
        ("https://example.com/a\u00a0b.jpg", "white space"),
        ("http://example.com\\evil/a.jpg", "invalid host"),
        ("http://.../a.jpg", "invalid host"),
        ("http://exa<mple.com/a.jpg", "invalid host"),
    ],
)
def test_bad_urls(url: str, words: str) -> None:
    detail = bad_row(make_csv(row(urls=url)))
    assert detail["column"] == "Input Image Urls"
    assert words in str(detail["message"])
    assert repr(url) in str(detail["message"])


def test_url_with_a_line_break_inside_a_quoted_cell() -> None:
    detail = bad_row(make_csv(row(urls="https://example.com/a\nb.jpg")))
    assert "white space" in str(detail["message"])


def test_too_many_urls() -> None:
    detail = bad_row(make_csv(row(urls=",".join([A] * 51))))
    assert detail["column"] == "Input Image Urls"
    assert "51" in str(detail["message"]) and "50" in str(detail["message"])


def test_too_many_urls_custom_limit() -> None:
    detail = bad_row(make_csv(row(urls=f"{A},{B},{C}")), limits=CsvLimits(max_urls_per_product=2))
    assert "limit is 2" in str(detail["message"])


def test_url_too_long_and_quote_is_truncated() -> None:
    url = "https://example.com/" + "x" * 2029
    assert len(url) == 2049
    detail = bad_row(make_csv(row(urls=url)))
    message = str(detail["message"])
    assert "2048" in message
    assert url[:100] in message and url not in message
    assert len(message) < 250


@pytest.mark.parametrize("line", ["2,SKU2", f'2,SKU2,"{A}",extra', "2", f'2,SKU2,"{A}",'])
def test_wrong_number_of_cells(line: str) -> None:
    detail = bad_row(make_csv(row(1), line))
    assert detail["row"] == 3
    assert "column" not in detail
    assert "cells" in str(detail["message"])


def test_all_problems_are_reported_at_once_in_row_order() -> None:
    data = make_csv(
        row(1),
        row("x", "", "ftp://a,"),
        "3,only two",
        "",
        row(1, "ok", f"{A},{B}"),
    )
    error = fail(data)
    assert error.code == "csv_invalid_rows"
    assert [(d["row"], d.get("column")) for d in error.details or []] == [
        (3, "S. No."),
        (3, "Product Name"),
        (3, "Input Image Urls"),
        (3, "Input Image Urls"),
        (4, None),
        (6, "S. No."),
    ]
    assert "6 problems" in error.message
    assert all(set(d) <= {"row", "column", "message"} for d in error.details or [])


def test_column_is_named_as_the_file_spells_it() -> None:
    data = make_csv(row("x", "", "ftp://a"), header=" s no ,PRODUCT NAME,input image URLs")
    error = fail(data)
    assert [d["column"] for d in error.details or []] == [" s no ", "PRODUCT NAME", "input image URLs"]


def test_details_are_capped_at_100() -> None:
    data = make_csv(*(row(i, "", A) for i in range(1, 501)))
    error = fail(data)
    assert error.code == "csv_invalid_rows"
    assert len(error.details or []) == 100
    assert (error.details or [])[-1]["row"] == 101
    assert "500" in error.message and "100" in error.message


# --- limits, malformed CSV ----------------------------------------------------------------------


def test_too_many_rows() -> None:
    data = make_csv(*(row(i) for i in range(1, 5)))
    error = fail(data, CsvLimits(max_rows=3))
    assert (error.status, error.code) == (422, "csv_too_many_rows")
    assert "3" in error.message


def test_too_many_rows_stops_before_reading_the_rest() -> None:
    data = make_csv(row(1), row(2), row(3), '4,"never closed')
    assert fail(data, CsvLimits(max_rows=2)).code == "csv_too_many_rows"


def test_too_many_rows_default_limit() -> None:
    data = make_csv(*(row(i) for i in range(1, 10_002)))
    assert fail(data).code == "csv_too_many_rows"


def test_blank_lines_do_not_count_as_rows() -> None:
    data = make_csv(row(1), "", "", row(2), "")
    assert len(parse_rows(data, CsvLimits(max_rows=2))) == 2


def test_unterminated_quote_at_end_of_file() -> None:
    data = make_csv(row(1), "", f'2,"SKU2,{A}\n3,SKU3,{B}')
    error = fail(data)
    assert (error.status, error.code) == (422, "csv_malformed")
    assert only_detail(error)["row"] == 4


def test_text_after_a_closing_quote_is_malformed() -> None:
    error = fail(make_csv(row(1), f'2,"SKU"2,{A}'))
    assert error.code == "csv_malformed"
    assert only_detail(error)["row"] == 3


def test_malformed_header() -> None:
    error = fail(b'"S. No.,Product Name,Input Image Urls\n')
    assert error.code == "csv_malformed"
    assert only_detail(error)["row"] == 1


def test_stray_quote_inside_an_unquoted_cell_is_literal() -> None:
    assert parse_rows(make_csv(f'1,12" pizza,{A}'))[0].product_name == '12" pizza'


# --- blocked hosts --------------------------------------------------------------------------


def _blocked(host: str) -> bool:
    return host in {"127.0.0.1", "::1", "10.0.0.1"}


def test_blocked_hosts_alone() -> None:
    data = make_csv(row(1, urls=f"{A},http://127.0.0.1/x.jpg"), row(2, urls="http://[::1]:8080/y.jpg"))
    error = fail(data, is_blocked_host=_blocked)
    assert (error.status, error.code) == (422, "blocked_address")
    assert error.details == [
        {"row": 2, "column": "Input Image Urls", "message": "address not allowed: 'http://127.0.0.1/x.jpg'"},
        {"row": 3, "column": "Input Image Urls", "message": "address not allowed: 'http://[::1]:8080/y.jpg'"},
    ]


def test_blocked_hosts_mixed_with_other_problems() -> None:
    data = make_csv(row(1, urls="http://10.0.0.1/x.jpg"), row(2, ""))
    error = fail(data, is_blocked_host=_blocked)
    assert error.code == "csv_invalid_rows"
    assert [str(d["message"]).split(":")[0] for d in error.details or []] == [
        "address not allowed",
        "product name is empty",
    ]


def test_blocked_host_callback_gets_the_bare_lowercase_host() -> None:
    seen: list[str] = []

    def record(host: str) -> bool:
        seen.append(host)
        return False

    urls = "HTTP://IMG.Example.COM:8080/a.jpg,http://[2001:DB8::1]/b.jpg,ftp://x/c,http://u@h/d"
    parse_rows(make_csv(row(1, urls="https://bücher.example/a"), row(2, urls=A)), is_blocked_host=record)
    assert seen == ["bücher.example", "img.example.com"]
    seen.clear()
    fail(make_csv(row(urls=urls)), is_blocked_host=record)
    assert seen == ["img.example.com", "2001:db8::1"]


def test_no_callback_means_nothing_is_blocked() -> None:
    assert parse_rows(make_csv(row(urls="http://127.0.0.1/x.jpg")))[0].image_urls == ("http://127.0.0.1/x.jpg",)


# --- each record as written (the output CSV keeps them) ---------------------------------------


def records_of(data: bytes) -> list[str | None]:
    return [product.source_record for product in parse_csv(data).rows]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_each_record_is_kept_as_written_without_its_line_end(newline: str) -> None:
    lines = [f'007,"Shirt, red","{A},{B}",x', f'8, SKU8 ,{C},"1,299.00"']
    data = make_csv(*lines, header=f'{HEADER},"Variant Price"', newline=newline)
    parsed = parse_csv(data)
    assert records_of(data) == lines
    assert parsed.layout == csv_input.CsvLayout(f'{HEADER},"Variant Price"', newline, False)
    assert [p.serial_number for p in parsed.rows] == [7, 8]


def test_a_quoted_cell_keeps_its_line_breaks_whatever_they_are() -> None:
    first = f'1,"SKU\n1","{A},\r\n{B}"'
    second = f'2,"two\rlines",{C}'
    data = make_csv(first, "", second, row(3), newline="\r\n")
    assert records_of(data) == [first, second, row(3)]
    assert parse_csv(data).layout.line_end == "\r\n"
    assert [p.row for p in parse_csv(data).rows] == [2, 6, 8]


def test_a_cr_only_file_with_line_breaks_in_cells() -> None:
    data = f'{HEADER}\r1,"a\rb",{A}\r\r2,SKU2,"{A},{B}"\r'.encode()
    parsed = parse_csv(data)
    assert records_of(data) == [f'1,"a\rb",{A}', f'2,SKU2,"{A},{B}"']
    assert [(p.serial_number, p.product_name, p.row) for p in parsed.rows] == [(1, "a\rb", 2), (2, "SKU2", 5)]
    assert parsed.layout == csv_input.CsvLayout(HEADER, "\r", False)


def test_blank_lines_and_rows_of_empty_cells_are_not_part_of_any_record() -> None:
    data = f"\n\r\n{HEADER}\n\n{row(1)}\n   \n , , \n\n{row(2)}\r\n\r\n{row(3)}".encode()
    parsed = parse_csv(data)
    assert parsed.layout.header_record == HEADER and parsed.layout.line_end == "\n"
    assert records_of(data) == [row(1), row(2), row(3)]  # the last one had no line end


def test_the_byte_order_mark_is_noted_and_not_part_of_the_header() -> None:
    with_bom = parse_csv(b"\xef\xbb\xbf" + make_csv(row(), header='"S. No.",Product Name,Input Image Urls'))
    without = parse_csv(make_csv(row()))
    assert with_bom.layout == csv_input.CsvLayout('"S. No.",Product Name,Input Image Urls', "\n", True)
    assert without.layout.bom is False
    assert with_bom.rows[0].source_record == row()


def test_the_record_does_not_count_in_equality_and_parse_rows_still_answers_rows() -> None:
    assert ProductRow(1, "x", (A,), 2, "1,x,a") == ProductRow(1, "x", (A,), 2)
    assert parse_rows(make_csv(row())) == parse_csv(make_csv(row())).rows


@pytest.mark.parametrize(
    "record",
    [
        "a,b,c",
        ',"",x,',
        '"a,b","c""d",e',
        '12" pizza,"x""",y',
        ' "a,b" ,c',
        '"line\nbreak","cr\rlf\r\n",""""',
        ",,",
        "=1+2,'x,@y",
    ],
)
def test_split_record_gives_the_cells_as_written(record: str) -> None:
    written = csv_records.split_record(record)
    assert ",".join(written) == record
    assert [csv_records.cell_value(cell) for cell in written] == next(csv.reader(io.StringIO(record, newline="")))


def test_column_index_matches_as_the_required_columns_do() -> None:
    header = 'Handle,"S. No.", output image URLS ,Product Name'
    assert csv_records.column_index(header, csv_input.OUTPUT_COLUMN) == 2
    assert csv_records.column_index(header, "S. No.") == 1
    assert csv_records.column_index(HEADER, csv_input.OUTPUT_COLUMN) is None


def test_an_output_column_given_twice_is_refused() -> None:
    error = fail(make_csv(f"{row()},,", header=f"{HEADER},Output Image Urls,output_image_urls"))
    assert (error.status, error.code) == (422, "csv_duplicate_columns")
    assert only_detail(error)["column"] == "output_image_urls"
