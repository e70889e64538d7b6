"""``make bench``: the service's real processes on a PostgreSQL and a Redis of the bench's own, real
photos served from 127.0.0.2, and one table of what matters: throughput against the same run's CPU
limit, upload and poll times, worker memory, fairness, webhook latency and scaling.

Usage: python bench/run_bench.py [--long] [--images N] [--skip-encoders]
       python bench/run_bench.py --quick | --only GROUP ... | --profile LATENCY_S   (no RESULTS.md)

Environment: BENCH_WORKER_CONCURRENCY (the image worker's processes; default: the launcher's),
BENCH_PG_FSYNC=off (default on, as in production). Writes bench/RESULTS.md; the service's logs of the
last run are kept in bench/results/logs/. Exits 0 whether or not targets are met, 1 if a group could
not be measured, 130 when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402
import report  # noqa: E402
from client import Api  # noqa: E402
from photos import describe, ensure_photos  # noqa: E402
from sources import SourceServer  # noqa: E402
from stack import ROOT, Stack, processes_per_core  # noqa: E402

import launcher  # noqa: E402

RESULTS = HERE / "RESULTS.md"
LOGS = HERE / "results" / "logs"
GROUPS = ("throughput", "scaling", "uploads", "polls", "fairness", "tenants")


@dataclass(frozen=True)
class Counts:
    """How many images each case uses; ``QUICK`` only checks that the bench itself works."""

    throughput: int = 400  # distinct URLs per throughput case
    upload_rows: int = 10_000
    poll_products: int = 2000  # x 5 URLs: a 10,000-image request
    poll_seconds: float = 10.0
    backlog: int = 5000
    tenant_images: int = 300
    tenant_window_s: float = 10.0
    long_images: int = 5000
    #: A throughput case not final by then counts the images done: keeps the run under 10 minutes.
    case_deadline_s: float = 35.0


QUICK = Counts(40, 1000, 200, 3.0, 500, 30, 3.0, 300, 35.0)

#: (label, source latency s, max_dimension, target ratio)
THROUGHPUT_CASES = (
    ("full/100ms", 0.1, None, 0.85),
    ("1024/100ms", 0.1, 1024, 0.85),
    ("full/500ms", 0.5, None, 0.8),
    ("full/0ms", 0.0, None, 0.9),
)

_started = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f} s] {message}", file=sys.stderr, flush=True)


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every process is stopped and every folder removed."""


