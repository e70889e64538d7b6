"""Command-line client of the image service, for scripts and pipelines.

    python cli.py upload products.csv [--webhook-url URL] [--quality N|auto] [--target-score S]
                                      [--format jpeg|webp|avif] [--no-never-bigger] [--max-dimension N]
                                      [--idempotency-key KEY] [--wait] [--output out.csv] [--timeout S] [--json]
    python cli.py status REQUEST_ID [--wait] [--output out.csv] [--timeout S] [--json]
    python cli.py cancel REQUEST_ID [--json]
    python cli.py retry REQUEST_ID [--error-code CODE [CODE ...]] [--wait] [--output out.csv] [--timeout S] [--json]
    python cli.py report REQUEST_ID [--output report.csv]

(``python -m cli ...`` from the repository's root works as well.) Every command takes ``--base-url``
(default: ``$IMAGE_SERVICE_URL``, else http://127.0.0.1:5000) and ``--api-key`` (default:
``$IMAGE_SERVICE_API_KEY``), sent as ``Authorization: Bearer <key>``.

``upload`` prints the request id on stdout (the whole JSON answer with ``--json``); ``status``,
``cancel`` and ``retry`` print the status (the JSON answer with ``--json``); ``report`` writes the
per-image report CSV to stdout, or to ``--output``. With ``--wait``, ``upload``, ``status`` and
``retry`` follow the request's progress stream (``/api/status/<id>/events``; polling the status API
when the stream cannot be had) until the request is final: a progress bar on stderr when stderr is a
terminal, else one plain line per change. ``--output`` (which implies ``--wait``) saves the output CSV.

Exit codes, by the request's status once the command is done:
    0  COMPLETED, or not final and not waited for (an upload, a retry, a status without --wait)
    2  COMPLETED_WITH_ERRORS
    3  FAILED
    1  CANCELLED (``cancel`` included), or an error: the service's error code and message go to stderr
   64  a usage error (argparse's own 2 would read as COMPLETED_WITH_ERRORS)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote

import requests
from tqdm import tqdm

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
EXIT_CODES = {"COMPLETED": 0, "COMPLETED_WITH_ERRORS": 2, "FAILED": 3, "CANCELLED": 1}
FINAL_STATUSES = set(EXIT_CODES)
EXIT_ERROR = 1
# sysexits' EX_USAGE: argparse's own 2 is COMPLETED_WITH_ERRORS here.
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130
HTTP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 1.0
TRANSIENT_STATUSES = {429, 502, 503, 504}
# The service sends a comment every 15 s on an idle stream: this long without a byte, it is dead.
STREAM_SILENCE_S = 60.0
# Breaks of the progress stream in a row, each followed by a reconnect, before the CLI polls instead.
STREAM_MAX_BREAKS = 3


class CliError(Exception):
    """A failure to report on stderr, with the service's error details when it sent some."""

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.status_code = status_code
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """No answer at all, or one that says to try again later."""
        return self.status_code is None or self.status_code in TRANSIENT_STATUSES


class WaitExpired(CliError):
    """The request was not final by the end of ``--timeout``."""


class Client:
    """The few API calls the CLI needs, over one HTTP session."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(method, url, timeout=HTTP_TIMEOUT_S, **kwargs)
        except requests.RequestException as error:
            raise CliError(f"cannot reach the service at {self.base_url}: {error}") from error
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def upload(self, csv_path: Path, fields: dict[str, str], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        with csv_path.open("rb") as handle:
            files = {"file": (csv_path.name, handle, "text/csv")}
            return self._call("POST", "/api/upload", files=files, data=fields, headers=headers).json()

    def status(self, request_id: str, per_page: int | None = 1) -> dict[str, Any]:
        """The status; one product (the default) is enough to learn it, None asks for the service's default page."""
        params = {"per_page": per_page} if per_page else {}
        return self._call("GET", f"/api/status/{quote(request_id, safe='')}", params=params).json()

    def events(self, request_id: str, last_event_id: str | None, read_timeout_s: float) -> Iterator[ServerEvent]:
        """The request's progress stream, each event (and each keep-alive comment) as it comes.

        Raises:
            CliError: the stream could not be opened (with the service's answer when it sent one).
            requests.RequestException: the stream broke after it was opened.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = f"{self.base_url}/api/status/{quote(request_id, safe='')}/events"
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=(10, read_timeout_s))
        except requests.RequestException as error:
            raise CliError(f"cannot reach the service at {self.base_url}: {error}") from error
        with response:
            if response.status_code >= 400:
                raise api_error(response)
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise CliError(f"the events endpoint answered {response.headers.get('Content-Type')!r}")
            # Small reads: each event is written as one chunk, and must be seen when it is sent.
            yield from parse_events(line.decode("utf-8", "replace") for line in response.iter_lines(chunk_size=1024))

    def output_csv(self, request_id: str) -> bytes:
        return self._call("GET", f"/api/requests/{quote(request_id, safe='')}/output.csv").content

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/requests/{quote(request_id, safe='')}/cancel").json()

    def retry(self, request_id: str, error_codes: list[str] | None) -> dict[str, Any]:
        body = {"json": {"error_codes": error_codes}} if error_codes else {}
        return self._call("POST", f"/api/requests/{quote(request_id, safe='')}/retry", **body).json()

    def write_report(self, request_id: str, sink: BinaryIO) -> None:
        """The per-image report CSV, copied to ``sink`` as it streams in."""
        response = self._call("GET", f"/api/requests/{quote(request_id, safe='')}/report.csv", stream=True)
        with response:
            for chunk in response.iter_content(chunk_size=64 * 1024):
                sink.write(chunk)


@dataclass(frozen=True)
class ServerEvent:
    """One Server-Sent Event; ``name`` is None for a comment (a keep-alive) or a bare ``retry:``."""

    name: str | None
    event_id: str | None = None
    data: str = ""
    retry_ms: int | None = None


def parse_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """Server-Sent Events from the stream's lines, as the HTML standard parses them."""
    name, event_id, data, retry_ms = "message", None, [], None
    for line in lines:
        if not line:
            if data or retry_ms is not None:
                yield ServerEvent(name if data else None, event_id, "\n".join(data), retry_ms)
            name, data, retry_ms = "message", [], None
            continue
        if line.startswith(":"):
            yield ServerEvent(None)
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field == "retry" and value.isdigit():
            retry_ms = int(value)


