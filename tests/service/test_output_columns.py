"""The output CSV is the upload with its output column, and the per-image report, over HTTP with a real worker.

Every expected file is built here from the bytes uploaded and the status API's output URLs, so a
test fails on any byte the service changes that it should have kept.
"""

from __future__ import annotations

import csv
import io
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.images import jpeg_bytes, png_with_alpha
from support.loopback import serve, wait_until

from intake.csv_input import ProductRow
from lifecycle import creation
from models import db
from reading import formula_safety, output_csv, report_csv

BOM = b"\xef\xbb\xbf"


def missing(source_server) -> str:
    return source_server.url(f"/columns/{uuid.uuid4().hex}/missing.jpg")  # the server's default: 404


def output_cell(product: dict) -> str:
    """The cell the service should add: the output URLs joined, a failed one empty, quoted if it has a comma."""
    joined = ",".join(image["output_url"] or "" for image in product["images"])
    return f'"{joined}"' if "," in joined else joined


def processed(service, csv_bytes: bytes) -> tuple[dict, bytes]:
    """Upload, wait for the final status, and fetch the output CSV's bytes."""
    created = upload(service.base_url, csv_bytes)
    assert created.status_code == 202, created.text
    final = wait_final(service.base_url, created.json()["request_id"])
    output = requests.get(final["output_csv_url"], timeout=10)
    assert output.status_code == 200, output.text
    assert output.headers["Content-Type"] == "text/csv; charset=utf-8"
    return final, output.content


# --- unit: the cells the service writes ---------------------------------------------------------


@pytest.mark.parametrize("value", ["", "plain", "a,b", 'say "hi"', "two\nlines", "cr\r", " padded ", "'=x"])
def test_a_written_cell_is_quoted_exactly_when_csv_writer_would(value: str) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(["x", value])
    assert "x," + formula_safety.csv_cell(value) + "\r\n" == buffer.getvalue()


def test_a_record_keeps_its_bytes_but_for_cells_a_spreadsheet_would_run() -> None:
    record = ' 007 ,"Shirt, red","http://a/1.jpg","=1+2",-5,"x""y",@me,"\tpad",ok'
    kept = output_csv._kept_record(record, [None], None, ["http://o/1.jpg,http://o/2.jpg"])
    assert (
        kept
        == ' 007 ,"Shirt, red","http://a/1.jpg",\'=1+2,\'-5,"x""y",\'@me,\'\tpad,ok,"http://o/1.jpg,http://o/2.jpg"'
    )
    assert output_csv._kept_record("a,Output Image Urls,b", [1], None, ["http://o/1.jpg"]) == "a,http://o/1.jpg,b"
    header = ["Output Image Urls"]
    assert output_csv._kept_record('"S. No.",Output Image Urls', [1], header) == '"S. No.",Output Image Urls'
    assert output_csv._kept_record('"S. No.",=Name', [None], header) == '"S. No.",\'=Name,Output Image Urls'


