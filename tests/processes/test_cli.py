"""The command-line client over real HTTP: ``cli.py`` run as a subprocess against the service."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import uuid
import zipfile
from pathlib import Path

import pytest
import requests
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import SlowImages, jpeg_bytes
from support.loopback import LoopbackHTTPServer, serve, unused_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "cli.py"


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the CLI's own variables, plus ``env``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("IMAGE_SERVICE_")}, **(env or {})}


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 150, text: bool = True, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """``python cli.py ...`` in ``cwd`` with none of the CLI's own variables inherited unless given."""
    return subprocess.run(
        [sys.executable, str(CLI), *args],
        env=cli_env(env),
        cwd=cwd,
        capture_output=True,
        text=text,
        timeout=timeout_s,
    )


def start_cli(*args: str) -> subprocess.Popen:
    """``python cli.py ...`` in the background, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, str(CLI), *args],
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli_on_a_terminal(*args: str, timeout_s: float = 120, size: tuple[int, int] = (40, 120)) -> tuple[int, str]:
    """``python cli.py ...`` with stdout and stderr on a pseudo-terminal (rows, columns): its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    cli = subprocess.Popen(
        [sys.executable, str(CLI), *args], env=cli_env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout_s)
            assert ready, f"no output for {timeout_s} s: {output.decode(errors='replace')}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every end of the slave is closed, the CLI has exited
                break
            if not chunk:
                break
            output += chunk
        return cli.wait(timeout=timeout_s), output.decode("utf-8", "replace")
    finally:
        os.close(master)
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_cli_upload_waits_and_saves_the_output_csv(service, source_server, tmp_path):
    good = serve(source_server, jpeg_bytes((640, 480)))
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")  # the server's default answer: 404
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [good, missing])]))
    out = tmp_path / "out.csv"

    result = run_cli(
        "upload",
        str(products),
        "--base-url",
        service.base_url,
        "--wait",
        "--output",
        str(out),
        "--max-dimension",
        "100",
        "--timeout",
        "120",
    )

    assert result.returncode == 2, result.stderr
    request_id = result.stdout.strip()
    assert uuid.UUID(request_id).version == 4
    assert "COMPLETED_WITH_ERRORS: 100.0% (1 completed, 1 failed, 0 pending of 2)" in result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 1
    assert rows[0]["Input Image Urls"] == f"{good},{missing}"
    outputs = rows[0]["Output Image Urls"].split(",")
    assert len(outputs) == 2 and outputs[0].startswith(f"{service.base_url}/media/") and outputs[1] == ""
    image = requests.get(outputs[0], timeout=10)
    assert image.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (100, 75)  # --max-dimension reached the service
    failed = wait_final(service.base_url, request_id)["products"][0]["images"][1]
    assert failed["error"]["code"] == "http_404"


def test_cli_upload_of_an_invalid_csv_reports_the_rows(service, tmp_path):
    products = tmp_path / "bad.csv"
    products.write_text("S. No.,Product Name,Input Image Urls\n1,SKU1,https://img.example.com/a.jpg\nx,SKU2,ftp://x\n")

    result = run_cli("upload", str(products), "--base-url", service.base_url, "--wait")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "csv_invalid_rows" in result.stderr and "(HTTP 422)" in result.stderr
    assert "row 3, column 'S. No.'" in result.stderr
    assert "row 3, column 'Input Image Urls'" in result.stderr and "ftp://x" in result.stderr
    assert requests.get(service.url("/api/requests"), timeout=10).json()["requests"] == []


def test_cli_upload_of_a_refused_option_exits_1(service, source_server, tmp_path):
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes())])]))

    result = run_cli("upload", str(products), "--base-url", service.base_url, "--quality", "96")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "error: invalid_quality: " in result.stderr and "(HTTP 400)" in result.stderr


