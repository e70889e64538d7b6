"""Refused uploads over real HTTP: the contract's status and error shape, and nothing written or sent.

Every case posts to ``POST /api/upload`` on the running service and checks the answer (status,
``application/json``, exactly ``{"error": {"code", "message", "details"?}}``, the rows and columns the
details name) and that nothing happened: every table's row count is unchanged, no task was handed to
the broker (the API runs in this process, so ``broker.send`` is spied on), and
``GET /api/requests`` still lists nothing. Two positive controls at the end show that the counting
and the spy do see an accepted upload.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.images import jpeg_bytes
from support.loopback import serve

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

HEADER = "S. No.,Product Name,Input Image Urls"
URLS = "Input Image Urls"
SERIAL = "S. No."
NAME = "Product Name"
GOOD_URL = "https://img.example.com/a.jpg"
GOOD_ROW = f"1,SKU1,{GOOD_URL}"
MIB = 1024 * 1024

Send = Callable[[str], requests.Response]


def text_csv(*lines: str, end: str = "\n") -> bytes:
    """The lines joined into a UTF-8 file, each ended by ``end``."""
    return "".join(line + end for line in lines).encode()


def bad_third_line(line: str) -> bytes:
    """A header, one valid product on line 2, and ``line`` as line 3 (so a problem there is row 3)."""
    return text_csv(HEADER, GOOD_ROW, line)


VALID_CSV = text_csv(HEADER, GOOD_ROW, f'2,SKU2,"{GOOD_URL}, https://img.example.com/b.jpg"')


def multipart(csv_bytes: bytes = VALID_CSV, **fields: str) -> Send:
    return lambda base_url: upload(base_url, csv_bytes, **fields)


def raw_post(body: bytes, content_type: str) -> Send:
    return lambda base_url: requests.post(
        f"{base_url}/api/upload", data=body, headers={"Content-Type": content_type}, timeout=30
    )


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def too_many_rows() -> bytes:
    # 10,001 product rows of a tiny valid line: about 250 KB, far under the 10 MiB body limit.
    lines = [HEADER] + [f"{n},P,http://img.example.com/{n}.jpg" for n in range(1, 10_002)]
    return text_csv(*lines)


def oversize_body() -> bytes:
    # 11 MiB of otherwise valid rows: anything but 413 (e.g. csv_too_many_rows) means the limit was missed.
    row = f"1,SKU,{GOOD_URL}\n".encode()
    return HEADER.encode() + b"\n" + row * (11 * MIB // len(row) + 1)


@dataclass(frozen=True)
class Refusal:
    """One refused upload: how to send it and what the answer must be."""

    send: Send
    status: int
    code: str
    # The details exactly, each without its "message" (which must be a non-empty str); None: no details.
    details: list[dict[str, Any]] | None = None
    # Substrings that the message of the detail at the same position must contain.
    detail_messages: list[str] = field(default_factory=list)


def case(send: Send, status: int, code: str, details=None, detail_messages=(), marks=(), id: str = ""):
    return pytest.param(Refusal(send, status, code, details, list(detail_messages)), marks=marks, id=id)


def at(row: int, column: str | None = None) -> dict[str, Any]:
    return {"row": row} if column is None else {"row": row, "column": column}


CASES = [
    # --- the file as a whole -------------------------------------------------------------------
    case(multipart(b""), 400, "csv_empty", id="empty-file"),
    case(multipart(text_csv(HEADER)), 422, "csv_no_rows", id="header-only"),
    case(multipart(b"\xef\xbb\xbf" + text_csv(HEADER, "", "", end="\r\n")), 422, "csv_no_rows", id="bom-header-blanks"),
    case(multipart(b"\n\n\r\n\n"), 400, "csv_empty", id="only-blank-lines"),
    case(
        multipart(text_csv("S. No.,Input Image Urls", f"1,{GOOD_URL}")),
        422,
        "csv_missing_columns",
        [at(1)],
        ["Product Name"],
        id="missing-column",
    ),
    case(
        multipart(text_csv("Product Name,Notes", "SKU1,x")),
        422,
        "csv_missing_columns",
        [at(1), at(1)],
        ["S. No.", "Input Image Urls"],
        id="two-missing-columns",
    ),
    case(
        multipart(text_csv(f"{HEADER},S.No", f"{GOOD_ROW},2")),
        422,
        "csv_duplicate_columns",
        [at(1, "S.No")],
        id="doubled-column",
    ),
    case(multipart(bad_third_line('2,"SKU2,' + GOOD_URL)), 422, "csv_malformed", [at(3)], id="unclosed-quote"),
    # --- S. No. -----------------------------------------------------------------------------------
    *[
        case(multipart(bad_third_line(f"{serial},SKU2,{GOOD_URL}")), 422, "csv_invalid_rows", [at(3, SERIAL)], id=name)
        for name, serial in [
            ("serial-plus-one", "+1"),
            ("serial-1.0", "1.0"),
            ("serial-1e0", "1e0"),
            ("serial-zero", "0"),
            ("serial-minus-one", "-1"),
            ("serial-empty", ""),
            ("serial-abc", "abc"),
            ("serial-fullwidth-digit", "\uff12"),
        ]
    ],
    case(
        multipart(bad_third_line(f"01,SKU2,{GOOD_URL}")),
        422,
        "csv_invalid_rows",
        [at(3, SERIAL)],
        ["first used on row 2"],
        id="duplicate-serial",
    ),
    # --- Product Name -----------------------------------------------------------------------------
    case(multipart(bad_third_line(f"2,   ,{GOOD_URL}")), 422, "csv_invalid_rows", [at(3, NAME)], id="empty-name"),
    # --- Input Image Urls -------------------------------------------------------------------------
    *[
        case(multipart(bad_third_line(f'2,SKU2,"{urls}"')), 422, "csv_invalid_rows", [at(3, URLS)], id=name)
        for name, urls in [
            ("empty-url-entry", "https://img.example.com/a.jpg,,https://img.example.com/b.jpg"),
            ("trailing-comma", "https://img.example.com/a.jpg,"),
            ("no-urls", "  "),
            ("ftp-url", "ftp://img.example.com/a.jpg"),
            ("javascript-url", "javascript:alert(1)"),
            ("relative-url", "/images/a.jpg"),
            ("url-without-scheme", "img.example.com/a.jpg"),
            ("url-without-host", "http:///a.jpg"),
            ("url-with-spaces", "https://img.example.com/a b.jpg"),
            ("url-with-userinfo", "https://user:secret@img.example.com/a.jpg"),
            ("url-port-zero", "https://img.example.com:0/a.jpg"),
            ("url-too-long", "https://img.example.com/" + "a" * (2049 - len("https://img.example.com/"))),
            ("too-many-urls", ",".join(f"https://img.example.com/{n}.jpg" for n in range(51))),
        ]
    ],
    # --- one cell's URLs separated as catalog exports do, not with commas ----------------------------
    *[
        case(
            multipart(bad_third_line(f'2,SKU2,"{urls}"')),
            422,
            "csv_invalid_rows",
            [at(3, URLS)],
            [
                f"2 URLs run together, separated by ';', '|' or white space: {urls.split(',')[-1]!r}; "
                "separate the URLs of one cell with commas"
            ],
            id=name,
        )
        for name, urls in [
            ("urls-joined-by-semicolons", "https://img.example.com/a.jpg;https://img.example.com/b.jpg"),
            ("urls-joined-by-pipes", "https://img.example.com/a.jpg|https://img.example.com/b.jpg"),
            ("urls-joined-by-spaces", "https://img.example.com/a.jpg https://img.example.com/b.jpg"),
            ("urls-joined-by-a-line-break", "https://img.example.com/a.jpg\nhttps://img.example.com/b.jpg"),
            (
                "urls-joined-after-a-comma",
                "https://img.example.com/a.jpg,http://x.example/b.jpg; http://x.example/c.jpg",
            ),
        ]
    ],
    case(
        multipart(text_csv("s no,PRODUCT NAME,Input image URLs", GOOD_ROW, "2,SKU2,ftp://img.example.com/a.jpg")),
        422,
        "csv_invalid_rows",
        [at(3, "Input image URLs")],
        ["ftp://img.example.com/a.jpg"],
        id="column-as-the-file-spells-it",
    ),
    case(
        # BOM, CRLF, a record spanning lines 2-3, a blank line 4: the bad record starts on line 5.
        multipart(
            b"\xef\xbb\xbf" + text_csv(HEADER, f'1,"Two\r\nlines",{GOOD_URL}', "", "2,SKU2,ftp://x/a.jpg", end="\r\n")
        ),
        422,
        "csv_invalid_rows",
        [at(5, URLS)],
        id="rows-count-physical-lines",
    ),
    case(
        multipart(text_csv(HEADER, "0,SKU1,ftp://x/a.jpg", GOOD_ROW.replace("1,", "2,", 1), "3,,https://x/ b")),
        422,
        "csv_invalid_rows",
        [at(2, SERIAL), at(2, URLS), at(4, NAME), at(4, URLS)],
        id="every-problem-at-once",
    ),
    # --- rows and cells ----------------------------------------------------------------------------
    case(multipart(too_many_rows()), 422, "csv_too_many_rows", [at(10_002)], id="too-many-rows"),
    case(multipart(bad_third_line("2,SKU2")), 422, "csv_invalid_rows", [at(3)], id="fewer-cells"),
    case(multipart(bad_third_line(f"2,SKU2,{GOOD_URL},extra")), 422, "csv_invalid_rows", [at(3)], id="more-cells"),
    # --- encoding and characters -----------------------------------------------------------------
    case(
        multipart(text_csv(HEADER, GOOD_ROW) + f"2,Caf\xe9,{GOOD_URL}\n".encode("latin-1")),
        400,
        "csv_not_utf8",
        [at(3)],
        ["0xE9"],
        id="latin-1",
    ),
    case(
        multipart(b"\xef\xbb\xbf" + text_csv(HEADER) + f"1,\xe9,{GOOD_URL}\n".encode("latin-1")),
        400,
        "csv_not_utf8",
        [at(2)],
        ["0xE9"],
        id="bom-then-latin-1",
    ),
    case(multipart(bad_third_line(f"2,SK\x00U2,{GOOD_URL}")), 400, "csv_invalid_characters", [at(3)], id="nul-byte"),
    case(multipart(bad_third_line(f"2,SK\x01U2,{GOOD_URL}")), 400, "csv_invalid_characters", [at(3)], id="control-01"),
    case(multipart(png_bytes()), 400, "csv_not_utf8", [at(1)], ["0x89"], id="png-as-csv"),
    # --- the request itself ------------------------------------------------------------------------
    case(multipart(oversize_body()), 413, "payload_too_large", id="body-11-mib"),
    case(raw_post(json.dumps({"file": HEADER}).encode(), "application/json"), 415, "unsupported_media_type", id="json"),
    case(raw_post(b"file=x", "application/x-www-form-urlencoded"), 415, "unsupported_media_type", id="urlencoded"),
    case(raw_post(VALID_CSV, "text/csv"), 415, "unsupported_media_type", id="bare-csv-body"),
    case(
        lambda base_url: requests.post(
            f"{base_url}/api/upload", files={"csv": ("products.csv", VALID_CSV, "text/csv")}, timeout=30
        ),
        400,
        "missing_file",
        id="multipart-without-file",
    ),
    case(raw_post(VALID_CSV, "multipart/form-data"), 400, "missing_file", id="multipart-without-boundary"),
    # --- options ----------------------------------------------------------------------------------------
    *[
        case(multipart(quality=value), 400, "invalid_quality", id=f"quality-{value}")
        for value in ["0", "96", "abc", "50.5", "-1", "\u0665\u0660"]
    ],
    *[
        case(multipart(max_dimension=value), 400, "invalid_max_dimension", id=f"max-dimension-{value}")
        for value in ["0", "10001", "-5", "1e3"]
    ],
    *[
        case(multipart(webhook_url=value), 400, "invalid_webhook_url", id=name)
        for name, value in [
            ("webhook-ftp", "ftp://hooks.example.com/x"),
            ("webhook-not-a-url", "not a url"),
            ("webhook-no-scheme", "hooks.example.com/x"),
            ("webhook-no-host", "http://"),
            ("webhook-userinfo", "https://user:pw@hooks.example.com/x"),
            ("webhook-bad-port", "https://hooks.example.com:99999/x"),
            ("webhook-port-zero", "https://hooks.example.com:0/x"),
        ]
    ],
    *[
        case(multipart(webhook_url=value), 422, "blocked_address", [{"field": "webhook_url"}], id=name)
        for name, value in [
            ("webhook-metadata-address", "http://169.254.169.254/"),
            ("webhook-private", "http://10.0.0.1/"),
            ("webhook-ipv6-loopback", "http://[::1]:8080/hook"),
        ]
    ],
    # --- one URL rule for the CSV's cells and webhook_url (network_policy.urls) -------------------------
    *[
        case(multipart(bad_third_line(f"2,SKU2,{url}")), 422, "csv_invalid_rows", [at(3, URLS)], [message], id=name)
        for name, url, message in [
            ("rule-csv-bad-host", "https://img$example.com/a.jpg", "URL has an invalid host: "),
            ("rule-csv-userinfo", "https://u@img.example.com/a.jpg", "URL must not contain a user name or password: "),
        ]
    ],
    *[
        # The file has no product rows either: were webhook_url let through, nothing would be fetched or called.
        case(multipart(text_csv(HEADER), webhook_url=value), 400, "invalid_webhook_url", id=name)
        for name, value in [
            ("rule-webhook-bad-host", "https://hooks$example.com/x"),
            ("rule-webhook-only-dots", "https://.../x"),
            ("rule-webhook-del", "https://hooks.example.com/x\x7f"),
            ("rule-webhook-c1-control", "https://hooks.example.com/x\x9fy"),
            ("rule-webhook-too-long", "https://hooks.example.com/" + "a" * (2049 - len("https://hooks.example.com/"))),
        ]
    ],
    # --- image URLs that are IP literals in a blocked range -------------------------------------------
    *[
        case(multipart(bad_third_line(f"2,SKU2,{url}")), 422, "blocked_address", [at(3, URLS)], [url], id=name)
        for name, url in [
            ("image-loopback", "http://127.0.0.1/a.jpg"),
            ("image-ipv6-loopback", "http://[::1]/a.jpg"),
            ("image-decimal-loopback", "http://2130706433/a.jpg"),
            ("image-short-loopback", "http://127.1/a.jpg"),
            ("image-metadata", "http://169.254.169.254/latest/meta-data/"),
            ("image-ipv4-mapped", "http://[::ffff:10.0.0.1]/a.jpg"),
        ]
    ],
    case(
        multipart(text_csv(HEADER, "1,SKU1,http://10.0.0.1/a.jpg", "2,SKU2,http://192.168.1.1/b.jpg")),
        422,
        "blocked_address",
        [at(2, URLS), at(3, URLS)],
        id="image-blocked-on-two-rows",
    ),
    case(
        multipart(text_csv(HEADER, "1,SKU1,http://127.0.0.1/a.jpg", f"+2,SKU2,{GOOD_URL}")),
        422,
        "csv_invalid_rows",
        [at(2, URLS), at(3, SERIAL)],
        id="blocked-and-bad-serial",
    ),
]


def row_counts(service) -> dict[str, int]:
    """Rows in every table an upload could write, read through the API's own engine.

    The sweep's lease row comes and goes with the sweeper, whatever the API does: it is left out.
    """
    from sqlalchemy import func, select

    from models import db

    with service.app.app_context():
        try:
            return {
                table.name: db.session.execute(select(func.count()).select_from(table)).scalar_one()
                for table in db.metadata.sorted_tables
                if table.name != "leases"
            }
        finally:
            db.session.remove()


def listed_requests(service) -> dict[str, Any]:
    response = requests.get(f"{service.base_url}/api/requests", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def sent_tasks(monkeypatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Every task the API hands to the broker during the test (the API runs in this process)."""
    from queueing import broker

    sent: list[tuple[str, tuple[Any, ...]]] = []
    real = broker.send

    def spy(task_name, *args, **options):
        sent.append((task_name, args))
        return real(task_name, *args, **options)

    monkeypatch.setattr(broker, "send", spy)
    return sent