# --- the output CSV -------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_a_shopify_export_comes_back_byte_for_byte_with_one_column_added(service, source_server):
    red, blue = serve(source_server, jpeg_bytes((320, 240))), serve(source_server, png_with_alpha(), "image/png")
    gone = missing(source_server)
    header = 'Handle,S. No.,Product Name,Input Image Urls,SKU,"Variant Price",Vendor'
    records = [
        f'shirt-red,007,"Shirt, red","{red},{blue}",SKU-007,"1,299.00","Acme ""Best"""',
        f"mug,008, Mug ,{gone},SKU-8,12.50,",
        f'"poster",10,Poster,"{red}, {gone}",P-10,"0.99",Acme',
    ]
    upload_bytes = BOM + "\r\n".join([header, *records, ""]).encode()

    final, output = processed(service, upload_bytes)

    assert final["status"] == "COMPLETED_WITH_ERRORS"
    assert [p["serial_number"] for p in final["products"]] == [7, 8, 10]
    expected = [f"{header},Output Image Urls"] + [
        f"{record},{output_cell(product)}" for record, product in zip(records, final["products"], strict=True)
    ]
    assert output == BOM + "\r\n".join([*expected, ""]).encode()
    # What that means, read back: the extra columns are there, the output column last.
    rows = list(csv.reader(io.StringIO(output.decode("utf-8-sig"))))
    columns = "Handle,S. No.,Product Name,Input Image Urls,SKU,Variant Price,Vendor,Output Image Urls"
    assert rows[0] == columns.split(",")
    assert rows[1][1] == "007" and rows[1][5] == "1,299.00" and rows[1][6] == 'Acme "Best"'
    assert rows[2][7] == ""  # its only image failed
    assert rows[3][7].split(",") == [final["products"][2]["images"][0]["output_url"], ""]


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_lf_a_line_break_in_a_cell_and_formula_cells_in_extra_columns(service, source_server):
    image = serve(source_server, jpeg_bytes((64, 48)))
    header = "S. No.,Product Name,Input Image Urls,Notes,@Formula"
    records = [
        f'1,Lamp,"{image}","two\nlines, and a CRLF\r\nin one cell",plain',
        f'2,Desk,{image},"=HYPERLINK(""http://evil.example"",""click"")",-5',
    ]
    # No line end after the last record: the output ends every record with the file's line end.
    upload_bytes = "\n".join([header, *records]).encode()

    final, output = processed(service, upload_bytes)

    assert final["status"] == "COMPLETED"
    url = final["products"][0]["images"][0]["output_url"]
    assert url == final["products"][1]["images"][0]["output_url"]  # one URL, downloaded once
    assert output.decode() == (
        "S. No.,Product Name,Input Image Urls,Notes,'@Formula,Output Image Urls\n"
        f"{records[0]},{url}\n"
        f'2,Desk,{image},"\'=HYPERLINK(""http://evil.example"",""click"")",\'-5,{url}\n'
    )
    rows = list(csv.reader(io.StringIO(output.decode())))
    assert rows[1][3] == "two\nlines, and a CRLF\r\nin one cell"
    assert rows[2][3:5] == ['\'=HYPERLINK("http://evil.example","click")', "'-5"]


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_an_output_uploaded_again_gets_its_output_column_filled_in_where_it_stands(service, source_server):
    image = serve(source_server, jpeg_bytes((64, 48)))
    header = "S. No.,Product Name,Input Image Urls,output image urls,Notes"
    records = [f"1,A,{image},http://old.example/1.jpg,keep me", f"2,B,{image},,also kept"]
    final, output = processed(service, ("\r".join([header, *records]) + "\r").encode())

    url = final["products"][0]["images"][0]["output_url"]
    assert output.decode() == f"{header}\r1,A,{image},{url},keep me\r2,B,{image},{url},also kept\r"


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables", "import_every_upload")
def test_a_big_upload_left_to_the_import_keeps_its_columns_too(service, source_server):
    urls = [serve(source_server, jpeg_bytes((40 + n, 30))) for n in range(4)]
    header = "Handle,S. No.,Product Name,Input Image Urls,Variant Price"
    records = [
        f'h-1,001,"One, first","{urls[0]},{urls[1]}","1,000"',
        f'h-2,002,"Two\nlines","{urls[2]},{urls[3]},{urls[0]}",2',
    ]
    upload_bytes = BOM + "\r\n".join([header, *records, ""]).encode()

    final, output = processed(service, upload_bytes)

    assert final["status"] == "COMPLETED" and final["importing"] is False
    expected = [f"{header},Output Image Urls"] + [
        f"{record},{output_cell(product)}" for record, product in zip(records, final["products"], strict=True)
    ]
    assert output == BOM + "\r\n".join([*expected, ""]).encode()


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_the_three_column_upload_still_gives_the_four_columns(service, source_server):
    image = serve(source_server, jpeg_bytes((64, 48)))
    final, output = processed(service, csv_of([(1, "SKU1", [image, image]), (2, "=SKU2", [image])]))
    url = final["products"][0]["images"][0]["output_url"]
    assert output.decode() == (
        "S. No.,Product Name,Input Image Urls,Output Image Urls\n"
        f'1,SKU1,"{image},{image}","{url},{url}"\n'
        f'2,\'=SKU2,"{image}",{url}\n'
    )


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_a_request_stored_before_the_records_were_kept_keeps_the_old_output(service, source_server):
    image = serve(source_server, jpeg_bytes((64, 48)))
    with service.app.app_context():
        rows = [ProductRow(7, "=Old", (image, missing(source_server)), 2)]
        request_id = creation.create_request(rows, creation.UploadOptions()).id
        db.session.remove()
    final = wait_final(service.base_url, str(request_id))
    url = final["products"][0]["images"][0]["output_url"]
    output = requests.get(final["output_csv_url"], timeout=10)
    assert output.text == (
        "S. No.,Product Name,Input Image Urls,Output Image Urls\r\n"
        f'7,\'=Old,"{image},{final["products"][0]["images"][1]["input_url"]}","{url},"\r\n'
    )


