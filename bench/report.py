"""The one results table, and ``bench/RESULTS.md`` with the run's date, machine and settings."""

from __future__ import annotations

import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cases import Polls, PoolMemory, SmallBehindBig, Tenants, Throughput, UploadTimes, percentile

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    measure: str
    setup: str
    result: str
    target: str
    met: bool | None  #: None: no target, or not measured

    def cells(self) -> list[str]:
        mark = "—" if self.met is None else ("met" if self.met else "**not met**")
        return [self.measure, self.setup, self.result, self.target, mark]


def table(rows: list[Row]) -> str:
    lines = ["| Measure | Setup | Result | Target | Met |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def _s(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def failed(measure: str, setup: str, target: str, error: str) -> Row:
    return Row(measure, setup, f"not measured: {error}", target, None)


def photos_row(photos: list, description: str) -> Row:
    sizes = sum(photo.size for photo in photos) / len(photos)
    return Row(
        "Source photos",
        description,
        f"{len(photos)} photos, {sizes / 1e6:.2f} MB each on average, served in turn",
        "—",
        None,
    )


def throughput_row(case: Throughput, target_ratio: float, deadline_s: float) -> Row:
    size = "full size" if case.max_dimension is None else f"`max_dimension={case.max_dimension}`"
    measure = f"Throughput, {size}, {case.latency_s * 1000:.0f} ms source latency"
    setup = (
        f"{case.images} distinct URLs ({case.images // 5} products x 5), POST to final status (or the images done "
        f"at {deadline_s:g} s); {case.workers} image worker processes"
    )
    outcome = f"{case.rate:.1f} images/s ({_s(case.seconds)}, {case.completed} completed, {case.failed} failed)"
    if case.timed_out:
        outcome += f"; **not final** ({case.status}) at the deadline: the rate of the images done"
    if case.cpu_limit is None:
        return Row(measure, setup, outcome + "; CPU limit not measured", f"ratio ≥ {target_ratio}", None)
    ratio = case.ratio or 0.0
    outcome += f"; CPU limit {case.cpu_limit:.1f} images/s; **ratio {ratio:.2f}**"
    met = ratio >= target_ratio and case.failed == 0
    return Row(measure, setup, outcome, f"ratio ≥ {target_ratio}", met)


def bytes_row(cases: list[Throughput]) -> Row:
    parts = []
    for case in cases:
        size = "full" if case.max_dimension is None else str(case.max_dimension)
        share = case.bytes_out / case.bytes_in if case.bytes_in else 0
        parts.append(
            f"{size}/{case.latency_s * 1000:.0f} ms: {_mb(case.bytes_in)} in → {_mb(case.bytes_out)} out "
            f"({share:.0%}, {case.outputs} files)"
        )
    return Row(
        "Bytes in and out",
        "the throughput cases: sources served vs outputs stored under INSTANCE_DIR/media/<request_id>/",
        "; ".join(parts),
        "—",
        None,
    )


def scaling_row(one: Throughput, two: Throughput, per_core: int) -> Row:
    ratio = two.rate / one.rate if one.rate else 0.0
    return Row(
        "1 vs 2 cores of image worker processes",
        f"`WORKER_CONCURRENCY={one.workers}` pinned to one core (`taskset -c 0`) vs `{two.workers}` on both "
        f"(the launcher starts {per_core} per core), {one.images} distinct URLs, full size, "
        f"{one.latency_s * 1000:.0f} ms source latency",
        f"1 core: {one.rate:.1f} images/s; 2 cores: {two.rate:.1f} images/s; **{ratio:.2f}x**",
        "≥ 1.8x",
        ratio >= 1.8,
    )


def describe_commands(commands: dict[str, list[str]]) -> str:
    """The processes' command lines, without the binaries' paths, the ports and the log options."""
    skip = {"--bind", "--access-logfile", "--hostname", "--loglevel"}
    parts = []
    for kind, argv in commands.items():
        words, index = [Path(argv[0]).name], 1
        while index < len(argv):
            if argv[index] in skip:
                index += 2
                continue
            words.append(argv[index])
            index += 1
        parts.append(f"{kind}: `{' '.join(words)}`")
    return "; ".join(parts)


def upload_rows(times: UploadTimes) -> list[Row]:
    busy = f"workers busy with a {times.background_images}-image request"
    small_p50 = statistics.median(times.small_seconds)
    rows = [
        Row(
            f"Upload answered, {times.small_urls // 5:,} rows x 5 URLs ({times.small_urls:,} URLs, "
            f"{_mb(times.small_bytes)})",
            f"p50 of {len(times.small_seconds)} uploads, {busy}",
            f"**p50 {_s(small_p50)}** (each: {', '.join(f'{v:.2f}' for v in times.small_seconds)} s)",
            "< 1 s",
            small_p50 < 1.0,
        )
    ]
    big = f"Upload answered, {times.big_urls // 37:,} rows x 37 URLs ({times.big_urls:,} URLs, {_mb(times.big_bytes)})"
    if times.big_seconds is None:
        rows.append(Row(big, "1 upload", times.note or "not measured", "< 5 s", None))
    else:
        rows.append(
            Row(
                big,
                f"1 upload, after the above, {busy}",
                f"**{_s(times.big_seconds)}**",
                "< 5 s",
                times.big_seconds < 5,
            )
        )
    return rows


def polls_row(result: Polls, request_images: int, products: int) -> Row:
    p50, p99 = percentile(result.latencies_ms, 0.5), percentile(result.latencies_ms, 0.99)
    pace = "back to back (no pause)" if result.pace_s is None else f"one poll every {result.pace_s:g} s each"
    etag = (
        f"the service answered ETag, so pollers sent If-None-Match ({result.not_modified} answered 304)"
        if result.etag
        else "no ETag answered, so no If-None-Match"
    )
    return Row(
        f"Status polls, {result.pollers} pollers, {pace}",
        f"GET /api/status/<id> (first page: {products} products, {result.page_images} images) of a "
        f"{request_images:,}-image request while it processes ({result.request_status} at the end); "
        f"{result.seconds:.0f} s; {etag}",
        f"p50 {p50:.0f} ms, **p99 {p99:.0f} ms**, {result.rate:.0f} polls/s in all "
        f"({len(result.latencies_ms)} polls, {result.errors} errors)",
        "p99 < 50 ms",
        p99 < 50 and result.errors == 0,
    )


def memory_rows(
    during: PoolMemory | None, images: int, large: int, long_run: tuple[PoolMemory, PoolMemory, int] | None
) -> list[Row]:
    rows = []
    if during is not None and during.peak_mib:
        peaks = sorted(during.peak_mib.values())
        over = sum(peak * 1048576 >= 150e6 for peak in peaks)
        rows.append(
            Row(
                "Image worker pool processes, peak RSS (VmHWM)",
                f"sampled twice a second during the throughput cases ({images:,} images, {large:,} of them "
                "8-12 MP); celery replaces a process that grew past `worker_max_memory_per_child` after its task",
                f"{len(peaks)} processes seen ({during.replaced} replaced): **max {_mb(peaks[-1] * 1048576)}**, "
                f"median {_mb(statistics.median(peaks) * 1048576)}; {over} at or over 150 MB",
                "< 150 MB",
                over == 0,
            )
        )
    if long_run is None:
        rows.append(
            Row(
                "Image worker pool RSS growth over 5,000 images",
                "not run: `make bench BENCH_ARGS=--long` (a few more minutes)",
                "—",
                "no growth",
                None,
            )
        )
        return rows
    before, after, count = long_run
    lived = [pid for pid in before.alive if pid in after.alive]
    growth = sorted((after.rss_mib[pid] - before.rss_mib[pid]) * 1048576 for pid in lived)
    replaced = len(before.alive - after.alive) + len(set(after.peak_mib) - before.alive - after.alive)
    worst = growth[-1] if growth else 0.0
    typical = statistics.median(growth) if growth else 0.0
    rows.append(
        Row(
            f"Image worker pool RSS growth over {count:,} images",
            "VmRSS of each pool process after a 200-image warm-up vs after the run (full size, 0 ms latency)",
            f"{len(lived)} processes lived through it: median growth {_mb(typical)}, "
            f"**max {_mb(worst)}**; {replaced} replaced during the run (growth past the cap is hidden by that); "
            f"peak RSS of any: {_mb(max(after.peak_mib.values(), default=0) * 1048576)}",
            "no growth (< 10 MB)",
            bool(growth) and worst < 10e6 and replaced == 0,
        )
    )
    return rows


def small_behind_big_rows(small: SmallBehindBig) -> list[Row]:
    rows = [
        Row(
            f"A {small.small_images}-image request behind a {small.backlog_images:,}-image one, time to final",
            f"uploaded while the big request processes (same tenant), {len(small.to_final_s)} times one after the "
            f"other; the big one had {small.backlog_done_at_end:,} images done at the end ({small.backlog_status})",
            f"**p50 {_s(statistics.median(small.to_final_s))}**, max {_s(max(small.to_final_s))}",
            "< 5 s",
            max(small.to_final_s) < 5,
        )
    ]
    arrived = [v for v in small.webhook_s if v is not None]
    missing = len(small.webhook_s) - len(arrived)
    result = (
        f"**p50 {statistics.median(arrived) * 1000:.0f} ms**, max {max(arrived) * 1000:.0f} ms"
        if arrived
        else "no webhook arrived"
    )
    if missing:
        result += f"; {missing} did not arrive within 30 s"
    rows.append(
        Row(
            "Webhook latency",
            "the small requests above: from the request's completed_at (database, µs) to the webhook's arrival "
            "at a receiver on 127.0.0.2, with thousands of images waiting behind",
            result,
            "< 1 s",
            bool(arrived) and not missing and max(arrived) < 1,
        )
    )
    return rows


def tenants_row(tenants: Tenants) -> Row:
    done = ", ".join(f"{name}: {count}" for name, count in tenants.done.items())
    early = ", ".join(f"{name} {count}" for name, count in tenants.before.items())
    uploads = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in tenants.upload_s.items())
    return Row(
        "Two tenants' big requests",
        f"two API keys upload {tenants.images_each} images each at the same moment (answered in {uploads}); "
        f"images finished per tenant in the first {tenants.window_s:g} s after both had answered "
        f"(database finishing times)",
        f"{done}; **ratio {tenants.ratio:.2f}** (finished before the window opened: {early})",
        "≈ 1 (none set)",
        None,
    )


def _read(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_facts() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kib = 0
    import os

    import PIL

    commit = _read(["git", "rev-parse", "--short", "HEAD"])
    dirty = _read(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "Memory": f"{memory_kib / 1024 / 1024:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Pillow": PIL.__version__,
        "Commit": commit + (" with uncommitted changes in the work tree" if dirty else ""),
    }


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (all cores, /proc/stat)."""
    import os

    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for (their own children included)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def write_results(
    path: Path,
    *,
    header: dict[str, str],
    settings: list[str],
    photos: str,
    main_table: str,
    encoders: str | None,
    notes: list[str],
) -> None:
    lines = ["# Benchmark results", "", "Written by `make bench` (`bench/run_bench.py`); every run replaces it.", ""]
    lines += [f"- **{name}:** {value}" for name, value in header.items()]
    lines += ["", "## Settings", ""]
    lines += [f"- {item}" for item in settings]
    lines += [f"- Photos: {photos}", "", "## Results", "", main_table, ""]
    if notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    if encoders:
        lines += ["## Encoders for reference (`bench/bench_encoders.py`)", "", encoders, ""]
    path.write_text("\n".join(lines))