def _stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts = QUICK if args.quick else Counts(throughput=args.images or Counts.throughput)
        self.photos = ensure_photos()
        self.paths = [photo.path for photo in self.photos]
        self.keys = (f"bench-a-{secrets.token_hex(8)}", f"bench-b-{secrets.token_hex(8)}")
        self.rows: list[report.Row] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        concurrency = os.environ.get("BENCH_WORKER_CONCURRENCY", "").strip()
        self.worker_env = {"WORKER_CONCURRENCY": concurrency} if concurrency else {}
        self.processes = os.cpu_count() or 2
        self.service_env: dict[str, str] | None = None  #: the throughput group's, for the settings
        self.throughput: list[cases.Throughput] = []
        self.memory: cases.PoolMemory | None = None
        self.server: SourceServer  #: set once the sources are up

    def _throughput(
        self,
        service,
        api: Api,
        label: str,
        images: int,
        latency_s: float,
        max_dimension: int | None,
        tag: str,
        deadline_s: float | None = None,
    ) -> cases.Throughput:
        log(f"throughput {label}: {images} images, {service.worker_processes} image worker processes")
        case = cases.throughput(
            service,
            api,
            self.server,
            label=label,
            images=images,
            latency_s=latency_s,
            max_dimension=max_dimension,
            tag=tag,
            deadline_s=deadline_s or self.counts.case_deadline_s,
        )
        log(
            f"  {case.rate:.1f} images/s in {case.seconds:.1f} s ({case.completed} completed, {case.failed} failed)"
            + (" NOT FINAL at the deadline" if case.timed_out else "")
        )
        return case

    @contextlib.contextmanager
    def _service(self, stack: Stack, name: str, env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()):
        """A fresh service, warmed up, with a client for tenant A."""
        with stack.service(name, self.worker_env if env is None else env, worker_wrapper=wrapper) as service:
            api = Api(service.base_url, self.keys[0])
            try:
                cases.warm_up(service, api, self.server)
                yield service, api
            finally:
                api.close()

    # -- groups -------------------------------------------------------------------------------------

    def group_throughput(self, stack: Stack) -> None:
        limits: dict[int | None, float] = {}
        memories = []
        with contextlib.ExitStack() as running:
            service = api = None
            for label, latency, max_dimension, _target in THROUGHPUT_CASES:
                if service is None:
                    running.close()
                    service, api = running.enter_context(self._service(stack, "throughput"))
                    memories.append(running.enter_context(cases.MemorySampler(service)))
                    self.service_env = service.env
                case = self._throughput(
                    service, api, label, self.counts.throughput, latency, max_dimension, label.replace("/", "-")
                )
                if case.timed_out:
                    service = None  # its leftovers would slow the next case: a fresh service for that
                if max_dimension not in limits:
                    # Ten of each photo: the case's own mix of the very same bytes.
                    sample = case.photos[: 10 * len(self.photos)]
                    log(f"CPU limit: {self.processes} processes, {len(sample)} images, max_dimension={max_dimension}")
                    limits[max_dimension] = cases.cpu_limit(self.paths, sample, max_dimension, self.processes)
                case.cpu_limit = limits[max_dimension]
                log(f"  CPU limit {case.cpu_limit:.1f} images/s: ratio {case.ratio:.2f}")
                self.throughput.append(case)
        self.memory = cases.PoolMemory.merge(memories)

    def rows_throughput(self) -> None:
        targets = {label: target for label, *_rest, target in THROUGHPUT_CASES}
        deadline = self.counts.case_deadline_s
        self.rows += [report.throughput_row(case, targets[case.label], deadline) for case in self.throughput]
        if self.throughput:
            self.rows.append(report.bytes_row(self.throughput))

    def group_scaling(self, stack: Stack) -> None:
        """One core's worth of image worker processes, pinned to one core, against two cores' worth."""
        label, latency, max_dimension, _target = THROUGHPUT_CASES[0]
        per_core = processes_per_core()
        measured: dict[int, cases.Throughput] = {}
        first = self.throughput[0] if self.throughput else None
        if first is not None and not self.worker_env and first.workers == 2 * per_core:
            measured[2] = first
            self.notes.append("1 vs 2 cores: the 2-core figure is the first throughput case's.")
        for cores in (1, 2):
            if cores in measured:
                continue
            # taskset: the processes of one core's worth must not spread over both cores.
            wrapper = ("taskset", "-c", "0") if cores < self.processes else ()
            env = {"WORKER_CONCURRENCY": str(per_core * cores)}
            with self._service(stack, f"cores{cores}", env, wrapper) as (service, api):
                measured[cores] = self._throughput(
                    service,
                    api,
                    f"{label}, {cores} core(s)",
                    self.counts.throughput,
                    latency,
                    max_dimension,
                    f"cores{cores}",
                )
        self.rows.append(report.scaling_row(measured[1], measured[2], per_core))

    def group_uploads(self, stack: Stack) -> None:
        with self._service(stack, "uploads") as (service, api):
            rows = self.counts.upload_rows
            log(f"uploads: 5 x {rows * 5:,} URLs, then {rows * 37:,} URLs")
            times = cases.upload_times(service, api, self.server, repeats=5, small_rows=rows, big_rows=rows)
        log(f"  each {[round(v, 2) for v in times.small_seconds]} s; {rows * 37:,} URLs: {times.big_seconds} s")
        self.rows += report.upload_rows(times)

    def group_polls(self, stack: Stack) -> None:
        with self._service(stack, "polls") as (service, api):
            sources = self.server.sources(self.counts.poll_products * 5, 0.1, "polled")
            upload = api.upload(cases.csv_of([s.url for s in sources]))
            api.wait_until(upload.request_id, lambda s: s["progress"]["completed_images"] >= 2, 60)
            for pace in (None, 1.0):
                seconds = self.counts.poll_seconds
                log(f"polls: 50 pollers, {'back to back' if pace is None else f'every {pace:g} s'}, {seconds:g} s")
                result = cases.polls(service, self.keys[0], upload.request_id, pollers=50, seconds=seconds, pace_s=pace)
                log(
                    f"  p50 {cases.percentile(result.latencies_ms, 0.5):.0f} ms, "
                    f"p99 {cases.percentile(result.latencies_ms, 0.99):.0f} ms, {result.rate:.0f}/s"
                )
                self.rows.append(report.polls_row(result, len(sources), 100))

    def group_fairness(self, stack: Stack) -> None:
        with self._service(stack, "fairness") as (service, api):
            backlog = self.counts.backlog
            log(f"fairness: 10 images behind {backlog:,}, with webhooks")
            small = cases.small_behind_big(service, api, self.server, backlog=backlog, small=10, repeats=3)
        log(
            f"  to final {[round(v, 2) for v in small.to_final_s]} s; "
            f"webhook {[None if v is None else round(v, 3) for v in small.webhook_s]} s"
        )
        self.rows += report.small_behind_big_rows(small)

    def group_tenants(self, stack: Stack) -> None:
        with self._service(stack, "tenants") as (service, _api):
            images = self.counts.tenant_images
            log(f"tenants: 2 x {images} images at once")
            tenants = cases.two_tenants(
                service, self.keys, self.server, images=images, window_s=self.counts.tenant_window_s
            )
        log(f"  in the window: {tenants.done}; before it: {tenants.before}")
        self.rows.append(report.tenants_row(tenants))

    def group_long(self, stack: Stack) -> tuple[cases.PoolMemory, cases.PoolMemory, int]:
        with self._service(stack, "long") as (service, api), cases.MemorySampler(service) as sampler:
            self._throughput(service, api, "warm-up", 200, 0.0, None, "warm", deadline_s=300)
            before = copy.deepcopy(sampler.sample())
            images = self.counts.long_images
            self._throughput(service, api, "long", images, 0.0, None, "long", deadline_s=900)
        return before, sampler.memory, images

    def profile(self, stack: Stack, latency_s: float) -> None:
        """py-spy on every image worker pool process during one throughput case; prints where time goes.

        Also the CPU seconds each of the service's processes (and PostgreSQL) used during the case.
        """
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        profiles = HERE / "results" / "profiles"
        shutil.rmtree(profiles, ignore_errors=True)
        profiles.mkdir(parents=True)
        with self._service(stack, "profile") as (service, api):
            recorders = {}
            for pid in service.worker_pool_pids():
                # --idle: wall-clock time, waiting included, which is what throughput is lost to.
                output = profiles / f"worker-{pid}.txt"
                argv = [py_spy, "record", "--pid", str(pid), "--rate", "50", "--idle", "--nonblocking"]
                argv += ["--format", "raw", "--output", str(output)]
                recorders[output] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(1.0)
            cpu_before, bench_before, started = service.cpu_by_process(), report.own_cpu_s(), time.monotonic()
            try:
                self._throughput(
                    service,
                    api,
                    "profile (py-spy slows it a little)",
                    self.counts.throughput,
                    latency_s,
                    None,
                    "profile",
                    deadline_s=300,
                )
                cpu_after, bench_after = service.cpu_by_process(), report.own_cpu_s()
                elapsed = time.monotonic() - started
            finally:
                for recorder in recorders.values():
                    recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                for recorder in recorders.values():
                    try:
                        recorder.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        recorder.kill()
        print(
            f"CPU seconds used during the {elapsed:.1f} s case "
            f"(the {self.processes} cores had {elapsed * self.processes:.0f}):"
        )
        for kind, after in cpu_after.items():
            print(f"  {kind:<11}{after - cpu_before[kind]:7.1f}")
        print(f"  {'bench':<11}{bench_after - bench_before:7.1f}  (its sources and polls)")
        merged = profiles / "all-workers.txt"
        merged.write_text("".join(output.read_text() for output in recorders if output.exists()))
        print(f"{merged.relative_to(ROOT)} (the {len(recorders)} pool processes together, wall-clock samples):")
        print(summarize_profile(merged, top=40))

    # -- the run ------------------------------------------------------------------------------------

    def run(self, stack: Stack) -> None:
        chosen = self.args.only or GROUPS
        self.rows.append(report.photos_row(self.photos, describe(self.photos)))
        memory_at = len(self.rows)
        for group in GROUPS:
            if group not in chosen:
                continue
            try:
                getattr(self, f"group_{group}")(stack)
            except (KeyboardInterrupt, Stop):
                raise
            except Exception as error:  # one group failing must not lose the others' figures
                log(f"group {group} failed:\n{traceback.format_exc()}")
                self.errors.append(f"{group}: {type(error).__name__}: {str(error)[:300]}")
                self.rows.append(report.failed(f"group {group}", "", "", f"{type(error).__name__}: {str(error)[:200]}"))
            if group == "throughput":
                self.rows_throughput()
                memory_at = len(self.rows)
        long_run = None
        if self.args.long:
            try:
                long_run = self.group_long(stack)
            except (KeyboardInterrupt, Stop):
                raise
            except Exception as error:
                log(f"group long failed:\n{traceback.format_exc()}")
                self.errors.append(f"long: {type(error).__name__}: {error}")
        if "throughput" in chosen:
            images = sum(case.images for case in self.throughput)
            large = sum(
                self.photos[index].width * self.photos[index].height >= 8e6
                for case in self.throughput
                for index in case.photos
            )
            self.rows[memory_at:memory_at] = report.memory_rows(self.memory, images, large, long_run)