class GatedImage:
    """An image that is not sent until the test opens the gate (or ten seconds pass)."""

    def __init__(self, source_server) -> None:
        self.gate = threading.Event()
        self.data = jpeg_bytes((64, 48))
        self.path = f"/columns/{uuid.uuid4().hex}/gated.jpg"
        source_server.route(self.path, self._handle)
        self.url = source_server.url(self.path)

    def _handle(self, request) -> None:
        self.gate.wait(10)
        request.send(200, self.data, {"Content-Type": "image/jpeg"})


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_a_cancelled_requests_csv_and_report_while_it_runs_and_after(service, source_server):
    done = serve(source_server, jpeg_bytes((64, 48)))
    gated = GatedImage(source_server)
    header = "S. No.,Product Name,Input Image Urls,Extra"
    records = [f"1,Done,{done},x", f'2,Waiting,"{gated.url},{done}",y']
    created = upload(service.base_url, ("\n".join([header, *records]) + "\n").encode())
    request_id = created.json()["request_id"]
    report_url = f"{service.base_url}/api/requests/{request_id}/report.csv"
    try:

        def first_done() -> bool:
            answer = requests.get(f"{service.base_url}/api/status/{request_id}", timeout=10).json()
            return answer["products"][0]["images"][0]["status"] == "COMPLETED"

        assert wait_until(first_done, 30)
        running = requests.get(report_url, timeout=10)
        assert running.status_code == 200  # the report is there before the request is final
        statuses = [row[5] for row in csv.reader(io.StringIO(running.text))][1:]
        assert statuses[0] == statuses[2] == "COMPLETED" and statuses[1] in ("PENDING", "PROCESSING")
        early = requests.get(f"{service.base_url}/api/requests/{request_id}/output.csv", timeout=10)
        assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"

        cancelled = requests.post(f"{service.base_url}/api/requests/{request_id}/cancel", timeout=10)
        assert cancelled.status_code == 200, cancelled.text
    finally:
        gated.gate.set()
    final = wait_final(service.base_url, request_id)
    assert final["status"] == "CANCELLED"
    url = final["products"][0]["images"][0]["output_url"]
    output = requests.get(final["output_csv_url"], timeout=10)
    assert output.text == f'{header},Output Image Urls\n{records[0]},{url}\n{records[1]},",{url}"\n'
    report = list(csv.reader(io.StringIO(requests.get(report_url, timeout=10).text)))
    assert [(row[0], row[2], row[5], row[4]) for row in report[1:]] == [
        ("1", "1", "COMPLETED", url),
        ("2", "1", "CANCELLED", ""),
        ("2", "2", "COMPLETED", url),
    ]