def test_cli_status_prints_the_status(service, source_server):
    answer = upload(service.base_url, csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes())])])).json()
    request_id = answer["request_id"]
    wait_final(service.base_url, request_id)
    env = {"IMAGE_SERVICE_URL": service.base_url}  # the default for --base-url

    result = run_cli("status", request_id, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "COMPLETED: 100.0% (1 completed, 0 failed, 0 pending of 1)"

    as_json = run_cli("status", request_id, "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["request_id"] == request_id and status["status"] == "COMPLETED"

    unknown = run_cli("status", str(uuid.uuid4()), env=env)
    assert unknown.returncode == 1
    assert "request_not_found" in unknown.stderr and "(HTTP 404)" in unknown.stderr


def test_cli_without_a_reachable_service_exits_1():
    from support.loopback import unused_port

    result = run_cli("status", str(uuid.uuid4()), "--base-url", f"http://127.0.0.1:{unused_port()}", timeout_s=30)

    assert result.returncode == 1
    assert "cannot reach the service" in result.stderr


def test_cli_that_cannot_reach_the_service_says_how_to_name_it():
    from support.loopback import unused_port

    result = run_cli("status", str(uuid.uuid4()), "--base-url", f"http://127.0.0.1:{unused_port()}", timeout_s=30)

    assert result.returncode == 1
    assert "--base-url" in result.stderr and "IMAGE_SERVICE_URL" in result.stderr, result.stderr


# --- the CLI's --wait over the progress stream ---------------------------------------------------


def test_cli_wait_follows_the_progress_stream(service, source_server, tmp_path):
    slow = SlowImages(source_server, 12, delay_s=0.3, prefix="cli-events")
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    products = tmp_path / "products.csv"
    rows = [(n + 1, f"SKU{n}", slow.urls[n * 3 : n * 3 + 3]) for n in range(4)] + [(5, "X", [missing])]
    products.write_bytes(csv_of(rows))
    hub = service.app.extensions["progress_hub"]
    opened = hub.streams_opened

    result = run_cli("upload", str(products), "--base-url", service.base_url, "--wait", "--timeout", "120")

    assert result.returncode == 2, result.stderr
    assert "polling instead" not in result.stderr
    assert hub.streams_opened > opened  # the wait was a stream, not polls
    lines = [line for line in result.stderr.splitlines() if "% (" in line]
    assert len(lines) >= 2 and len(set(lines)) == len(lines), result.stderr  # each change once
    assert lines[-1] == "COMPLETED_WITH_ERRORS: 100.0% (12 completed, 1 failed, 0 pending of 13)"
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # piped: plain lines, no bar, no ANSI codes


def test_cli_wait_polls_when_the_stream_is_refused(service, source_server, tmp_path):
    from support.services import ApiServer

    from app import create_app

    server = ApiServer()
    server.start(create_app({"public_base_url": server.base_url, "events_max_streams": 0}))  # every stream: 503
    try:
        products = tmp_path / "products.csv"
        products.write_bytes(csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes())])]))
        result = run_cli("upload", str(products), "--base-url", server.base_url, "--wait", "--timeout", "120")
    finally:
        server.stop()

    assert result.returncode == 0, result.stderr
    assert "progress stream unavailable (too_many_streams" in result.stderr and "polling instead" in result.stderr
    assert "COMPLETED: 100.0% (1 completed, 0 failed, 0 pending of 1)" in result.stderr


def test_cli_cancel_of_a_slow_request_ends_the_wait_with_exit_1(service, source_server, tmp_path):
    slow = SlowImages(source_server, 20, delay_s=1.0, prefix="cli-cancel")
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(n + 1, f"SKU{n}", [slow.urls[n]]) for n in range(20)]))
    out = tmp_path / "out.csv"
    waiting = start_cli("upload", str(products), "--base-url", service.base_url, "--output", str(out))
    try:
        request_id = waiting.stdout.readline().strip()

        cancelled = run_cli("cancel", request_id, "--base-url", service.base_url)

        _, stderr = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()

    assert cancelled.returncode == 1, cancelled.stderr
    assert cancelled.stdout.startswith("CANCELLED: 100.0% (")
    assert requests.get(service.url(f"/api/status/{request_id}"), timeout=10).json()["status"] == "CANCELLED"
    assert waiting.returncode == 1, stderr
    assert f"error: request {request_id} was CANCELLED" in stderr
    assert "polling instead" not in stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))  # a cancelled request has its output CSV too
    assert len(rows) == 20

    again = run_cli("cancel", request_id, "--base-url", service.base_url)
    assert again.returncode == 1
    assert again.stdout == ""
    assert "error: already_final: " in again.stderr and "(HTTP 409)" in again.stderr


def test_cli_parses_server_sent_events():
    sys.path.insert(0, str(ROOT))
    from command_line import api_client

    lines = ["retry: 3000", "", ": keep-alive", "", "id: a1", "event: progress", 'data: {"x":', "data: 1}", ""]
    lines += ["event: final", "data:{}", ""]
    events = list(api_client.parse_events(lines))

    assert [(e.name, e.event_id, e.data, e.retry_ms) for e in events] == [
        (None, None, "", 3000),
        (None, None, "", None),
        ("progress", "a1", '{"x":\n1}', None),
        ("final", "a1", "{}", None),  # the last id holds until another is sent
    ]


