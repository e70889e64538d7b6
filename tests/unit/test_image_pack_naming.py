"""image_packs.naming: the names of the files in images.zip, Amazon's ``<identifier>.<slot>.<ext>`` (and the
identifiers its bulk upload refuses), or plainly ``<key>_<position>.<ext>`` made safe for any archive tool."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image_packs import naming
from image_packs.naming import amazon_identifier_problem, amazon_name, plain_name


def test_namings_slots_and_extensions() -> None:
    assert naming.NAMINGS == ("amazon", "plain")
    assert naming.AMAZON_SLOTS == ("MAIN", "PT01", "PT02", "PT03", "PT04", "PT05", "PT06", "PT07", "PT08")
    assert sorted(naming.AMAZON_EXTENSIONS) == ["gif", "jpg", "png", "tif"]


# --- Amazon -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["B00EXAMPLE", "abc123", "7", "SKU", "x" * 300])
def test_letters_and_digits_are_an_identifier_amazon_takes(identifier: str) -> None:
    assert amazon_identifier_problem(identifier) is None


@pytest.mark.parametrize(
    "identifier",
    [
        "-",
        "SKU-1",
        "SKU_1",
        "SKU 1",
        "SKU.1",
        " SKU1",
        "SKU1 ",
        "SKU1\n",
        "SKU1\t",
        "SKU/1",
        "SKU+1",
        "Café",  # a letter, but not one Amazon's file names take
        "ＳＫＵ１",  # full-width letters and digit
        "١٢٣",  # Arabic-Indic digits
        "SKU\u200b1",  # zero-width space
    ],
)
def test_anything_but_letters_and_digits_is_refused(identifier: str) -> None:
    problem = amazon_identifier_problem(identifier)
    assert problem == f"{identifier!r} holds characters Amazon refuses in a file name (letters and digits only)"


def test_an_empty_identifier_is_refused() -> None:
    assert amazon_identifier_problem("") == "the identifier is empty"


def test_a_long_refused_identifier_is_quoted_cut() -> None:
    problem = amazon_identifier_problem("A-" * 500)
    assert problem is not None
    assert problem.startswith(repr("A-" * 50) + " holds characters")
    assert len(problem) < 200


@pytest.mark.parametrize(
    ("position", "slot"),
    [
        (1, "MAIN"),
        (2, "PT01"),
        (3, "PT02"),
        (4, "PT03"),
        (5, "PT04"),
        (6, "PT05"),
        (7, "PT06"),
        (8, "PT07"),
        (9, "PT08"),
    ],
)
def test_amazon_name_by_position(position: int, slot: str) -> None:
    assert amazon_name("B00EXAMPLE", position, "jpg") == f"B00EXAMPLE.{slot}.jpg"


def test_amazon_name_keeps_the_identifier_and_extension_as_given() -> None:
    assert amazon_name("sku42", 1, "png") == "sku42.MAIN.png"
    assert amazon_name("SKU42", 9, "tif") == "SKU42.PT08.tif"


@pytest.mark.parametrize("position", [0, -1, 10, 11])
def test_amazon_name_has_no_slot_outside_one_to_nine(position: int) -> None:
    # Position 0 must not wrap round to the last slot (PT08), nor 10 fail with an IndexError.
    with pytest.raises(ValueError, match="positions 1 to 9"):
        amazon_name("B00EXAMPLE", position, "jpg")


# --- plain --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "position", "expected"),
    [
        ("SKU-1", 1, "SKU-1_1.jpg"),
        ("red-tee", 12, "red-tee_12.jpg"),
        ("a+b=c@d(e)[f]-g.h", 2, "a+b=c@d(e)[f]-g.h_2.jpg"),  # what an archive tool takes is kept
        ("Café Olé", 1, "Café_Olé_1.jpg"),  # letters of any script are kept
        ("Cafe\u0301", 1, "Café_1.jpg"),  # NFC: one code point for é
        ("tee/red", 1, "tee_red_1.jpg"),
        ("a\\b", 1, "a_b_1.jpg"),
        ("../../etc/passwd", 1, "etc_passwd_1.jpg"),
        ("C:\\Windows\\x", 1, "C_Windows_x_1.jpg"),
        ("Tee, red", 1, "Tee_red_1.jpg"),  # a run of unsafe characters is one underscore
        ('a*b?c"d<e>f|g', 1, "a_b_c_d_e_f_g_1.jpg"),
        ("a\x00b\tc\nd\x7fe\u200bf\u202eg", 1, "abcdefg_1.jpg"),  # control and format characters go
        (".hidden", 1, "hidden_1.jpg"),
        ("...dots...", 1, "dots_1.jpg"),
        ("__x__", 1, "x_1.jpg"),
        (" x ", 1, "x_1.jpg"),
        ("", 1, "product_1.jpg"),
        ("..", 3, "product_3.jpg"),
        ("/", 1, "product_1.jpg"),
        ("\x00\x01", 1, "product_1.jpg"),
    ],
)
def test_plain_name(key: str, position: int, expected: str) -> None:
    assert plain_name(key, position, "jpg") == expected


def test_plain_name_keeps_the_extension() -> None:
    assert plain_name("SKU1", 3, "webp") == "SKU1_3.webp"


def test_a_long_key_is_cut() -> None:
    assert naming.MAX_NAME_KEY_LENGTH == 100
    assert plain_name("k" * 300, 1, "jpg") == "k" * 100 + "_1.jpg"
    assert plain_name("k" * 100, 1, "jpg") == "k" * 100 + "_1.jpg"
    assert plain_name("/" + "k" * 99 + "/", 1, "jpg") == "k" * 99 + "_1.jpg"


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(key=st.text(max_size=150), position=st.integers(1, 50))
def test_a_plain_name_is_always_one_safe_file_name(key: str, position: int) -> None:
    name = plain_name(key, position, "jpg")
    suffix = f"_{position}.jpg"
    assert name.endswith(suffix)
    stem = name.removesuffix(suffix)
    assert 0 < len(stem) <= naming.MAX_NAME_KEY_LENGTH
    assert not stem.startswith((".", "_"))
    assert "/" not in name and "\\" not in name and ":" not in name
    assert all(unicodedata.category(char)[0] not in "CZ" for char in name)
    assert unicodedata.normalize("NFC", name) == name
