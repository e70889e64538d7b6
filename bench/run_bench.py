"""``make bench``: the service's real processes on a PostgreSQL and a Redis of the bench's own, real
photos served from 127.0.0.2, and one table of what matters: throughput against the same run's CPU
limit, upload and poll times, worker memory, fairness, webhook latency and scaling.

Usage: python bench/run_bench.py [--long] [--images N] [--skip-encoders] [--skip-peer]
       python bench/run_bench.py --quick | --only GROUP ... | --profile LATENCY_S   (no RESULTS.md)

Environment: BENCH_WORKER_CONCURRENCY (the image worker's processes; default: the launcher's),
BENCH_PG_FSYNC=off (default on, as in production). Writes bench/RESULTS.md; the service's logs of the
last run are kept in bench/results/logs/. Exits 0 whether or not targets are met, 1 if a group could
not be measured, 130 when stopped.
"""

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import facts  # noqa: E402
import report  # noqa: E402
from photos import describe  # noqa: E402
from sources import SourceServer  # noqa: E402
from stack import ROOT, Stack  # noqa: E402
from suite import GROUPS, STARTED, Bench, Counts, Stop, log  # noqa: E402

import launcher  # noqa: E402

RESULTS = HERE / "RESULTS.md"
LOGS = HERE / "results" / "logs"


def _stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def run_encoders() -> str | None:
    log("encoders: bench/bench_encoders.py --markdown")
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "bench_encoders.py"), "--markdown", "--seconds", "0.75"],
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
    parser.add_argument("--skip-peer", action="store_true", help="do not run thumbor beside the throughput cases")
    parser.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups (RESULTS.md is not written)")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="a service setting to try (repeatable)")
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
    load_before = facts.load_average()
    busy_before = facts.machine_busy_s()
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    bench = Bench(args)
    encoders = None if args.skip_encoders or args.only or args.quick or args.profile is not None else run_encoders()
    fsync = os.environ.get("BENCH_PG_FSYNC", "on").strip().lower() not in {"off", "0", "no", "false"}
    log("starting PostgreSQL and Redis of the bench's own")
    try:
        with SourceServer(bench.photos) as server, Stack(LOGS, fsync=fsync, api_keys=bench.keys) as stack:
            pg_version = stack.postgres.version()
            if args.profile is not None:
                bench.server = server
                bench.profile(stack, args.profile)
                return 0
            bench.server = server
            bench.run(stack)
    except (KeyboardInterrupt, Stop) as stopped:
        log(f"stopped ({type(stopped).__name__} {stopped}): every process was stopped, the stores removed")
        return 130
    took = time.monotonic() - STARTED
    others_s = facts.machine_busy_s() - busy_before - facts.own_cpu_s() - stack.postgres_cpu_s
    main_table = report.table(bench.rows)
    print(main_table)
    minutes, seconds = divmod(round(took), 60)
    log(f"took {minutes} min {seconds} s")
    if args.only or args.quick:
        return 1 if bench.errors else 0
    others_s = max(0.0, others_s)
    header = {
        "Run": f"{began:%Y-%m-%d %H:%M} UTC, took {minutes} min {seconds} s"
        + (" (with `--long`)" if args.long else ""),
        **facts.machine_facts(),
        "Other work on the machine": f"{others_s:.0f} CPU seconds used by processes not the bench's during the run "
        f"({others_s / (took * bench.processes):.0%} of the {bench.processes} cores' time); load average (the "
        f"bench's own processes included) {load_before} before, {facts.load_average()} after",
    }
    commands = facts.describe_commands(launcher.commands(bench.service_env)) if bench.service_env else "?"
    settings = facts.settings(commands, pg_version, fsync, facts.redis_version(), bench.processes)
    facts.write_results(
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