def check_error_answer(response: requests.Response, expected: Refusal) -> None:
    assert response.status_code == expected.status, response.text[:2000]
    assert response.headers["Content-Type"] == "application/json"
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert error["code"] == expected.code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    if expected.details is None:
        assert "details" not in error, error
        return
    details = error["details"]
    assert isinstance(details, list) and details, error
    for detail in details:
        assert isinstance(detail.get("message"), str) and detail["message"].strip(), detail
    assert [{k: v for k, v in d.items() if k != "message"} for d in details] == expected.details, details
    for detail, part in zip(details, expected.detail_messages, strict=False):
        assert part in detail["message"], detail


@pytest.mark.parametrize("refusal", CASES)
def test_refused_upload_writes_and_sends_nothing(service, sent_tasks, refusal: Refusal):
    before = row_counts(service)

    response = refusal.send(service.base_url)

    check_error_answer(response, refusal)
    assert row_counts(service) == before
    assert sent_tasks == []
    listing = listed_requests(service)
    assert listing["requests"] == [] and listing["pagination"]["total"] == 0


# --- positive controls: the same checks do see an accepted upload -----------------------------------


def test_valid_upload_is_accepted_and_counted(service, source_server, sent_tasks):
    first, second = serve(source_server, jpeg_bytes((32, 32))), serve(source_server, jpeg_bytes((32, 32)))
    before = row_counts(service)

    response = upload(service.base_url, csv_of([(1, "SKU1", [first, second]), (2, "SKU2", [second])]))

    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    after = row_counts(service)
    assert after != before
    assert after["requests"] == before["requests"] + 1
    assert after["products"] == before["products"] + 2
    assert after["images"] > before["images"]
    # The upload hands its images straight to the broker (the dispatcher's tick may beat it to some).
    assert {name for name, _ in sent_tasks} <= {"image_tasks.process_image"}
    assert len(sent_tasks) <= 2
    assert [r["request_id"] for r in listed_requests(service)["requests"]] == [request_id]
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED"  # leave no work behind


def test_empty_option_fields_count_as_not_sent(service, source_server, sent_tasks):
    before = row_counts(service)

    response = upload(
        service.base_url,
        csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes((32, 32)))])]),
        quality="",
        max_dimension="",
        webhook_url="",
    )

    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    assert row_counts(service)["requests"] == before["requests"] + 1
    assert {name for name, _ in sent_tasks} <= {"image_tasks.process_image"}
    status = wait_final(service.base_url, request_id)
    assert (status["quality"], status["max_dimension"], status["webhook_url"]) == (50, None, None)
