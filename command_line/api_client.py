"""The service's HTTP API as the CLI calls it, its progress stream parsed, its errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import requests

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
HTTP_TIMEOUT_S = 60.0
TRANSIENT_STATUSES = {429, 502, 503, 504}
#: Where the CLI is told which service to call, for the message of a service it cannot reach.
WHERE_TO_SET_THE_URL = "give the service's address with --base-url or IMAGE_SERVICE_URL"
#: Pages of 1,000 products with a failed image read to count the failures by error code.
FAILURE_PAGES = 20
FAILURE_PAGE_SIZE = 1000
COPY_CHUNK_BYTES = 64 * 1024


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
            raise unreachable(self.base_url, error) from error
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def url(self, path: str) -> str:
        """The full URL of ``path`` on the service."""
        return f"{self.base_url}{path}"

    def upload(
        self, csv_path: Path | None, fields: dict[str, str], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST the file at ``csv_path`` with ``fields``; with no file, the fields alone (``feed_url`` names it)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        if csv_path is None:
            return self._call("POST", "/api/upload", data=fields, headers=headers).json()
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
            raise unreachable(self.base_url, error) from error
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

    def open_stream(self, path: str, params: dict[str, str] | None = None) -> requests.Response:
        """The answer to ``GET path``, its body not read yet (``copy_body`` reads it); close it when done.

        Raises:
            CliError: no answer, or the service's error answer.
        """
        return self._call("GET", path, params=params, stream=True)

    def copy(self, path: str, sink: BinaryIO) -> None:
        """The answer to ``GET path`` (a CSV: the report, the failed rows, the sample), copied to ``sink``."""
        with self.open_stream(path) as response:
            copy_body(response, sink)

    def failure_counts(self, request_id: str) -> tuple[Counter[str], bool]:
        """The request's failed images counted by error code, and whether every product with one was read.

        The status API's products with a failed image, ``FAILURE_PAGES`` pages of them at most.
        """
        counts: Counter[str] = Counter()
        for page in range(1, FAILURE_PAGES + 1):
            params = {"image_status": "FAILED", "per_page": FAILURE_PAGE_SIZE, "page": page}
            answer = self._call("GET", f"/api/status/{quote(request_id, safe='')}", params=params).json()
            for product in answer["products"]:
                for image in product["images"]:
                    if image["status"] == "FAILED":
                        counts[(image.get("error") or {}).get("code") or "unknown"] += 1
            if page >= answer["pagination"]["pages"]:
                return counts, True
        return counts, False


def copy_body(response: requests.Response, sink: BinaryIO) -> int:
    """Write a streamed answer's body to ``sink`` a chunk at a time, never whole in memory; the bytes written.

    Raises:
        CliError: the answer broke off before its end.
    """
    written = 0
    try:
        for chunk in response.iter_content(chunk_size=COPY_CHUNK_BYTES):
            sink.write(chunk)
            written += len(chunk)
    except requests.RequestException as error:
        raise CliError(f"the download broke off before its end: {error}") from error
    return written


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


def unreachable(base_url: str, error: requests.RequestException) -> CliError:
    """No answer from the service: where it was looked for, and how to name another address."""
    return CliError(f"cannot reach the service at {base_url} ({WHERE_TO_SET_THE_URL}): {error}")


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
    """One entry of ``details``: ``row 3, column 'Input Image Urls': message``, ``product 'red-tee': message``."""
    where = []
    if detail.get("product"):
        where.append(f"product {detail['product']!r}")
    if "row" in detail:
        where.append(f"row {detail['row']}")
    if detail.get("column"):
        where.append(f"column {detail['column']!r}")
    if detail.get("field"):
        where.append(f"field {detail['field']!r}")
    prefix = ", ".join(where)
    return f"{prefix}: {detail.get('message', '')}" if prefix else str(detail.get("message", ""))
