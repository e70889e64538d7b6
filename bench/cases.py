"""The measurements: each takes a running service and the sources, and returns what it saw."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from client import Api, Upload, csv_of
from sources import HOST, SourceServer
from stack import RunningService

# ---------------------------------------------------------------------------------------------------
# Throughput and the same-run CPU limit


@dataclass
class Throughput:
    label: str
    images: int
    latency_s: float
    max_dimension: int | None
    workers: int
    seconds: float
    completed: int
    failed: int
    status: str
    timed_out: bool
    bytes_in: int
    bytes_out: int
    outputs: int
    photos: list[int] = field(repr=False, default_factory=list)
    cpu_limit: float | None = None  #: images/s of the CPU-only run on the same bytes

    @property
    def rate(self) -> float:
        return (self.completed + self.failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float | None:
        return self.rate / self.cpu_limit if self.cpu_limit else None


def throughput(
    service: RunningService,
    api: Api,
    server: SourceServer,
    *,
    label: str,
    images: int,
    latency_s: float,
    max_dimension: int | None,
    tag: str,
    deadline_s: float,
) -> Throughput:
    """Upload ``images`` distinct URLs and time the request from POST to its final status.

    A request not final after ``deadline_s`` counts the images done by then (``timed_out``); its
    leftovers keep the workers busy, so the caller starts a fresh service before the next case.
    """
    workers = service.worker_processes
    sources = server.sources(images, latency_s, tag)
    fields = {"max_dimension": str(max_dimension)} if max_dimension else {}
    upload = api.upload(csv_of([s.url for s in sources]), **fields)
    final_at, status = api.wait_final(upload.request_id, deadline_s)
    progress = status["progress"]
    outputs, bytes_out = service.media_bytes(upload.request_id)
    size_of = {s.url: s.size for s in sources}
    completed_urls = service.query(
        "SELECT source_url FROM images WHERE request_id = %s AND status = 'COMPLETED'", (upload.request_id,)
    )
    return Throughput(
        label=label,
        images=images,
        latency_s=latency_s,
        max_dimension=max_dimension,
        workers=workers,
        seconds=final_at - upload.started,
        completed=progress["completed_images"],
        failed=progress["failed_images"],
        status=status["status"],
        timed_out=bool(status.get("timed_out")),
        bytes_in=sum(size_of.get(url, 0) for (url,) in completed_urls),
        bytes_out=bytes_out,
        outputs=outputs,
        photos=[s.photo for s in sources],
    )


def warm_up(service: RunningService, api: Api, server: SourceServer) -> None:
    """An image per pool process and a few, so that no measurement pays for fresh processes and connections."""
    sources = server.sources(service.worker_processes + 4, 0.0, "warm-up")
    upload = api.upload(csv_of([s.url for s in sources]))
    api.wait_final(upload.request_id, 120)


_POOL_BODIES: list[bytes] = []


def _load_bodies(paths: list[str]) -> None:
    _POOL_BODIES[:] = [Path(path).read_bytes() for path in paths]


def _compress_one(job: tuple[int, int | None]) -> int:
    import pipeline

    index, max_dimension = job
    return len(pipeline.compress(_POOL_BODIES[index], quality=50, max_dimension=max_dimension).data)


def cpu_limit(paths: list[Path], photos: list[int], max_dimension: int | None, processes: int) -> float:
    """images/s of ``processes`` processes recompressing the same bytes from memory, nothing else."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_load_bodies, initargs=([str(p) for p in paths],)) as pool:
        # Warm-up: imports, Pillow's plugins and the allocator, in every process.
        pool.map(_compress_one, [(index, max_dimension) for index in range(len(paths))] * processes, chunksize=1)
        started = time.perf_counter()
        pool.map(_compress_one, [(index, max_dimension) for index in photos], chunksize=1)
        elapsed = time.perf_counter() - started
    return len(photos) / elapsed


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
    status = Api(service.base_url, key).status(request_id)["status"]
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


# ---------------------------------------------------------------------------------------------------
# Memory of the image worker's pool processes


@dataclass
class PoolMemory:
    """What a sampler saw of the image worker's pool processes (celery replaces those that grew)."""

    peak_mib: dict[int, float] = field(default_factory=dict)  #: VmHWM, the peak resident set, per pid
    rss_mib: dict[int, float] = field(default_factory=dict)  #: the last VmRSS seen, per pid
    alive: set[int] = field(default_factory=set)  #: pool processes at the last sample

    @property
    def replaced(self) -> int:
        return len(set(self.peak_mib) - self.alive)

    @classmethod
    def merge(cls, memories: list[MemorySampler]) -> PoolMemory:
        """What several services' samplers saw, as one (pids do not repeat while the bench runs)."""
        merged = cls()
        for sampler in memories:
            merged.peak_mib.update(sampler.memory.peak_mib)
            merged.rss_mib.update(sampler.memory.rss_mib)
        merged.alive = memories[-1].memory.alive if memories else set()
        return merged


def _read_memory(pid: int) -> tuple[float, float] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024
    except (KeyError, ValueError, IndexError):
        return None


class MemorySampler:
    """Samples the pool's VmHWM and VmRSS twice a second, so a process replaced mid-run still counts."""

    def __init__(self, service: RunningService, interval_s: float = 0.5) -> None:
        self.service = service
        self.interval_s = interval_s
        self.memory = PoolMemory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def sample(self) -> PoolMemory:
        alive = set()
        for pid in self.service.worker_pool_pids():
            read = _read_memory(pid)
            if read is None:
                continue
            alive.add(pid)
            peak, rss = read
            self.memory.peak_mib[pid] = max(peak, self.memory.peak_mib.get(pid, 0.0))
            self.memory.rss_mib[pid] = rss
        self.memory.alive = alive
        return self.memory

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
