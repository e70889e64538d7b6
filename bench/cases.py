"""The other measurements: upload answers, status polls under load, fairness and webhooks."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import requests
from client import Api, Upload, csv_of
from sources import HOST, SourceServer
from stack import RunningService

# ---------------------------------------------------------------------------------------------------
# Upload answer times


@dataclass
class UploadTimes:
    small_seconds: list[float]
    small_urls: int
    small_bytes: int
    big_seconds: float | None
    big_urls: int
    big_bytes: int
    background_images: int
    background_status: str
    note: str = ""


def _dead_urls(count: int, prefix: str) -> list[str]:
    # Port 80 on 127.0.0.2, where nobody listens: short URLs (370,000 of them fit the 10 MiB cap),
    # and a worker that reaches one fails fast with a refused connection.
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    urls = []
    for n in range(count):
        name = ""
        while True:
            n, rest = divmod(n, 36)
            name = digits[rest] + name
            if n == 0:
                break
        urls.append(f"http://{HOST}/{prefix}{name}")
    return urls


def port_80_is_free() -> bool:
    import socket

    try:
        with socket.create_connection((HOST, 80), timeout=1):
            return False
    except OSError:
        return True


def upload_times(
    service: RunningService, api: Api, server: SourceServer, *, repeats: int, small_rows: int, big_rows: int
) -> UploadTimes:
    """p50 of 5-URL-per-row uploads while the workers are busy, then one 37-URL-per-row upload."""
    background = api.upload(csv_of([s.url for s in server.sources(400, 0.1, "busy")]))
    api.wait_until(background.request_id, lambda s: s["progress"]["completed_images"] >= 2, 60)
    small: list[float] = []
    small_bytes = 0
    for n in range(repeats):
        body = csv_of(_dead_urls(small_rows * 5, f"s{n}/"), per_row=5)
        small_bytes = len(body)
        small.append(api.upload(body).seconds)
    note = ""
    big_seconds = None
    body = csv_of(_dead_urls(big_rows * 37, ""), per_row=37)
    if not port_80_is_free():
        note = f"skipped the {big_rows * 37}-URL upload: something listens on {HOST}:80"
    elif len(body) > 10 * 1024 * 1024:
        note = f"skipped the {big_rows * 37}-URL upload: its CSV is {len(body)} bytes, over the 10 MiB cap"
    else:
        big_seconds = api.upload(body, timeout_s=180).seconds
    status = api.status(background.request_id)["status"]
    return UploadTimes(small, small_rows * 5, small_bytes, big_seconds, big_rows * 37, len(body), 400, status, note)


# ---------------------------------------------------------------------------------------------------
# Status polls under load


@dataclass
class Polls:
    pollers: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    not_modified: int
    etag: bool  #: the service answered an ETag, so pollers sent If-None-Match
    pace_s: float | None  #: each poller's interval; None: back to back
    request_status: str
    page_images: int

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds


@dataclass(frozen=True)
class WrkRun:
    """What wrk (a load tool in C, from Debian) saw of one URL: requests/s, latency percentiles, non-2xx/3xx."""

    path: str
    rate: float
    p50_ms: float
    p99_ms: float
    bad: int


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, headers: dict[str, str], connections: int = 50, seconds: float = 10.0) -> WrkRun | None:
    """``connections`` keep-alive connections on 2 threads GETting ``url`` for ``seconds``; None without wrk."""
    if shutil.which("wrk") is None:
        return None
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = {
        point: float(value) * _WRK_UNITS[unit]
        for point, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(bad.group(1)) if bad else 0) + (sum(int(n) for n in errors.groups()) if errors else 0)
    return WrkRun(url.split("/", 3)[-1], rate, latency.get("50", 0.0), latency.get("99", 0.0), failed)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def polls(
    service: RunningService, key: str | None, request_id: str, *, pollers: int, seconds: float, pace_s: float | None
) -> Polls:
    """``pollers`` threads, each with its own session, GET the status's first page for ``seconds``."""
    url = f"{service.base_url}/api/status/{request_id}"
    latencies: list[float] = []
    counters = {"errors": 0, "not_modified": 0, "etag": False, "page_images": 0}
    lock = threading.Lock()
    start = threading.Barrier(pollers + 1)
    stop_at: list[float] = []

    def poller(offset: float) -> None:
        session = requests.Session()
        session.trust_env = False
        if key:
            session.headers["Authorization"] = f"Bearer {key}"
        etag = None
        mine: list[float] = []
        errors = not_modified = 0
        start.wait()
        next_at = time.monotonic() + offset
        while True:
            if pace_s is not None:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += pace_s
            if time.monotonic() >= stop_at[0]:
                break
            headers = {"If-None-Match": etag} if etag else {}
            t0 = time.perf_counter()
            try:
                answer = session.get(url, headers=headers, timeout=30)
                answer.content  # noqa: B018  (read the whole body, as a client would)
            except requests.RequestException:
                errors += 1
                continue
            mine.append((time.perf_counter() - t0) * 1000)
            if answer.status_code == 304:
                not_modified += 1
            elif answer.status_code != 200:
                errors += 1
            elif answer.headers.get("ETag"):
                etag = answer.headers["ETag"]
            if answer.status_code == 200 and not counters["page_images"]:
                page = answer.json().get("products", [])
                counters["page_images"] = sum(len(p["images"]) for p in page)
        session.close()
        with lock:
            latencies.extend(mine)
            counters["errors"] += errors
            counters["not_modified"] += not_modified
            counters["etag"] = counters["etag"] or etag is not None

    threads = [
        threading.Thread(target=poller, args=((pace_s or 0) * n / pollers,), daemon=True) for n in range(pollers)
    ]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    stop_at.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    elapsed = time.monotonic() - began
    checker = Api(service.base_url, key)
    status = checker.status(request_id)["status"]
    checker.close()
    return Polls(
        pollers,
        elapsed,
        latencies,
        counters["errors"],
        counters["not_modified"],
        counters["etag"],
        pace_s,
        status,
        counters["page_images"],
    )