# --- cancel, retry, report, idempotency, exit codes, the progress bar ---------------------------


def test_cli_retry_after_the_404_is_fixed_exits_0(service, source_server, tmp_path):
    good = serve(source_server, jpeg_bytes((64, 48)))
    path = f"/{uuid.uuid4().hex}/late.jpg"  # 404 until routed
    late = source_server.url(path)
    request_id = upload(service.base_url, csv_of([(1, "SKU1", [good, late])])).json()["request_id"]
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED_WITH_ERRORS"
    not_that_code = run_cli("retry", request_id, "--base-url", service.base_url, "--error-code", "http_500")
    assert not_that_code.returncode == 1
    assert "error: nothing_to_retry: " in not_that_code.stderr and "(HTTP 409)" in not_that_code.stderr
    source_server.route(path, respond(200, jpeg_bytes((80, 60)), {"Content-Type": "image/jpeg"}))
    out = tmp_path / "out.csv"

    result = run_cli(
        "retry",
        request_id,
        "--base-url",
        service.base_url,
        "--error-code",
        "http_404",
        "http_410",
        "--output",
        str(out),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "PROCESSING: failed images put back in line: 1"
    assert "COMPLETED: 100.0% (2 completed, 0 failed, 0 pending of 2)" in result.stderr
    outputs = next(csv.DictReader(io.StringIO(out.read_text())))["Output Image Urls"].split(",")
    assert len(outputs) == 2 and all(url.startswith(f"{service.base_url}/media/") for url in outputs)
    assert run_cli("status", request_id, "--base-url", service.base_url).returncode == 0


def test_cli_report_to_a_file_and_to_stdout(service, source_server, tmp_path):
    good = serve(source_server, jpeg_bytes((64, 48)))
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    request_id = upload(service.base_url, csv_of([(7, "SKU7", [good, missing])])).json()["request_id"]
    wait_final(service.base_url, request_id)
    expected = requests.get(service.url(f"/api/requests/{request_id}/report.csv"), timeout=10).content
    report = tmp_path / "report.csv"

    to_file = run_cli("report", request_id, "--base-url", service.base_url, "--output", str(report))
    to_stdout = run_cli("report", request_id, "--base-url", service.base_url, text=False)

    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    assert report.read_bytes() == expected
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == expected
    rows = list(csv.DictReader(io.StringIO(expected.decode())))
    assert [(r["S. No."], r["Position"], r["Status"], r["Error Code"]) for r in rows] == [
        ("7", "1", "COMPLETED", ""),
        ("7", "2", "FAILED", "http_404"),
    ]
    unknown = run_cli("report", str(uuid.uuid4()), "--base-url", service.base_url, "--output", str(tmp_path / "x"))
    assert unknown.returncode == 1
    assert "error: request_not_found: " in unknown.stderr


def test_cli_idempotency_key_twice_gives_the_same_request(service, source_server, tmp_path):
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes())])]))
    key = str(uuid.uuid4())
    args = ("--base-url", service.base_url, "--idempotency-key", key)

    first = run_cli("upload", str(products), *args)
    second = run_cli("upload", str(products), *args, "--json")

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["request_id"] == first.stdout.strip()
    assert len(requests.get(service.url("/api/requests"), timeout=10).json()["requests"]) == 1
    reused = run_cli("upload", str(products), *args, "--max-dimension", "100")
    assert reused.returncode == 1
    assert "error: idempotency_key_reused: " in reused.stderr and "(HTTP 422)" in reused.stderr


def test_cli_exit_code_of_a_failed_request_is_3(service, source_server, tmp_path):
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [missing])]))

    result = run_cli("upload", str(products), "--base-url", service.base_url, "--wait", "--timeout", "120")

    assert result.returncode == 3, result.stderr
    assert "FAILED: 100.0% (0 completed, 1 failed, 0 pending of 1)" in result.stderr
    status = run_cli("status", result.stdout.strip(), "--base-url", service.base_url)
    assert status.returncode == 3
    assert status.stdout.startswith("FAILED: ")


def test_cli_usage_errors_exit_64():
    for args in (("retry",), ("upload", "products.csv", "--quality", "best"), ("frobnicate",)):
        result = run_cli(*args, timeout_s=30)
        assert result.returncode == 64, (args, result.stderr)
        assert "usage: cli.py" in result.stderr