def api_error(response: requests.Response) -> CliError:
    """The contract's ``{"error": {...}}`` as a CliError, or the bare HTTP status when it is not there."""
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
        details = error.get("details") or []
    except (ValueError, KeyError, TypeError):
        message, details = f"HTTP {response.status_code} {response.reason}", []
    retry_after = response.headers.get("Retry-After", "")
    return CliError(
        f"{message} (HTTP {response.status_code})",
        details,
        status_code=response.status_code,
        retry_after_s=float(retry_after) if retry_after.isdigit() else None,
    )


def describe_detail(detail: dict[str, Any]) -> str:
    """One entry of ``details``: ``row 3, column 'Input Image Urls': message``."""
    where = []
    if "row" in detail:
        where.append(f"row {detail['row']}")
    if detail.get("column"):
        where.append(f"column {detail['column']!r}")
    if detail.get("field"):
        where.append(f"field {detail['field']!r}")
    prefix = ", ".join(where)
    return f"{prefix}: {detail.get('message', '')}" if prefix else str(detail.get("message", ""))


def progress_line(status: dict[str, Any]) -> str:
    p = status["progress"]
    return (
        f"{status['status']}: {p['percent']:.1f}% ({p['completed_images']} completed, "
        f"{p['failed_images']} failed, {p['pending_images']} pending of {p['total_images']})"
    )


def images_done(status: dict[str, Any]) -> int:
    p = status["progress"]
    return p["completed_images"] + p["failed_images"] + p.get("cancelled_images", 0)