# ---------------------------------------------------------------------------------------------------
# Fairness and webhooks


@dataclass
class SmallBehindBig:
    backlog_images: int
    small_images: int
    to_final_s: list[float]
    webhook_s: list[float | None]  #: arrival minus the request's completed_at (database, microseconds)
    backlog_done_at_end: int
    backlog_status: str


def small_behind_big(
    service: RunningService, api: Api, server: SourceServer, *, backlog: int, small: int, repeats: int
) -> SmallBehindBig:
    """Small requests with a webhook, each uploaded while a big one is processing."""
    big = api.upload(csv_of([s.url for s in server.sources(backlog, 0.1, "backlog")]))
    api.wait_until(big.request_id, lambda s: s["progress"]["completed_images"] >= 4, 60)
    to_final: list[float] = []
    webhook: list[float | None] = []
    for n in range(repeats):
        sources = server.sources(small, 0.1, f"small{n}", first_photo=n)
        upload = api.upload(csv_of([s.url for s in sources]), webhook_url=server.hook_url())
        final_at, _status = api.wait_final(upload.request_id, 60, interval_s=0.05)
        to_final.append(final_at - upload.started)
        delivery = server.wait_delivery(upload.request_id, 30)
        completed_at = service.query(
            "SELECT extract(epoch FROM completed_at) FROM requests WHERE id = %s", (upload.request_id,)
        )[0][0]
        if delivery is None or completed_at is None:
            webhook.append(None)
        else:
            webhook.append(delivery.arrived_at - float(completed_at))
    status = api.status(big.request_id)
    progress = status["progress"]
    return SmallBehindBig(
        backlog, small, to_final, webhook, progress["completed_images"] + progress["failed_images"], status["status"]
    )


@dataclass
class Tenants:
    images_each: int
    window_s: float
    done: dict[str, int]  #: images finished in the window, per tenant
    before: dict[str, int]  #: images finished before the window opened (while the later upload ran)
    upload_s: dict[str, float]

    @property
    def ratio(self) -> float:
        values = list(self.done.values())
        return min(values) / max(values) if max(values) else 0.0


def two_tenants(
    service: RunningService, keys: tuple[str, str], server: SourceServer, *, images: int, window_s: float
) -> Tenants:
    """Two tenants upload at the same moment; images finished for each over the first ``window_s``.

    The window opens when the later upload has answered; finishing times are the database's.
    """
    apis = {key: Api(service.base_url, key) for key in keys}
    bodies = {key: csv_of([s.url for s in server.sources(images, 0.1, f"tenant{n}")]) for n, key in enumerate(keys)}
    uploads: dict[str, Upload] = {}
    answered: dict[str, float] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(keys))

    def upload(key: str) -> None:
        try:
            barrier.wait()
            uploads[key] = apis[key].upload(bodies[key])
            answered[key] = time.time()
        except BaseException as error:  # reported by the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    opened = max(answered.values())
    time.sleep(max(0.0, opened + window_s + 1.0 - time.time()))
    done, before, upload_s = {}, {}, {}
    count = (
        "SELECT count(*) FILTER (WHERE finished_at >= to_timestamp(%s) AND finished_at < to_timestamp(%s)),"
        " count(*) FILTER (WHERE finished_at < to_timestamp(%s)) FROM images WHERE request_id = %s"
    )
    for n, key in enumerate(keys):
        name = f"tenant {'AB'[n]}"
        in_window, early = service.query(count, (opened, opened + window_s, opened, uploads[key].request_id))[0]
        done[name], before[name], upload_s[name] = in_window, early, uploads[key].seconds
    for api in apis.values():
        api.close()
    return Tenants(images, window_s, done, before, upload_s)