def test_cli_runs_as_a_module(service):
    result = subprocess.run(
        [sys.executable, "-m", "cli", "status", str(uuid.uuid4()), "--base-url", service.base_url],
        env=cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert "error: request_not_found: " in result.stderr


def test_cli_draws_its_bar_on_a_terminal_that_reports_no_size(service, source_server, tmp_path):
    # `script`, `docker exec -t` and some CI runners give a pseudo-terminal of 0x0: tqdm would draw nothing.
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", SlowImages(source_server, 2, delay_s=0.2, prefix="cli-0x0").urls)]))

    code, output = run_cli_on_a_terminal("upload", str(products), "--base-url", service.base_url, "--wait", size=(0, 0))

    assert code == 0, output
    assert "100%|" in output and "2/2" in output and "status=COMPLETED" in output, output


def test_cli_wait_on_a_terminal_draws_a_progress_bar(service, source_server, tmp_path):
    slow = SlowImages(source_server, 6, delay_s=0.3, prefix="cli-bar")
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", slow.urls[:3]), (2, "SKU2", [*slow.urls[3:], missing])]))

    code, output = run_cli_on_a_terminal("upload", str(products), "--base-url", service.base_url, "--wait")

    assert code == 2, output
    assert "100%|" in output and "█" in output, output
    assert "\r" in output  # the bar is redrawn in place
    last_bar = [part for part in output.split("\r") if part.strip()][-1]  # the terminal's \r\n included
    assert "7/7" in last_bar and "failed=1" in last_bar and "status=COMPLETED_WITH_ERRORS" in last_bar, output
    assert "% (" not in output  # no plain progress lines on a terminal
    assert "image [" not in output  # no bar drawn before the total is known


# --- failures you can act on: the summary, the failed rows, the sample ----------------------------


def two_kinds_of_failure(service, source_server, tmp_path) -> Path:
    """A CSV of one good image, two that answer 404 and one that answers 410."""
    good = serve(source_server, jpeg_bytes((64, 48)))
    gone = [source_server.url(f"/{uuid.uuid4().hex}/missing.jpg") for _ in range(2)]  # the server's default: 404
    withdrawn = serve(source_server, respond(410, b"withdrawn"))
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [good, gone[0]]), (2, "SKU2", [gone[1]]), (3, "SKU3", [withdrawn])]))
    return products


def test_cli_wait_in_a_pipe_ends_with_the_failures_by_code_and_where_to_find_them(service, source_server, tmp_path):
    products = two_kinds_of_failure(service, source_server, tmp_path)

    result = run_cli("upload", str(products), "--base-url", service.base_url, "--wait", "--output", str(tmp_path / "o"))

    assert result.returncode == 2, result.stderr
    request_id = result.stdout.strip()
    report = f"{service.base_url}/api/requests/{request_id}/report.csv"
    assert result.stderr.splitlines()[-3:] == [
        f"output CSV saved to {tmp_path / 'o'}",
        f"3 failed: http_404 \N{MULTIPLICATION SIGN}2, http_410 \N{MULTIPLICATION SIGN}1 — report: {report}"
        f" (cli.py report {request_id})",
        f"the rows to fix and upload again: cli.py failed-rows {request_id} --output failed-rows.csv",
    ]

    status = run_cli("status", request_id, "--base-url", service.base_url)  # a final request's status says it too
    assert status.returncode == 2
    assert "3 failed: http_404 \N{MULTIPLICATION SIGN}2" in status.stderr


def test_cli_wait_on_a_terminal_sums_up_the_failures_above_its_bar(service, source_server, tmp_path):
    products = two_kinds_of_failure(service, source_server, tmp_path)

    code, output = run_cli_on_a_terminal("upload", str(products), "--base-url", service.base_url, "--wait")

    assert code == 2, output
    summary = output.index("3 failed: http_404 \N{MULTIPLICATION SIGN}2, http_410 \N{MULTIPLICATION SIGN}1 — report: ")
    assert output.index("the rows to fix and upload again: cli.py failed-rows ", summary) > summary
    assert "status=COMPLETED_WITH_ERRORS" in output[summary:]  # the bar, drawn again below it


def test_cli_failed_rows_to_a_file_and_to_stdout(service, source_server, tmp_path):
    products = two_kinds_of_failure(service, source_server, tmp_path)
    request_id = upload(service.base_url, products.read_bytes()).json()["request_id"]
    wait_final(service.base_url, request_id)
    expected = requests.get(service.url(f"/api/requests/{request_id}/failed-rows.csv"), timeout=10).content
    rows = tmp_path / "failed-rows.csv"

    to_file = run_cli("failed-rows", request_id, "--base-url", service.base_url, "--output", str(rows))
    to_stdout = run_cli("failed-rows", request_id, "--base-url", service.base_url, text=False)

    assert to_file.returncode == 0, to_file.stderr
    assert rows.read_bytes() == expected
    assert to_stdout.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == expected
    assert [row["S. No."] for row in csv.DictReader(io.StringIO(expected.decode()))] == ["1", "2", "3"]