class ProgressLines:
    """Progress as plain lines on stderr, one whenever it differs from the last: for logs and pipes."""

    def __init__(self) -> None:
        self.last_line = ""
        self.state = "unknown"

    def show(self, status: dict[str, Any]) -> None:
        self.state, line = status["status"], progress_line(status)
        if line != self.last_line:
            print(line, file=sys.stderr, flush=True)
            self.last_line = line

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class ProgressBar(ProgressLines):
    """Progress as a tqdm bar on stderr, a terminal: images done of the total, failures and status after it."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: tqdm | None = None  # drawn once the total is known

    def show(self, status: dict[str, Any]) -> None:
        self.state = status["status"]
        total = status["progress"]["total_images"]
        if self.bar is None:
            # A terminal that reports no size (some pseudo-terminals do) gets 80x24: tqdm draws nothing in 0 rows.
            sized = _terminal_columns() > 0
            self.bar = tqdm(
                total=total,
                file=sys.stderr,
                unit="image",
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 24,
                leave=True,
            )
        elif self.bar.total != total:  # a big upload's images are counted as they are imported
            self.bar.total = total
        # Assigned, not added: a retry puts failed images back in line, and the count goes down.
        self.bar.n = images_done(status)
        self.bar.set_postfix(failed=status["progress"]["failed_images"], status=self.state, refresh=False)
        self.bar.refresh()

    def note(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


def progress_display() -> ProgressLines:
    return ProgressBar() if sys.stderr.isatty() else ProgressLines()


class StreamUnavailable(Exception):
    """The progress stream cannot be followed; polling takes over."""


def wait_final(client: Client, request_id: str, timeout_s: float) -> dict[str, Any]:
    """Follow the request until it is final, showing its progress on stderr (a bar, or a line per change).

    The progress stream first; if it cannot be opened, or breaks again and again, the status API is
    polled for the rest of the wait.
    """
    deadline = time.monotonic() + timeout_s
    printer = progress_display()
    try:
        try:
            return follow_events(client, request_id, deadline, timeout_s, printer)
        except StreamUnavailable as error:
            printer.note(f"progress stream unavailable ({error}): polling instead")
        return poll_final(client, request_id, deadline, timeout_s, printer)
    finally:
        printer.close()


def follow_events(
    client: Client, request_id: str, deadline: float, timeout_s: float, printer: ProgressLines
) -> dict[str, Any]:
    """Read the progress stream to its ``final`` event, reconnecting with ``Last-Event-ID`` after a break.

    Raises:
        StreamUnavailable: the stream could not be opened, or broke ``STREAM_MAX_BREAKS`` times in a row.
        WaitExpired: the deadline passed.
    """
    last_event_id, breaks, reconnect_s = None, 0, 3.0
    while True:
        try:
            # Never read past the deadline: a quiet stream would hold the CLI a heartbeat too long.
            read_timeout_s = max(1.0, min(STREAM_SILENCE_S, deadline - time.monotonic() + 0.5))
            for event in client.events(request_id, last_event_id, read_timeout_s):
                if event.retry_ms is not None:
                    reconnect_s = event.retry_ms / 1000
                if event.name in ("progress", "final"):
                    breaks = 0
                    last_event_id = event.event_id
                    status = json.loads(event.data)
                    printer.show(status)
                    if event.name == "final":
                        return status
                if time.monotonic() >= deadline:
                    raise WaitExpired(f"request {request_id} is still {printer.state} after {timeout_s:g} s")
            problem = "the stream ended before the request was final"
        except WaitExpired:
            raise
        except CliError as error:
            raise StreamUnavailable(error.message) from error
        except (requests.RequestException, ValueError, KeyError) as error:
            problem = f"the stream broke: {error}"
        breaks += 1
        if breaks >= STREAM_MAX_BREAKS:
            raise StreamUnavailable(problem)
        if time.monotonic() + reconnect_s >= deadline:
            raise WaitExpired(f"request {request_id} is still {printer.state} after {timeout_s:g} s")
        time.sleep(reconnect_s)


def poll_final(
    client: Client, request_id: str, deadline: float, timeout_s: float, printer: ProgressLines
) -> dict[str, Any]:
    """Poll until the request is final.

    Transient failures (no answer, 429, 502-504) are retried until the deadline: the request is
    already accepted, so a restarting service or a rate limit should not fail a long wait.
    """
    while True:
        delay = POLL_INTERVAL_S
        try:
            status = client.status(request_id)
        except CliError as error:
            if not error.transient:
                raise
            printer.note(f"retrying: {error.message}")
            delay = max(delay, error.retry_after_s or 0.0)
        else:
            printer.show(status)
            if status["status"] in FINAL_STATUSES:
                return status
        if time.monotonic() >= deadline:
            raise WaitExpired(f"request {request_id} is still {printer.state} after {timeout_s:g} s")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))


def save_output(client: Client, request_id: str, path: Path) -> None:
    path.write_bytes(client.output_csv(request_id))
    print(f"output CSV saved to {path}", file=sys.stderr)


def finish(client: Client, request_id: str, args: argparse.Namespace) -> int:
    """With ``--wait``: follow the request, save ``--output``, and turn the final status into the exit code."""
    if not args.wait:
        return 0
    status = wait_final(client, request_id, args.timeout)
    if args.output:
        save_output(client, request_id, args.output)
    if status["status"] == "CANCELLED":
        raise CliError(f"request {request_id} was CANCELLED")
    return EXIT_CODES[status["status"]]


def print_answer(answer: dict[str, Any], args: argparse.Namespace, line: str) -> None:
    print(json.dumps(answer, indent=2) if args.json else line, flush=True)


def run_upload(client: Client, args: argparse.Namespace) -> int:
    if not args.csv.is_file():
        raise CliError(f"no such file: {args.csv}")
    fields = {
        name: str(value)
        for name, value in (
            ("webhook_url", args.webhook_url),
            ("quality", args.quality),
            ("target_score", args.target_score),
            ("format", args.format),
            ("never_bigger", None if args.never_bigger is None else str(args.never_bigger).lower()),
            ("max_dimension", args.max_dimension),
        )
        if value not in (None, "")
    }
    answer = client.upload(args.csv, fields, args.idempotency_key)
    print_answer(answer, args, answer["request_id"])
    return finish(client, answer["request_id"], args)


def run_status(client: Client, args: argparse.Namespace) -> int:
    status = client.status(args.request_id, per_page=None if args.json else 1)
    print_answer(status, args, progress_line(status))
    if args.wait and status["status"] not in FINAL_STATUSES:
        return finish(client, args.request_id, args)
    if args.output:
        save_output(client, args.request_id, args.output)
    return EXIT_CODES.get(status["status"], 0)


def run_cancel(client: Client, args: argparse.Namespace) -> int:
    answer = client.cancel(args.request_id)
    print_answer(answer, args, progress_line(answer))
    return EXIT_CODES[answer["status"]]


def run_retry(client: Client, args: argparse.Namespace) -> int:
    answer = client.retry(args.request_id, args.error_codes)
    print_answer(answer, args, f"{answer['status']}: failed images put back in line: {answer['retried_images']}")
    return finish(client, args.request_id, args)


def run_report(client: Client, args: argparse.Namespace) -> int:
    if args.output is None:
        client.write_report(args.request_id, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    with args.output.open("wb") as sink:
        client.write_report(args.request_id, sink)
    print(f"report saved to {args.output}", file=sys.stderr)
    return 0


COMMANDS = {"upload": run_upload, "status": run_status, "cancel": run_cancel, "retry": run_retry, "report": run_report}


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 means COMPLETED_WITH_ERRORS here, so usage errors exit 64."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {raw!r}")
    return value


def quality_value(raw: str) -> str:
    """A number or ``auto``; the service checks the range and answers with its own error."""
    if raw.strip().lower() == "auto" or raw.strip().isdigit():
        return raw.strip().lower()
    raise argparse.ArgumentTypeError(f"must be a number (1-95) or auto, got {raw!r}")


def build_parser() -> argparse.ArgumentParser:
    connection = ArgumentParser(add_help=False)
    connection.add_argument(
        "--base-url",
        default=os.environ.get("IMAGE_SERVICE_URL") or DEFAULT_BASE_URL,
        help=f"the service's address (default: $IMAGE_SERVICE_URL, else {DEFAULT_BASE_URL})",
    )
    connection.add_argument(
        "--api-key",
        default=os.environ.get("IMAGE_SERVICE_API_KEY") or None,
        help="sent as 'Authorization: Bearer <key>' (default: $IMAGE_SERVICE_API_KEY)",
    )
    as_json = ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the service's JSON answer")
    waiting = ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="follow the request until it is final")
    waiting.add_argument("--output", type=Path, help="save the output CSV here (implies --wait)")
    waiting.add_argument("--timeout", type=positive_float, default=600.0, help="seconds --wait waits (default 600)")

    parser = ArgumentParser(prog="cli.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", parents=[connection, waiting, as_json], help="upload a CSV of products")
    upload.add_argument("csv", type=Path, help="the CSV: S. No., Product Name, Input Image Urls")
    upload.add_argument("--webhook-url", help="an http(s) URL to notify when the request is final")
    upload.add_argument(
        "--quality", type=quality_value, help="output quality, 1-95 or 'auto' (the service's default: 50)"
    )
    upload.add_argument("--target-score", type=float, help="with --quality auto: the SSIM each output must reach")
    upload.add_argument("--format", choices=("jpeg", "webp", "avif"), help="output format (default: jpeg)")
    upload.add_argument(
        "--never-bigger",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a source JPEG the encode would not shrink (the service's default: on)",
    )
    upload.add_argument("--max-dimension", type=int, help="shrink so the longest side is at most this")
    upload.add_argument(
        "--idempotency-key",
        help="sent as Idempotency-Key: the same upload sent again with the same key answers the first request",
    )
    status = commands.add_parser("status", parents=[connection, waiting, as_json], help="show a request's status")
    status.add_argument("request_id")
    cancel = commands.add_parser("cancel", parents=[connection, as_json], help="cancel a request's unfinished images")
    cancel.add_argument("request_id")
    retry = commands.add_parser(
        "retry", parents=[connection, waiting, as_json], help="re-run a request's failed images"
    )
    retry.add_argument("request_id")
    retry.add_argument(
        "--error-code",
        dest="error_codes",
        action="extend",
        nargs="+",
        metavar="CODE",
        help="only the failed images with these error codes, such as http_404 (default: every failed image)",
    )
    report = commands.add_parser("report", parents=[connection], help="the per-image report CSV")
    report.add_argument("request_id")
    report.add_argument("--output", type=Path, help="write the report here (default: stdout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "wait" in args:
        args.wait = args.wait or args.output is not None
    client = Client(args.base_url, args.api_key)
    try:
        return COMMANDS[args.command](client, args)
    except CliError as error:
        print(f"error: {error.message}", file=sys.stderr)
        for detail in error.details:
            print(f"  {describe_detail(detail)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
