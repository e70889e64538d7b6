"""The suite's groups of cases, each on a fresh service: what ``make bench`` measures, and in what order."""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import secrets
import shutil
import sys
import time
import traceback
from dataclasses import dataclass

import cases
import facts
import peer_thumbor
import profiling
import report
import throughput
from client import Api, csv_of
from photos import CATALOG_SPECS, describe, ensure_photos
from sources import SourceServer
from stack import ROOT, Stack, processes_per_core

HERE = ROOT / "bench"
GROUPS = ("throughput", "profile", "scaling", "uploads", "polls", "fairness", "tenants")


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
    case_deadline_s: float = 30.0
    #: The same for each of the two scaling cases, which only compare rates.
    scaling_deadline_s: float = 20.0


QUICK = Counts(40, 1000, 200, 3.0, 500, 30, 3.0, 300, 30.0, 20.0)

#: (label, source latency s, max_dimension, target ratio)
THROUGHPUT_CASES = (
    ("full/100ms", 0.1, None, 0.85),
    ("1024/100ms", 0.1, 1024, 0.85),
    ("full/500ms", 0.5, None, 0.8),
    ("full/0ms", 0.0, None, 0.85),
    ("1024/0ms", 0.0, 1024, 0.85),
)
#: The profile case: Google Merchant Center's profile and three renditions, the first the marketplace's.
PROFILE_FIELDS = {"profile": "google_merchant", "renditions": "main:2048,zoom:1600,thumb:400x400:pad"}
#: The compliance checks' and the perceptual hash's most share of an image's CPU.
CHECK_SHARE_TARGET = 0.10

#: The cases thumbor runs too, side by side, and the service's least multiple of its throughput there.
PEER_CASES = ("full/100ms", "1024/100ms")
PEER_TARGET = 1.5

STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every process is stopped and every folder removed."""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counts = QUICK if args.quick else Counts(throughput=args.images or Counts.throughput)
        self.photos = ensure_photos(specs=CATALOG_SPECS)
        self.paths = [photo.path for photo in self.photos]
        self.keys = (f"bench-a-{secrets.token_hex(8)}", f"bench-b-{secrets.token_hex(8)}")
        self.rows: list[report.Row] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        concurrency = os.environ.get("BENCH_WORKER_CONCURRENCY", "").strip()
        self.worker_env = {"WORKER_CONCURRENCY": concurrency} if concurrency else {}
        # --set NAME=VALUE: a setting of the service's to try (RESULTS.md lists it under the settings).
        self.worker_env.update(dict(item.split("=", 1) for item in getattr(args, "set", None) or []))
        self.processes = os.cpu_count() or 2
        self.service_env: dict[str, str] | None = None  #: the throughput group's, for the settings
        self.throughput: list[throughput.Throughput] = []
        self.memory: throughput.PoolMemory | None = None
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
    ) -> throughput.Throughput:
        log(f"throughput {label}: {images} images, {service.worker_processes} image worker processes")
        case = throughput.throughput(
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
        dead = service.dead_processes()
        if dead:
            tails = "\n".join(f"--- {name}\n{service.processes[name].log()[-1500:]}" for name in dead)
            raise RuntimeError(f"service processes died during the case: {', '.join(dead)}\n{tails}")
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
                throughput.warm_up(service, api, self.server)
                yield service, api
            finally:
                api.close()

    # -- groups -------------------------------------------------------------------------------------

    def group_throughput(self, stack: Stack) -> None:
        memories = []
        with contextlib.ExitStack() as running:
            service = api = None
            for label, latency, max_dimension, _target in THROUGHPUT_CASES:
                if service is None:
                    service, api = running.enter_context(self._service(stack, "throughput"))
                    memories.append(running.enter_context(throughput.MemorySampler(service)))
                    self.service_env = service.env
                with facts.OthersCpu(service) as others:
                    case = self._throughput(
                        service, api, label, self.counts.throughput, latency, max_dimension, label.replace("/", "-")
                    )
                case.others_share = others.share
                if case.timed_out:
                    # Its leftovers would weigh on the CPU limit and the next case: a fresh service next.
                    running.close()
                    service = None
                # Right after the case, in the same conditions, five of each photo: the case's mix of the very
                # same bytes, while the service is idle.
                sample = case.photos[: 5 * len(self.photos)]
                with facts.OthersCpu(service) as others:
                    for codec in throughput.CODECS:
                        case.cpu_limits[codec] = throughput.cpu_limit(
                            self.paths, sample, max_dimension, self.processes, codec
                        )
                case.cpu_limit_others_share = others.share
                if label in PEER_CASES and not self.args.skip_peer:
                    self._peer(case)
                limits = ", ".join(f"{codec} {rate:.1f}" for codec, rate in case.cpu_limits.items())
                log(
                    f"  CPU limits {limits} images/s: ratio {case.ratio:.2f} to the faster; other processes took "
                    f"{case.others_share:.0%} of the CPU in the case, {case.cpu_limit_others_share:.0%} in the limits"
                )
                self.throughput.append(case)
        self.memory = throughput.PoolMemory.merge(memories)

    def _peer(self, case: throughput.Throughput) -> None:
        """thumbor on the same case, one process per core, the service idle meanwhile."""
        with peer_thumbor.Thumbor(self.processes) as peer:
            measured = peer.throughput(self.server, case.label, case.images, case.latency_s, case.max_dimension)
        case.peer_rate, case.peer_ok = measured.rate, measured.ok
        log(f"  thumbor {measured.rate:.1f} images/s ({measured.ok}/{measured.images} answered with a JPEG)")

    def rows_throughput(self) -> None:
        targets = {label: target for label, *_rest, target in THROUGHPUT_CASES}
        deadline = self.counts.case_deadline_s
        self.rows += [report.throughput_row(case, targets[case.label], deadline) for case in self.throughput]
        self.rows += [report.peer_row(case, PEER_TARGET) for case in self.throughput if case.peer_rate is not None]
        if self.throughput:
            self.rows.append(report.bytes_row(self.throughput))

    def group_profile(self, stack: Stack) -> None:
        """A profile with three renditions on the catalog mix, against the same work from memory."""
        with self._service(stack, "profile") as (service, api):
            log(f"profile: {self.counts.throughput} images, {PROFILE_FIELDS}")
            with facts.OthersCpu(service) as others:
                case = throughput.throughput(
                    service,
                    api,
                    self.server,
                    label="profile",
                    images=self.counts.throughput,
                    latency_s=0.0,
                    max_dimension=None,
                    tag="profile",
                    deadline_s=self.counts.case_deadline_s * 2,
                    fields=PROFILE_FIELDS,
                )
            case.others_share = others.share
            done = f"{case.completed} completed, {case.failed} failed"
            log(f"  {case.rate:.1f} images/s in {case.seconds:.1f} s ({done})")
            sample = case.photos[: 5 * len(self.photos)]
            with facts.OthersCpu(service) as others:
                limit = throughput.planned_limit(self.paths, sample, PROFILE_FIELDS, self.processes)
            case.cpu_limit_others_share = others.share
        log(
            f"  limit {limit.rate:.1f} images/s: ratio {case.rate / limit.rate:.2f}; checks and hash "
            f"{limit.check_ms:.1f} ms of {limit.image_ms:.1f} ms per image ({limit.check_share:.1%})"
        )
        deadline = self.counts.case_deadline_s * 2
        self.rows += report.profile_rows(case, limit, PROFILE_FIELDS, CHECK_SHARE_TARGET, deadline)

    def group_scaling(self, stack: Stack) -> None:
        """One core's worth of image worker processes, pinned to one core, against two cores' worth."""
        label, latency, max_dimension, _target = THROUGHPUT_CASES[0]
        per_core = processes_per_core()
        measured: dict[int, throughput.Throughput] = {}
        # Both measured here, one after the other: reusing the first throughput case would compare
        # moments of a shared machine that may be loaded differently.
        for cores in (1, 2):
            # taskset: the processes of one core's worth must not spread over both cores.
            wrapper = ("taskset", "-c", "0") if cores < self.processes else ()
            env = {"WORKER_CONCURRENCY": str(per_core * cores)}
            with (
                self._service(stack, f"cores{cores}", env, wrapper) as (service, api),
                facts.OthersCpu(service) as others,
            ):
                measured[cores] = self._throughput(
                    service,
                    api,
                    f"{label}, {cores} core(s)",
                    self.counts.throughput,
                    latency,
                    max_dimension,
                    f"cores{cores}",
                    deadline_s=self.counts.scaling_deadline_s,
                )
            measured[cores].others_share = others.share
        self.rows.append(report.scaling_row(measured[1], measured[2], per_core, self.counts.scaling_deadline_s))

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
            upload = api.upload(csv_of([s.url for s in sources]))
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
            auth = {"Authorization": f"Bearer {self.keys[0]}"}
            health = cases.wrk(f"{service.base_url}/healthz", {})
            status = cases.wrk(f"{service.base_url}/api/status/{upload.request_id}", auth)
            if health is None or status is None:
                self.notes.append("wrk is not installed (apt-get install wrk): the poll rate was not measured")
            else:
                log(f"wrk: /healthz {health.rate:.0f}/s, status page {status.rate:.0f}/s")
                self.rows.append(report.poll_rate_row(status, health, len(sources)))

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

    def group_long(self, stack: Stack) -> tuple[throughput.PoolMemory, throughput.PoolMemory, int]:
        with self._service(stack, "long") as (service, api), throughput.MemorySampler(service) as sampler:
            self._throughput(service, api, "warm-up", 200, 0.0, None, "warm", deadline_s=300)
            before = copy.deepcopy(sampler.sample())
            images = self.counts.long_images
            self._throughput(service, api, "long", images, 0.0, None, "long", deadline_s=900)
        return before, sampler.memory, images

    def profile(self, stack: Stack, latency_s: float) -> None:
        """py-spy on a few image worker pool processes during one throughput case, and every process's
        CPU seconds meanwhile; prints where the time goes."""
        folder = HERE / "results" / "profiles"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        profiled = profiling.PROFILED_PROCESSES
        with (
            self._service(stack, "profile") as (service, api),
            profiling.Recorders(service.worker_pool_pids()[:profiled], folder) as spies,
        ):
            time.sleep(1.0)
            cpu_before, bench_before, started = service.cpu_by_process(), facts.own_cpu_s(), time.monotonic()
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
            cpu_after, bench_after = service.cpu_by_process(), facts.own_cpu_s()
            elapsed = time.monotonic() - started
        cores = self.processes
        print(f"CPU seconds used during the {elapsed:.1f} s case (the {cores} cores had {elapsed * cores:.0f}):")
        for kind, after in cpu_after.items():
            print(f"  {kind:<11}{after - cpu_before[kind]:7.1f}")
        print(f"  {'bench':<11}{bench_after - bench_before:7.1f}  (its sources and polls)")
        merged = spies.merged(folder / "all-workers.txt")
        print(f"\n{merged.relative_to(ROOT)} ({len(spies.pids)} pool processes together, on-CPU samples):")
        print(profiling.by_concern(merged))
        print()
        print(profiling.summarize(merged, top=40))

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