def test_cli_sample_names_the_address_the_service_answers_at(service):
    result = run_cli("sample", env={"IMAGE_SERVICE_URL": service.base_url})

    assert result.returncode == 0, result.stderr
    urls = [url for row in csv.DictReader(io.StringIO(result.stdout)) for url in row["Input Image Urls"].split(",")]
    assert len(urls) == 5 and all(url.startswith(f"{service.base_url}/samples/") for url in urls), urls


# --- marketplace profiles, renditions and the canvas ----------------------------------------------


def test_cli_upload_sends_only_the_plan_options_given():
    sys.path.insert(0, str(ROOT))
    import cli
    from command_line import commands

    class Recorder:
        def upload(self, csv_path, fields, idempotency_key=None):
            self.fields = fields
            return {"request_id": "r1"}

    def sent(*options: str) -> dict[str, str]:
        recorder = Recorder()
        args = cli.build_parser().parse_args(["upload", str(CLI), *options])
        assert commands.run_upload(recorder, args) == 0
        return recorder.fields

    assert sent() == {}
    assert sent(
        "--profile",
        "amazon_main",
        "--renditions",
        "main:2048,zoom:1600,thumb:400x400:pad",
        "--fit",
        "pad",
        "--width",
        "800",
        "--height",
        "600",
        "--aspect",
        "1:1",
        "--background",
        "#FFF",
        "--margin",
        "5%",
        "--min-dimension",
        "500",
        "--no-upscale",
        "--max-bytes",
        "200000",
        "--gravity",
        "attention",
        "--strip",
        "all",
        "--no-duplicates",
        "--trim",
    ) == {
        "profile": "amazon_main",
        "renditions": "main:2048,zoom:1600,thumb:400x400:pad",
        "fit": "pad",
        "width": "800",
        "height": "600",
        "aspect": "1:1",
        "background": "#FFF",
        "trim": "true",
        "margin": "5%",
        "min_dimension": "500",
        "upscale": "false",
        "max_bytes": "200000",
        "gravity": "attention",
        "strip": "all",
        "duplicates": "false",
    }
    assert sent("--trim", "30", "--upscale", "--duplicates") == {"trim": "30", "upscale": "true", "duplicates": "true"}
    assert sent("--trim", "false", "--max-dimension", "100") == {"trim": "false", "max_dimension": "100"}


def test_cli_plan_summary_lines():
    sys.path.insert(0, str(ROOT))
    from command_line.commands import plan_summary

    assert plan_summary({"status": "COMPLETED", "progress": {}}) == []
    assert plan_summary({"profile": None, "renditions": [], "duplicates": False}) == []
    summary = {
        "profile": "amazon_main",
        "checked": 4,
        "passing_as_uploaded": 1,
        "fixed": 2,
        "still_failing": 1,
        "by_rule": {"white_background": {"source": 3, "output": 1}, "min_longest_side": {"source": 1, "output": 0}},
    }
    assert plan_summary({"profile": "amazon_main", "compliance": summary, "duplicate_images": 2}) == [
        "compliance with amazon_main (4 checked): 1 passing as uploaded, 2 fixed, 1 still failing",
        "  white_background: 3 failed as uploaded, 1 still failing",
        "  min_longest_side: 1 failed as uploaded, 0 still failing",
        "near-duplicates of earlier images: 2 (the report's Duplicate Of names them)",
    ]


