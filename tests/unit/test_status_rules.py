"""Unit tests for the pure rules in status: derived status, progress, CSV formula guard, pagination."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from models import ImageStatus, RequestStatus, derive_status
from reading import formula_safety
from reading.answers import Page, progress
from reading.formula_safety import neutralize_formula

PENDING = ImageStatus.PENDING
PROCESSING = ImageStatus.PROCESSING
COMPLETED = ImageStatus.COMPLETED
FAILED = ImageStatus.FAILED

# --- derive_status --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 5])
def test_all_pending_is_pending(count: int) -> None:
    assert derive_status([PENDING] * count) == RequestStatus.PENDING


@pytest.mark.parametrize(
    "statuses",
    [
        [PROCESSING],
        [PROCESSING, PROCESSING],
        [PENDING, PROCESSING],
        [PROCESSING, PENDING, PENDING],
        [PENDING, COMPLETED],
        [COMPLETED, PENDING],
        [PENDING, FAILED],
        [PROCESSING, COMPLETED],
        [PROCESSING, FAILED],
        [COMPLETED, FAILED, PENDING],
        [COMPLETED, FAILED, PROCESSING],
        [COMPLETED, COMPLETED, COMPLETED, PROCESSING],
        [FAILED, FAILED, PENDING],
    ],
    ids=lambda statuses: "+".join(s.lower() for s in statuses),
)
def test_started_but_not_all_final_is_processing(statuses: list[str]) -> None:
    assert derive_status(statuses) == RequestStatus.PROCESSING


@pytest.mark.parametrize("count", [1, 2, 5])
def test_all_completed_is_completed(count: int) -> None:
    assert derive_status([COMPLETED] * count) == RequestStatus.COMPLETED


@pytest.mark.parametrize("count", [1, 2, 5])
def test_all_failed_is_failed(count: int) -> None:
    assert derive_status([FAILED] * count) == RequestStatus.FAILED


@pytest.mark.parametrize(
    "statuses",
    [[COMPLETED, FAILED], [FAILED, COMPLETED], [COMPLETED, COMPLETED, FAILED], [FAILED, FAILED, COMPLETED]],
    ids=lambda statuses: "+".join(s.lower() for s in statuses),
)
def test_mixed_final_is_completed_with_errors(statuses: list[str]) -> None:
    assert derive_status(statuses) == RequestStatus.COMPLETED_WITH_ERRORS


def expected_status(statuses: tuple[str, ...]) -> str:
    """The contract's rule, written independently of answers.derive_status."""
    if set(statuses) == {PENDING}:
        return RequestStatus.PENDING
    if PENDING in statuses or PROCESSING in statuses:
        return RequestStatus.PROCESSING
    if set(statuses) == {COMPLETED}:
        return RequestStatus.COMPLETED
    if set(statuses) == {FAILED}:
        return RequestStatus.FAILED
    return RequestStatus.COMPLETED_WITH_ERRORS


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_every_combination_follows_the_contract_rule(length: int) -> None:
    for statuses in itertools.product([PENDING, PROCESSING, COMPLETED, FAILED], repeat=length):
        assert derive_status(list(statuses)) == expected_status(statuses), statuses


def test_plain_strings_are_accepted_like_the_enum() -> None:
    # Image rows hold the statuses as plain strings.
    assert derive_status(["COMPLETED", "FAILED"]) == "COMPLETED_WITH_ERRORS"
    assert derive_status(["PENDING", "PENDING"]) == "PENDING"


# --- progress -------------------------------------------------------------------------------------


def request_like(
    status: str = RequestStatus.PROCESSING, total: int = 3, completed: int = 0, failed: int = 0, cancelled: int = 0
):
    return SimpleNamespace(
        status=status, total_images=total, completed_images=completed, failed_images=failed, cancelled_images=cancelled
    )


def test_progress_reports_counts_and_pending() -> None:
    answer = progress(request_like(total=5, completed=2, failed=1))
    assert answer == {
        "total_images": 5,
        "completed_images": 2,
        "failed_images": 1,
        "pending_images": 2,
        "percent": 60.0,
    }


@pytest.mark.parametrize(
    ("completed", "failed", "total", "percent"),
    [
        (1, 0, 3, 33.3),
        (0, 1, 3, 33.3),
        (2, 0, 3, 66.7),
        (1, 1, 3, 66.7),
        (2, 0, 5, 40.0),
        (0, 0, 7, 0.0),
        (1, 0, 7, 14.3),
        (1, 0, 10_000, 0.0),
        (5, 0, 10_000, 0.1),
    ],
)
def test_progress_percent_has_one_decimal(completed: int, failed: int, total: int, percent: float) -> None:
    answer = progress(request_like(total=total, completed=completed, failed=failed))
    assert answer["percent"] == percent
    assert answer["pending_images"] == total - completed - failed


def test_progress_percent_is_a_float() -> None:
    assert isinstance(progress(request_like(total=4, completed=2))["percent"], float)
    assert isinstance(progress(request_like(total=0))["percent"], float)