# --- the report -----------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_the_report_matches_the_stored_files_the_sources_and_the_status_api(service, source_server):
    photo, alpha = jpeg_bytes((800, 600)), png_with_alpha((300, 200))
    photo_url = serve(source_server, photo)
    alpha_url = serve(source_server, alpha, "image/png", "alpha.png")
    html_url = serve(source_server, b"<html>not a photo</html>", "image/jpeg", "page.jpg")
    gone = missing(source_server)
    # A URL cannot begin like a formula (it begins with http), but may carry one.
    hostile_url = serve(source_server, photo, name="hostile.jpg") + "?q==cmd&at=@x&n=-1"
    header = "S. No.,Product Name,Input Image Urls,Extra"
    records = [
        f'007,"=HYPERLINK(""http://evil.example"")","{photo_url},{alpha_url},{gone}",a',
        f'8,@SUM(1+1),"{html_url},{photo_url}",b',
        f"9,-2+3,{hostile_url},c",
    ]
    created = upload(service.base_url, ("\r\n".join([header, *records]) + "\r\n").encode(), max_dimension="500")
    request_id = created.json()["request_id"]
    final = wait_final(service.base_url, request_id)
    assert final["status"] == "COMPLETED_WITH_ERRORS"

    response = requests.get(f"{service.base_url}/api/requests/{request_id}/report.csv", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{request_id}-report.csv"'
    report = list(csv.DictReader(io.StringIO(response.text)))
    assert list(report[0]) == list(report_csv.REPORT_COLUMNS)
    places = [(r["S. No."], r["Position"]) for r in report]
    assert places == [("007", "1"), ("007", "2"), ("007", "3"), ("8", "1"), ("8", "2"), ("9", "1")]
    names = [r["Product Name"] for r in report]
    assert names == [*['\'=HYPERLINK("http://evil.example")'] * 3, "'@SUM(1+1)", "'@SUM(1+1)", "'-2+3"]
    for cell in (cell for r in report for cell in r.values()):
        assert not cell.startswith(formula_safety.FORMULA_TRIGGERS), cell

    served = {photo_url: len(photo), alpha_url: len(alpha), hostile_url: len(photo)}
    storage = service.app.extensions["storage"]
    for row in report:
        if row["Status"] != "COMPLETED":
            continue
        assert int(row["Bytes In"]) == served[row["Input Image Url"]]
        stored = storage.local_path(urlsplit(row["Output Image Url"]).path.removeprefix("/media/"))
        assert stored is not None and int(row["Bytes Out"]) == stored.stat().st_size
        with Image.open(stored) as output:
            assert (int(row["Width"]), int(row["Height"])) == output.size
        assert output.size == ((300, 200) if row["Input Image Url"] == alpha_url else (500, 375))  # never enlarged
        assert row["Attempts"] == "1" and row["Error Code"] == row["Error Message"] == ""
    failed = {r["Input Image Url"]: r for r in report if r["Status"] == "FAILED"}
    assert {url: r["Error Code"] for url, r in failed.items()} == {gone: "http_404", html_url: "not_an_image"}
    for row in failed.values():
        assert row["Error Message"] and row["Output Image Url"] == row["Bytes Out"] == row["Width"] == ""

    # The status API says the same of every image, in the same order.
    from_status = [(p, image) for p in final["products"] for image in p["images"]]
    assert len(from_status) == len(report)
    for (product, image), row in zip(from_status, report, strict=True):
        assert formula_safety.neutralize_formula(product["product_name"]) == row["Product Name"]
        assert int(row["S. No."]) == product["serial_number"]
        error = image["error"] or {"code": "", "message": ""}
        assert [
            image["input_url"],
            image["output_url"] or "",
            image["status"],
            error["code"],
            error["message"],
            *("" if image[k] is None else str(image[k]) for k in ("bytes_in", "bytes_out", "width", "height")),
            str(image["attempts"]),
            "" if image["saved_bytes"] is None else str(image["saved_bytes"]),
            "" if image["quality"] is None else str(image["quality"]),
        ] == [row[column] for column in report_csv.REPORT_COLUMNS[3:15]]
        if image["status"] == "COMPLETED":
            assert (row["Kept Source"], row["Reused"]) == (
                "yes" if image["kept_source"] else "no",
                "yes" if image["reused"] else "no",
            )


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables")
def test_the_report_of_an_unknown_request_is_404(service):
    for request_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = requests.get(f"{service.base_url}/api/requests/{request_id}/report.csv", timeout=10)
        assert response.status_code == 404 and response.json()["error"]["code"] == "request_not_found"
