"""The one results table, and ``bench/RESULTS.md`` with the run's date, machine and settings."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from cases import Polls, SmallBehindBig, Tenants, UploadTimes, WrkRun, percentile
from throughput import PlannedLimit, PoolMemory, Throughput

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    measure: str
    setup: str
    result: str
    target: str
    met: bool | None  #: None: no target, or not measured

    def cells(self) -> list[str]:
        mark = "—" if self.met is None else ("met" if self.met else "**not met**")  # None: no target, or not judged
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


#: Other processes' share of the CPU from which a figure is noted, and from which it is not judged.
NOTED, DISTURBED = 0.05, 0.2


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
    limits = ", ".join(f"{codec} {rate:.1f}" for codec, rate in case.cpu_limits.items())
    outcome += f"; CPU limits {limits} images/s; **ratio {ratio:.2f}** to the faster ({case.faster_codec})"
    disturbed = max(case.others_share, case.cpu_limit_others_share)
    comparable = disturbed < DISTURBED
    if disturbed >= NOTED:
        outcome += (
            f" (other processes on the machine took {case.others_share:.0%} of the CPU during the case, "
            f"{case.cpu_limit_others_share:.0%} during the CPU limits{'' if comparable else ': not comparable'})"
        )
    met = ratio >= target_ratio and case.failed == 0 if comparable else None
    return Row(measure, setup, outcome, f"ratio ≥ {target_ratio}", met)


def profile_rows(
    case: Throughput, limit: PlannedLimit, fields: dict[str, str], check_target: float, deadline_s: float
) -> list[Row]:
    asked = ", ".join(f"`{name}={value}`" for name, value in fields.items())
    setup = (
        f"{case.images} distinct URLs, 0 ms source latency, {asked}: each image's three renditions from one decode, "
        f"the source and the first rendition checked, the source hashed; POST to final status (or the images done "
        f"at {deadline_s:g} s); {case.workers} image worker processes"
    )
    outcome = f"{case.rate:.1f} images/s ({_s(case.seconds)}, {case.completed} completed, {case.failed} failed)"
    if case.timed_out:
        outcome += f"; **not final** ({case.status}) at the deadline: the rate of the images done"
    ratio = case.rate / limit.rate if limit.rate else 0.0
    outcome += f"; the same work from memory {limit.rate:.1f} images/s: **ratio {ratio:.2f}**"
    disturbed = max(case.others_share, case.cpu_limit_others_share)
    if disturbed >= NOTED:
        outcome += (
            f" (other processes took {case.others_share:.0%} of the CPU during the case, "
            f"{case.cpu_limit_others_share:.0%} during the limit)"
        )
    checks = Row(
        "Profile: compliance checks and perceptual hash",
        "their time per image against the image's whole time making the profile case's renditions from memory "
        "(decode, trims, canvases, three encodes, checks, hash), on the case's photos",
        f"{limit.check_ms:.1f} ms of {limit.image_ms:.1f} ms per image: **{limit.check_share:.1%}**",
        f"< {check_target:.0%}",
        limit.check_share < check_target,
    )
    return [Row("Throughput, marketplace profile and three renditions", setup, outcome, "—", None), checks]


def peer_row(case: Throughput, target: float) -> Row:
    size = "full size" if case.max_dimension is None else f"`max_dimension={case.max_dimension}`"
    times = case.rate / case.peer_rate if case.peer_rate else 0.0
    return Row(
        f"Peer: thumbor 7.8, {size}, {case.latency_s * 1000:.0f} ms source latency",
        f"the same case's {case.images} sources (bytes of their own) through thumbor from PyPI: Pillow engine, "
        "quality 50, JPEG out, one process per core, 48 requests in flight, no storage; right after the "
        "service's case, the service idle. thumbor keeps no job, database, output or webhook",
        f"thumbor {case.peer_rate:.1f} images/s ({case.peer_ok} of {case.images} answered); the service "
        f"{case.rate:.1f}: **{times:.2f}x**",
        f"≥ {target}x",
        times >= target and case.peer_ok == case.images,
    )


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
        "the throughput cases: sources served vs the distinct outputs their images point at, under INSTANCE_DIR/media/",
        "; ".join(parts),
        "—",
        None,
    )


def scaling_row(one: Throughput, two: Throughput, per_core: int, deadline_s: float) -> Row:
    ratio = two.rate / one.rate if one.rate else 0.0
    disturbed = max(one.others_share, two.others_share)
    result = f"1 core: {one.rate:.1f} images/s; 2 cores: {two.rate:.1f} images/s; **{ratio:.2f}x**"
    if disturbed >= NOTED:
        result += f" (other processes on the machine took {one.others_share:.0%} and {two.others_share:.0%} of the CPU"
        result += ")" if disturbed < DISTURBED else ": not comparable)"
    return Row(
        "1 vs 2 cores of image worker processes",
        f"`WORKER_CONCURRENCY={one.workers}` pinned to one core (`taskset -c 0`) vs `{two.workers}` on both "
        f"(the launcher starts {per_core} per core), {one.images} distinct URLs, full size, "
        f"{one.latency_s * 1000:.0f} ms source latency, images done in at most {deadline_s:g} s each",
        result,
        "≥ 1.8x",
        ratio >= 1.8 if disturbed < DISTURBED else None,
    )


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


def poll_rate_row(status: WrkRun, health: WrkRun, request_images: int) -> Row:
    share = status.rate / health.rate if health.rate else 0.0
    return Row(
        "Status poll rate against `/healthz`, wrk, 50 connections",
        f"wrk (C, from Debian) with 50 keep-alive connections for 10 s on each URL of the same API, one after the "
        f"other, while the {request_images:,}-image request processes; plain GETs, no If-None-Match",
        f"status page {status.rate:.0f}/s (p50 {status.p50_ms:.0f} ms, p99 {status.p99_ms:.0f} ms, {status.bad} "
        f"failed); `/healthz` {health.rate:.0f}/s (p99 {health.p99_ms:.0f} ms): **{share:.2f}**",
        "≥ 0.5",
        share >= 0.5 and status.bad == 0,
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
                f"{len(peaks)} processes seen in {during.services} service start(s), {during.replaced} replaced by "
                f"celery: **max {_mb(peaks[-1] * 1048576)}**, "
                f"median {_mb(statistics.median(peaks) * 1048576)}; {over} at or over 150 MB",
                "< 150 MB",
                over == 0,
            )
        )
    if during is not None and during.service_pss_peak_mib:
        peak = during.service_pss_peak_mib * 1048576
        rows.append(
            Row(
                "Whole service memory, PSS",
                "every process `make run` starts (API, image, webhook and maintenance workers with their pools, "
                "beat), shared pages counted once; sampled twice a second, idle at its start and during the "
                f"throughput cases ({images:,} images, {large:,} of them 8-12 MP)",
                f"idle {_mb(during.service_pss_idle_mib * 1048576)}, **peak {_mb(peak)}**",
                "< 1,000 MB",
                peak < 1000e6,
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
    replaced = after.replaced - before.replaced
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