def test_cli_upload_with_a_profile_and_renditions_sums_up_the_compliance(service, source_server, tmp_path):
    small = serve(source_server, jpeg_bytes((400, 300)))  # below Google's 500x500: fixed by upscaling
    big = serve(source_server, jpeg_bytes((900, 700)))
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [small, big])]))
    out = tmp_path / "out.csv"
    summary = [
        "compliance with google_merchant (2 checked): 1 passing as uploaded, 1 fixed, 0 still failing",
        "  min_size: 1 failed as uploaded, 0 still failing",
    ]

    result = run_cli(
        "upload",
        str(products),
        "--base-url",
        service.base_url,
        "--profile",
        "google_merchant",
        "--renditions",
        "main:2048,zoom:1600,thumb:400x400:pad",
        "--output",
        str(out),
        "--timeout",
        "120",
    )

    assert result.returncode == 0, result.stderr
    request_id = result.stdout.strip()
    lines = result.stderr.splitlines()
    assert lines[-3:] == [*summary, f"output CSV saved to {out}"], result.stderr
    assert "COMPLETED: 100.0% (2 completed, 0 failed, 0 pending of 2)" in lines
    row = next(csv.DictReader(io.StringIO(out.read_text())))
    assert len(row["Output Image Urls (zoom)"].split(",")) == 2
    thumbs = row["Output Image Urls (thumb)"].split(",")
    assert Image.open(io.BytesIO(requests.get(thumbs[1], timeout=10).content)).size == (400, 400)
    status = requests.get(service.url(f"/api/status/{request_id}"), timeout=10).json()
    assert status["profile"] == "google_merchant"
    assert status["renditions"][0]["canvas"]["min_dimension"] == 500  # the profile's preset reached the service

    printed = run_cli("status", request_id, "--base-url", service.base_url)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == ["COMPLETED: 100.0% (2 completed, 0 failed, 0 pending of 2)", *summary]

    as_json = run_cli("status", request_id, "--base-url", service.base_url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["compliance"]["fixed"] == 1  # the JSON as the service answered it


def test_cli_upload_canvas_options_reach_the_service(service, source_server, tmp_path):
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes((300, 200)))])]))

    result = run_cli(
        "upload",
        str(products),
        "--base-url",
        service.base_url,
        "--fit",
        "pad",
        "--width",
        "240",
        "--height",
        "240",
        "--background",
        "black",
        "--strip",
        "all",
        "--no-duplicates",
        "--wait",
        "--timeout",
        "120",
    )

    assert result.returncode == 0, result.stderr
    assert "compliance" not in result.stderr  # no profile, no summary
    status = wait_final(service.base_url, result.stdout.strip())
    assert (status["profile"], status["metadata"], status["duplicates"]) == (None, "strip_all", False)
    canvas = status["renditions"][0]["canvas"]
    assert (canvas["fit"], canvas["width"], canvas["height"], canvas["background"]) == ("pad", 240, 240, [0, 0, 0])
    image = status["products"][0]["images"][0]
    assert (image["width"], image["height"]) == (240, 240)


def test_cli_upload_of_a_refused_plan_option_names_the_field(service, source_server, tmp_path):
    products = tmp_path / "products.csv"
    products.write_bytes(csv_of([(1, "SKU1", [serve(source_server, jpeg_bytes())])]))

    refused = run_cli("upload", str(products), "--base-url", service.base_url, "--renditions", "main:2048,t:400x0")
    unknown = run_cli("upload", str(products), "--profile", "etsy", timeout_s=30)
    no_csv = run_cli("upload", "--trim", str(products), timeout_s=30)

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert "error: invalid_option: " in refused.stderr and "(HTTP 422)" in refused.stderr
    assert "  field 'renditions[1].height': " in refused.stderr
    assert requests.get(service.url("/api/requests"), timeout=10).json()["requests"] == []
    assert unknown.returncode == 64 and "invalid choice: 'etsy'" in unknown.stderr
    assert no_csv.returncode == 64 and "a bare --trim goes after the CSV" in no_csv.stderr


# --- platform exports, feeds by URL and image packs -----------------------------------------------

#: A Shopify export of one product over two rows, its back (position 2) before its front (position 1).
SHOPIFY_EXPORT = "Handle,Title,Image Src,Image Position\nred-tee,Tee,{back},2\nred-tee,,{front},1\n"


def shopify_export(source_server) -> tuple[str, dict[str, str]]:
    """``SHOPIFY_EXPORT`` with a JPEG of its own for the front and for the back on 127.0.0.2, and their URLs."""
    urls = {
        "front": serve(source_server, jpeg_bytes((320, 240), color=(30, 120, 200)), name="front.jpg"),
        "back": serve(source_server, jpeg_bytes((320, 240), color=(200, 160, 30)), name="back.jpg"),
    }
    return SHOPIFY_EXPORT.format(**urls), urls


def outputs_by_source(status: dict) -> dict[str, str]:
    """Each image's source URL -> its output URL, from the status answer."""
    return {image["input_url"]: image["output_url"] for product in status["products"] for image in product["images"]}


