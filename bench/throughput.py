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
    fields: dict[str, str] | None = None,
) -> Throughput:
    """Upload ``images`` distinct URLs and time the request from POST to its final status.

    A request not final after ``deadline_s`` counts the images done by then (``timed_out``); its
    leftovers keep the workers busy, so the caller starts a fresh service before the next case.
    """
    workers = service.worker_processes
    sources = server.sources(images, latency_s, tag)
    fields = dict(fields or {}) | ({"max_dimension": str(max_dimension)} if max_dimension else {})
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


@dataclass(frozen=True)
class PlannedLimit:
    """The same-run limit of a profile case's work from memory, and what its checks and hash cost there."""

    rate: float  #: images/s: every rendition of each source, from one decode, with the checks and the hash
    check_share: float  #: of the CPU time per image, the compliance checks' and the perceptual hash's
    check_ms: float  #: their time per image, in ms
    image_ms: float  #: the whole image's time, in ms


_PLAN: list = []


def _load_planned(paths: list[str], form: dict[str, str]) -> None:
    from output_plan import fields

    _load_bodies(paths)
    _PLAN[:] = [fields.read_plan(form, {"format": "jpeg", "quality": 50, "target_score": None, "max_dimension": None})]


def _compress_planned(index: int) -> tuple[float, float]:
    """One source's renditions as the worker makes them for the plan: (seconds in all, seconds checking)."""
    from imaging import renditions
    from outputs import rendition_making

    plan = _PLAN[0]
    checking = [0.0]

    def timed(inspect):
        def run(*args):
            started = time.perf_counter()
            try:
                return inspect(*args)
            finally:
                checking[0] += time.perf_counter() - started

        return run

    checked = plan.rules is not None
    started = time.perf_counter()
    renditions.compress_renditions(
        _POOL_BODIES[index],
        [item.spec for item in plan.renditions],
        inspect_source=timed(rendition_making.source_inspector(checked, plan.duplicates)),
        inspect_output=timed(rendition_making.output_inspector) if checked else None,
        inspected=(0,) if checked else (),
        keep_metadata=plan.metadata == "keep_rights",
    )
    return time.perf_counter() - started, checking[0]


def planned_limit(paths: list[Path], photos: list[int], form: dict[str, str], processes: int) -> PlannedLimit:
    """images/s of ``processes`` processes making a plan's renditions (``form``: the upload's fields) of the same
    bytes from memory, as the worker makes them (one decode, the checks, the hash), nothing else."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_load_planned, initargs=([str(p) for p in paths], form)) as pool:
        pool.map(_compress_planned, list(range(len(paths))) * processes, chunksize=1)
        started = time.perf_counter()
        timings = pool.map(_compress_planned, photos, chunksize=1)
        elapsed = time.perf_counter() - started
    whole = sum(total for total, _ in timings)
    checking = sum(checked for _, checked in timings)
    return PlannedLimit(
        rate=len(photos) / elapsed,
        check_share=checking / whole if whole else 0.0,
        check_ms=1000 * checking / len(timings),
        image_ms=1000 * whole / len(timings),
    )


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
    #: The whole service's proportional set size (shared pages counted once), at its first sample and its peak.
    service_pss_idle_mib: float = 0.0
    service_pss_peak_mib: float = 0.0

    @classmethod
    def merge(cls, memories: list[MemorySampler]) -> PoolMemory:
        """What several services' samplers saw, as one (pids do not repeat while the bench runs)."""
        merged = cls()
        for sampler in memories:
            merged.peak_mib.update(sampler.memory.peak_mib)
            merged.rss_mib.update(sampler.memory.rss_mib)
            merged.replaced += sampler.memory.replaced
            merged.service_pss_idle_mib = max(merged.service_pss_idle_mib, sampler.memory.service_pss_idle_mib)
            merged.service_pss_peak_mib = max(merged.service_pss_peak_mib, sampler.memory.service_pss_peak_mib)
        merged.services = len(memories)
        return merged


def _read_pss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def service_pss_mib(service: RunningService) -> float:
    """The proportional set size of every process of the service, in MiB: shared pages counted once in all."""
    return sum(_read_pss_mib(pid) for pid in service.service_pids())


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
        pss = service_pss_mib(self.service)
        if not self.memory.service_pss_idle_mib:
            self.memory.service_pss_idle_mib = pss
        self.memory.service_pss_peak_mib = max(self.memory.service_pss_peak_mib, pss)
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