def summarize_profile(path: Path, top: int = 25) -> str:
    """Share of samples per function, inclusive (on the stack) and self (at the top), from py-spy's raw output."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
        own[frames[-1]] = own.get(frames[-1], 0) + samples
    if not total:
        return "no samples"
    lines = [f"{total} samples; inclusive share, self share, function"]
    for frame, samples in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{samples / total:6.1%} {own.get(frame, 0) / total:6.1%}  {frame}")
    lines.append("top self:")
    for frame, samples in sorted(own.items(), key=lambda item: -item[1])[:12]:
        lines.append(f"{samples / total:6.1%}  {frame}")
    return "\n".join(lines)


def run_encoders() -> str | None:
    log("encoders: bench/bench_encoders.py --markdown")
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "bench_encoders.py"), "--markdown", "--seconds", "1"],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as error:
        log(f"encoders failed: {error}")
        return None
    return done.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also measure worker RSS over 5,000 images")
    parser.add_argument("--skip-encoders", action="store_true")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups (RESULTS.md is not written)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the images, to check the bench itself")
    parser.add_argument("--images", type=int, help=f"distinct URLs per throughput case (default {Counts.throughput})")
    parser.add_argument(
        "--profile",
        type=float,
        metavar="LATENCY_S",
        help="only profile the image workers (py-spy) during one full-size throughput case at this source latency",
    )
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)

    began = dt.datetime.now(dt.UTC)
    load_before = report.load_average()
    busy_before = report.machine_busy_s()
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    bench = Bench(args)
    encoders = None if args.skip_encoders or args.only or args.quick or args.profile is not None else run_encoders()
    fsync = os.environ.get("BENCH_PG_FSYNC", "on").strip().lower() not in {"off", "0", "no", "false"}
    log("starting PostgreSQL and Redis of the bench's own")
    try:
        with SourceServer(bench.photos) as server, Stack(LOGS, fsync=fsync, api_keys=bench.keys) as stack:
            pg_version = stack.postgres.version()
            redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
            if args.profile is not None:
                bench.server = server
                bench.profile(stack, args.profile)
                return 0
            bench.server = server
            bench.run(stack)
    except (KeyboardInterrupt, Stop) as stopped:
        log(f"stopped ({type(stopped).__name__} {stopped}): every process was stopped, the stores removed")
        return 130
    took = time.monotonic() - _started
    others_s = report.machine_busy_s() - busy_before - report.own_cpu_s() - stack.postgres_cpu_s
    main_table = report.table(bench.rows)
    print(main_table)
    minutes, seconds = divmod(round(took), 60)
    log(f"took {minutes} min {seconds} s")
    if args.only or args.quick:
        return 1 if bench.errors else 0
    facts = report.machine_facts()
    header = {
        "Run": f"{began:%Y-%m-%d %H:%M} UTC, took {minutes} min {seconds} s"
        + (" (with `--long`)" if args.long else ""),
        **facts,
        "Other work on the machine": f"{max(0.0, others_s):.0f} CPU seconds used by processes not the bench's during "
        f"the run ({max(0.0, others_s) / (took * bench.processes):.0%} of the {bench.processes} cores' time); "
        f"load average {load_before} before, {report.load_average()} after",
    }
    settings = [
        "Processes as `make run` starts them (`launcher.commands`, `launcher.service_environment`), image "
        "worker processes from `BENCH_WORKER_CONCURRENCY` if set: "
        + (report.describe_commands(launcher.commands(bench.service_env)) if bench.service_env else "?"),
        f"PostgreSQL {pg_version} (a cluster of the bench's own, fsync {'on' if fsync else 'off'}), "
        f"Redis {redis_version.split()[2].removeprefix('v=') if redis_version else '?'} (of its own, no persistence);"
        " a fresh database and a flushed Redis for each group of cases",
        "Changed from the defaults: `FETCH_ALLOWED_NETWORKS=127.0.0.2/32`; `API_KEYS` two keys (tenant A plays "
        "every caller but tenant B); `RATE_LIMIT_UPLOADS=100000/minute`, `RATE_LIMIT_READS=10000000/minute` and "
        "`MAX_ACTIVE_IMAGES_PER_KEY=10000000`, so that one client playing many callers is never refused (the "
        "limiter and the quota check still run)",
        "Sources: a threaded HTTP/1.1 server on 127.0.0.2 (keep-alive capable) that sleeps the latency before "
        "answering; every URL distinct; uploads quality 50",
        f"CPU limit: {bench.processes} processes (multiprocessing, one per core) running `pipeline.compress(data, "
        "quality=50, max_dimension=...)` on the very same bytes from memory (ten of each photo, the cases' mix), "
        "once per size in this run, while the service was idle",
    ]
    report.write_results(
        RESULTS,
        header=header,
        settings=settings,
        photos=describe(bench.photos),
        main_table=main_table,
        encoders=encoders,
        notes=bench.notes + [f"error: {e}" for e in bench.errors],
    )
    log(f"wrote {RESULTS.relative_to(ROOT)}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
