"""The bench's API client: CSVs, uploads and status polls, as a tenant's script would make them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests

FINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"})
HEADER = "S. No.,Product Name,Input Image Urls"


def csv_of(urls: list[str], per_row: int = 5) -> bytes:
    """A product CSV with ``per_row`` image URLs per product."""
    lines = [HEADER]
    for row, start in enumerate(range(0, len(urls), per_row), start=1):
        lines.append(f'{row},SKU{row},"{",".join(urls[start : start + per_row])}"')
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Upload:
    request_id: str
    seconds: float  #: from sending the POST to its answer
    started: float  #: time.monotonic() when the POST was sent
    images: int


class ApiError(RuntimeError):
    pass


class Api:
    """One tenant's calls; one HTTP session per instance (so one per thread)."""

    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def upload(self, body: bytes, timeout_s: float = 120, **fields: str) -> Upload:
        started = time.monotonic()
        answer = self.session.post(
            f"{self.base_url}/api/upload",
            files={"file": ("products.csv", body, "text/csv")},
            data=fields,
            timeout=timeout_s,
        )
        seconds = time.monotonic() - started
        if answer.status_code != 202:
            raise ApiError(f"upload answered {answer.status_code}: {answer.text[:500]}")
        data = answer.json()
        return Upload(data["request_id"], seconds, started, data["images"])

    def status(self, request_id: str, per_page: int | None = 1) -> dict:
        params = {"per_page": per_page} if per_page else None
        answer = self.session.get(f"{self.base_url}/api/status/{request_id}", params=params, timeout=60)
        if answer.status_code != 200:
            raise ApiError(f"status answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def wait_until(self, request_id: str, done, timeout_s: float, interval_s: float = 0.1) -> tuple[float, dict]:
        """Poll cheaply (one product a page) until ``done(status)``; (time.monotonic() then, status).

        Returns the last status with ``timed_out`` set when ``timeout_s`` passes first.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(request_id)
            now = time.monotonic()
            if done(status):
                return now, status
            if now > deadline:
                status["timed_out"] = True
                return now, status
            time.sleep(interval_s)

    def wait_final(self, request_id: str, timeout_s: float, interval_s: float = 0.1) -> tuple[float, dict]:
        return self.wait_until(request_id, lambda s: s["status"] in FINAL, timeout_s, interval_s)

    def close(self) -> None:
        self.session.close()