def test_cli_upload_sends_the_catalog_options_given():
    sys.path.insert(0, str(ROOT))
    import cli
    from command_line import commands

    class Recorder:
        def upload(self, csv_path, fields, idempotency_key=None):
            self.csv_path, self.fields = csv_path, fields
            return {"request_id": "r1"}

    def sent(*options: str) -> tuple[Path | None, dict[str, str]]:
        recorder = Recorder()
        args = cli.build_parser().parse_args(["upload", *options])
        assert commands.run_upload(recorder, args) == 0
        return recorder.csv_path, recorder.fields

    chosen = ("--input-format", "shopify", "--output-mode", "append", "--output-rendition", "zoom")
    assert sent(str(CLI), *chosen) == (
        CLI,
        {"input_format": "shopify", "output_mode": "append", "output_rendition": "zoom"},
    )
    feed_url = "http://127.0.0.2/products_export.csv"
    assert sent("--feed-url", feed_url, "--input-format", "google_merchant") == (
        None,
        {"feed_url": feed_url, "input_format": "google_merchant"},
    )


def test_cli_upload_takes_exactly_one_of_a_file_and_a_feed_url(tmp_path):
    neither = run_cli("upload", "--input-format", "shopify", timeout_s=30)
    both = run_cli("upload", "products.csv", "--feed-url", "http://127.0.0.2/feed.csv", timeout_s=30)
    unknown_format = run_cli("upload", "products.csv", "--input-format", "magento", timeout_s=30)
    unknown_mode = run_cli("upload", "products.csv", "--output-mode", "merge", timeout_s=30)
    unknown_naming = run_cli("download-images", str(uuid.uuid4()), "--naming", "ebay", cwd=tmp_path, timeout_s=30)

    for result in (neither, both, unknown_format, unknown_mode, unknown_naming):
        assert result.returncode == 64, result.stderr
        assert "usage: cli.py " in result.stderr
    assert "error: one of the arguments CSV --feed-url is required" in neither.stderr
    assert "error: argument --feed-url: not allowed with argument CSV" in both.stderr
    assert "invalid choice: 'magento'" in unknown_format.stderr and "google_merchant" in unknown_format.stderr
    assert "invalid choice: 'merge'" in unknown_mode.stderr
    assert "invalid choice: 'ebay'" in unknown_naming.stderr
    assert os.listdir(tmp_path) == []


def test_cli_upload_of_a_shopify_export_gives_it_back_with_the_output_urls_in_place(service, source_server, tmp_path):
    export, urls = shopify_export(source_server)
    products = tmp_path / "products_export.csv"
    products.write_text(export)
    out = tmp_path / "out.csv"

    result = run_cli(
        "upload",
        str(products),
        "--base-url",
        service.base_url,
        "--input-format",
        "shopify",
        "--wait",
        "--json",
        "--output",
        str(out),
        "--timeout",
        "120",
    )

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["input_format"], answer["products"], answer["images"]) == ("shopify", 1, 2)
    assert "COMPLETED: 100.0% (2 completed, 0 failed, 0 pending of 2)" in result.stderr
    status = wait_final(service.base_url, answer["request_id"])
    assert (status["input_format"], status["product_key"], status["output_mode"]) == ("shopify", "Handle", "replace")
    product = status["products"][0]
    assert product["product_key"] == "red-tee"
    assert [image["input_url"] for image in product["images"]] == [urls["front"], urls["back"]]  # by Image Position
    outputs = outputs_by_source(status)
    assert all(url.startswith(f"{service.base_url}/media/") for url in outputs.values())
    assert out.read_text() == SHOPIFY_EXPORT.format(front=outputs[urls["front"]], back=outputs[urls["back"]])


def test_cli_upload_by_feed_url_has_the_service_fetch_the_export(service, source_server, tmp_path):
    export, urls = shopify_export(source_server)
    feed_url = serve(source_server, export.encode(), "text/csv", name="products_export.csv")
    out = tmp_path / "out.csv"

    result = run_cli(
        "upload",
        "--feed-url",
        feed_url,
        "--base-url",
        service.base_url,
        "--output-mode",
        "append",
        "--output",
        str(out),
        "--timeout",
        "120",
    )

    assert result.returncode == 0, result.stderr
    status = wait_final(service.base_url, result.stdout.strip())
    assert (status["feed_url"], status["feed_sha256"]) == (feed_url, hashlib.sha256(export.encode()).hexdigest())
    assert (status["input_format"], status["output_mode"]) == ("shopify", "append")  # auto told it by its header
    outputs = outputs_by_source(status)
    header, back_row, front_row = export.splitlines()
    assert out.read_text().splitlines() == [
        f"{header},Output Image Urls",
        f"{back_row},{outputs[urls['back']]}",
        f"{front_row},{outputs[urls['front']]}",
    ]


