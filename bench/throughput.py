"""Throughput of the service end to end, the same run's CPU limit, and the pool's memory meanwhile."""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from client import Api, csv_of
from sources import SourceServer
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
    others_share: float = 0.0  #: of the machine's CPU, taken by processes not the bench's during the case
    cpu_limit_others_share: float = 0.0  #: the same during the CPU-only run

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
    from imaging import pipeline

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
# Memory of the image worker's pool processes


@dataclass
class PoolMemory:
    """What a sampler saw of the image worker's pool processes (celery replaces those that grew)."""

    peak_mib: dict[int, float] = field(default_factory=dict)  #: VmHWM, the peak resident set, per pid
    rss_mib: dict[int, float] = field(default_factory=dict)  #: the last VmRSS seen, per pid
    alive: set[int] = field(default_factory=set)  #: pool processes at the last sample
    #: Pool processes seen that were gone by the last sample of their service: celery replaced them.
    replaced: int = 0
    services: int = 1  #: service starts these processes belong to

    @classmethod
    def merge(cls, memories: list[MemorySampler]) -> PoolMemory:
        """What several services' samplers saw, as one (pids do not repeat while the bench runs)."""
        merged = cls()
        for sampler in memories:
            merged.peak_mib.update(sampler.memory.peak_mib)
            merged.rss_mib.update(sampler.memory.rss_mib)
            merged.replaced += sampler.memory.replaced
        merged.services = len(memories)
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
        self.memory.replaced = len(set(self.memory.peak_mib) - alive)
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
