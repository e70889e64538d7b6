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
    #: images/s of CPU-only runs on the same bytes, by codec path (see CODECS): the limit is the faster one's
    cpu_limits: dict[str, float] = field(default_factory=dict)
    others_share: float = 0.0  #: of the machine's CPU, taken by processes not the bench's during the case
    cpu_limit_others_share: float = 0.0  #: the same during the CPU-only runs
    #: The peer's images/s on the same case, measured right after it (see peer_thumbor); None when not run
    peer_rate: float | None = None
    peer_ok: int = 0

    @property
    def cpu_limit(self) -> float | None:
        return max(self.cpu_limits.values()) if self.cpu_limits else None

    @property
    def faster_codec(self) -> str | None:
        return max(self.cpu_limits, key=self.cpu_limits.get) if self.cpu_limits else None

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


#: The codec paths a CPU limit is measured with: the service's own pipeline (Pillow), and libvips alone, as a
#: thumbnailing service would call it (one thread a process).
CODECS = ("pillow", "libvips")


def _compress_pillow(data: bytes, max_dimension: int | None) -> int:
    from imaging import pipeline

    return len(pipeline.compress(data, quality=50, max_dimension=max_dimension).data)


def _compress_libvips(data: bytes, max_dimension: int | None) -> int:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    if max_dimension:
        image = pyvips.Image.thumbnail_buffer(data, max_dimension, height=max_dimension, size="down")
    else:
        image = pyvips.Image.new_from_buffer(data, "", access="sequential").autorot()
    if image.hasalpha():
        image = image.flatten(background=255)
    if image.bands == 1:
        image = image.colourspace("srgb")
    return len(image.jpegsave_buffer(Q=50, keep=pyvips.ForeignKeep.NONE, subsample_mode="on"))


def _compress_one(job: tuple[str, int, int | None]) -> int:
    codec, index, max_dimension = job
    compress = _compress_pillow if codec == "pillow" else _compress_libvips
    return compress(_POOL_BODIES[index], max_dimension)


def cpu_limit(paths: list[Path], photos: list[int], max_dimension: int | None, processes: int, codec: str) -> float:
    """images/s of ``processes`` processes recompressing the same bytes from memory with ``codec``, nothing else."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_load_bodies, initargs=([str(p) for p in paths],)) as pool:
        # Warm-up: imports, the codec's plugins and the allocator, in every process.
        warm = [(codec, index, max_dimension) for index in range(len(paths))] * processes
        pool.map(_compress_one, warm, chunksize=1)
        started = time.perf_counter()
        pool.map(_compress_one, [(codec, index, max_dimension) for index in photos], chunksize=1)
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