@pytest.mark.parametrize(
    ("final_status", "completed", "failed"),
    [
        (RequestStatus.COMPLETED, 3, 0),
        (RequestStatus.FAILED, 0, 3),
        (RequestStatus.COMPLETED_WITH_ERRORS, 2, 1),
        (RequestStatus.COMPLETED, 0, 0),  # a final row is 100.0 whatever its counters say
    ],
)
def test_progress_is_100_when_final(final_status: str, completed: int, failed: int) -> None:
    answer = progress(request_like(status=final_status, total=3, completed=completed, failed=failed))
    assert answer["percent"] == 100.0


@pytest.mark.parametrize("final_status", ["COMPLETED", "FAILED", "COMPLETED_WITH_ERRORS"])
def test_progress_is_100_for_a_final_status_read_back_as_plain_str(final_status: str) -> None:
    answer = progress(request_like(status=final_status, total=3, completed=3))
    assert answer["percent"] == 100.0


@pytest.mark.parametrize("not_final", [RequestStatus.PENDING, RequestStatus.PROCESSING])
def test_progress_is_not_forced_to_100_before_final(not_final: str) -> None:
    assert progress(request_like(status=not_final, total=3, completed=1))["percent"] == 33.3


def test_progress_of_an_empty_request_is_zero() -> None:
    answer = progress(request_like(status=RequestStatus.PENDING, total=0))
    assert answer == {"total_images": 0, "completed_images": 0, "failed_images": 0, "pending_images": 0, "percent": 0.0}


def test_progress_reads_only_the_counters_of_the_row() -> None:
    # A SimpleNamespace without images proves no image rows are counted.
    row = SimpleNamespace(status="PROCESSING", total_images=4, completed_images=1, failed_images=1, cancelled_images=0)
    assert progress(row)["pending_images"] == 2


# --- neutralize_formula ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1",
        '=HYPERLINK("http://evil.example","x")',
        "+1",
        "-1",
        "-2+3",
        "@SUM(A1:A2)",
        "\tleading tab",
        "\rleading CR",
        "\nleading LF",
        "=",
        "@",
    ],
    ids=repr,
)
def test_formula_triggers_get_a_quote(cell: str) -> None:
    assert neutralize_formula(cell) == "'" + cell


@pytest.mark.parametrize(
    "cell",
    [
        "",
        "SKU1",
        "Product name with = inside",
        "a+b",
        "1-2",
        "user@example.com",
        "trailing tab\t",
        " =1+1",  # not at the start
        "'=1+1",  # already quoted
        "https://img.example.com/a.jpg",
        "https://img.example.com/a.jpg,https://img.example.com/b.jpg?x=-1&y=@2",
        "http://host/media/6f1c/1.jpg,,http://host/media/6f1c/3.jpg",
        ",https://img.example.com/b.jpg",  # a failed first image leaves an empty entry first
    ],
    ids=repr,
)
def test_safe_strings_and_urls_are_unchanged(cell: str) -> None:
    assert neutralize_formula(cell) == cell


def test_every_contract_trigger_is_covered() -> None:
    assert set(formula_safety.FORMULA_TRIGGERS) == {"=", "+", "-", "@", "\t", "\r", "\n"}


# --- Page.describe --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "per_page", "pages"),
    [
        (0, 100, 0),
        (0, 1, 0),
        (1, 100, 1),
        (99, 100, 1),
        (100, 100, 1),
        (101, 100, 2),
        (200, 100, 2),
        (201, 100, 3),
        (7, 1, 7),
        (10_000, 1000, 10),
        (10_001, 1000, 11),
        (3, 2, 2),
    ],
)
def test_pages_round_up(total: int, per_page: int, pages: int) -> None:
    assert Page(page=1, per_page=per_page).describe(total)["pages"] == pages


def test_describe_carries_the_page_and_total() -> None:
    answer = Page(page=3, per_page=50).describe(120)
    assert answer == {"page": 3, "per_page": 50, "total": 120, "pages": 3}
    assert all(type(value) is int for value in answer.values())


def test_a_page_past_the_last_is_still_described() -> None:
    assert Page(page=9, per_page=100).describe(2) == {"page": 9, "per_page": 100, "total": 2, "pages": 1}


def test_progress_of_a_cancelled_request_counts_the_cancelled_images_apart() -> None:
    answer = progress(request_like(status=RequestStatus.CANCELLED, total=5, completed=2, failed=1, cancelled=2))
    assert answer == {
        "total_images": 5,
        "completed_images": 2,
        "failed_images": 1,
        "cancelled_images": 2,
        "pending_images": 0,
        "percent": 100.0,
    }


def test_a_product_with_a_cancelled_image_and_none_running_is_cancelled() -> None:
    assert derive_status([COMPLETED, "CANCELLED"]) == RequestStatus.CANCELLED
    assert derive_status([FAILED, "CANCELLED"]) == RequestStatus.CANCELLED
    assert derive_status([PROCESSING, "CANCELLED"]) == RequestStatus.PROCESSING