def test_cli_upload_of_a_feed_url_the_service_may_not_call_exits_1(service):
    feed_url = f"http://127.0.0.1:{unused_port()}/products_export.csv"  # not 127.0.0.2: the guard refuses it

    result = run_cli("upload", "--feed-url", feed_url, "--base-url", service.base_url, "--wait")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "error: blocked_address: " in result.stderr and "(HTTP 422)" in result.stderr
    assert "  field 'feed_url': " in result.stderr
    assert requests.get(service.url("/api/requests"), timeout=10).json()["requests"] == []


def final_shopify_request(service, source_server) -> tuple[str, bytes, bytes]:
    """A completed request of ``SHOPIFY_EXPORT``: its id, and the stored bytes of its front's and back's outputs."""
    export, urls = shopify_export(source_server)
    request_id = upload(service.base_url, export.encode()).json()["request_id"]
    status = wait_final(service.base_url, request_id)
    assert status["status"] == "COMPLETED", status
    stored = {source: requests.get(output, timeout=10).content for source, output in outputs_by_source(status).items()}
    return request_id, stored[urls["front"]], stored[urls["back"]]


def test_cli_download_images_writes_the_pack_named_plainly_or_for_amazon(service, source_server, tmp_path):
    request_id, front, back = final_shopify_request(service, source_server)
    amazon = tmp_path / "packs" / "amazon.zip"
    amazon.parent.mkdir()

    plain = run_cli("download-images", request_id, "--base-url", service.base_url, cwd=tmp_path)
    for_amazon = run_cli(
        "download-images",
        request_id,
        "--base-url",
        service.base_url,
        "--naming",
        "amazon",
        "--identifier",
        "Title",
        "-o",
        str(amazon),
    )

    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == ""
    default = f"{request_id}-images.zip"
    assert f"image pack saved to {default} (" in plain.stderr
    with zipfile.ZipFile(tmp_path / default) as pack:
        assert pack.namelist() == ["red-tee_1.jpg", "red-tee_2.jpg"]
        assert (pack.read("red-tee_1.jpg"), pack.read("red-tee_2.jpg")) == (front, back)
    assert for_amazon.returncode == 0, for_amazon.stderr
    with zipfile.ZipFile(amazon) as pack:
        assert pack.namelist() == ["Tee.MAIN.jpg", "Tee.PT01.jpg"]
        assert (pack.read("Tee.MAIN.jpg"), pack.read("Tee.PT01.jpg")) == (front, back)
    assert sorted(os.listdir(tmp_path)) == sorted([default, "packs"])  # no partial file left beside them
    assert os.listdir(amazon.parent) == ["amazon.zip"]


def test_cli_download_images_refused_exits_1_prints_why_and_writes_no_file(service, source_server, tmp_path):
    request_id, _, _ = final_shopify_request(service, source_server)
    target = tmp_path / "pack.zip"

    def download(*options: str, request: str = request_id) -> subprocess.CompletedProcess:
        return run_cli("download-images", request, "--base-url", service.base_url, "-o", str(target), *options)

    dashed = download("--naming", "amazon", "--identifier", "Handle")
    no_such_column = download("--identifier", "ASIN")
    no_such_rendition = download("--rendition", "thumb")
    no_such_request = download(request=str(uuid.uuid4()))

    assert dashed.returncode == 1
    assert dashed.stdout == ""
    assert "error: pack_refused: " in dashed.stderr and "(HTTP 422)" in dashed.stderr
    assert "  product 'red-tee': 'red-tee' holds characters Amazon refuses" in dashed.stderr
    assert no_such_column.returncode == 1
    assert "error: invalid_identifier: " in no_such_column.stderr
    assert "  field 'identifier': no column 'ASIN'" in no_such_column.stderr
    assert no_such_rendition.returncode == 1
    assert "error: invalid_rendition: " in no_such_rendition.stderr
    assert no_such_request.returncode == 1
    assert "error: request_not_found: " in no_such_request.stderr
    assert os.listdir(tmp_path) == []


def test_cli_download_images_that_breaks_off_leaves_no_file(tmp_path):
    request_id = str(uuid.uuid4())

    def half_a_pack(request) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/zip")
        request.send_header("Content-Length", "100000")
        request.end_headers()
        request.wfile.write(b"PK\x03\x04" + bytes(4000))
        request.wfile.flush()
        request.close_connection = True  # and the rest never comes

    with LoopbackHTTPServer(routes={f"/api/requests/{request_id}/images.zip": half_a_pack}) as service:
        result = run_cli("download-images", request_id, "--base-url", service.url(""), cwd=tmp_path, timeout_s=60)

    assert result.returncode == 1
    assert "error: the download broke off before its end: " in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []
