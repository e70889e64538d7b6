"""The run's facts for ``bench/RESULTS.md``: date, machine, what else ran, the settings."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def describe_commands(commands: dict[str, list[str]]) -> str:
    """The processes' command lines, without the binaries' paths, the ports and the log options."""
    skip = {"--bind", "--access-logfile", "--hostname", "--loglevel", "--log-level"}
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
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has waited for (their own children included)."""
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
    gaps = path.parent / "GAPS.md"
    if gaps.exists():
        # Written by hand from a profile (make bench BENCH_ARGS="--profile 0"), kept beside the code.
        lines += [gaps.read_text().strip(), ""]
    for heading in KEPT_SECTIONS:
        lines += [section, ""] if (section := _kept_section(path, heading)) else []
    path.write_text("\n".join(lines))


#: Written by other benches (``bench/bench_quality_auto.py --write``, ``bench/bench_hosts.py --write``), which
#: ``make bench`` does not run: kept.
KEPT_SECTIONS = (
    "## quality=auto and output formats (`bench/bench_quality_auto.py`)",
    "## Across hosts: RabbitMQ and Redis, one worker host and two (`bench/bench_hosts.py`)",
)


def replace_section(path: Path, heading: str, body: str) -> None:
    """Write ``heading`` and ``body`` into the results file in place of that section, or at its end."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{body.strip()}\n"
    kept = _kept_section(path, heading)
    if kept is not None:
        path.write_text(text.replace(kept, section.rstrip("\n"), 1))
    else:
        path.write_text(text.rstrip("\n") + "\n\n" + section)


def _kept_section(path: Path, heading: str) -> str | None:
    """The section under ``heading`` in the file as it is, up to the next ``## `` heading."""
    text = path.read_text() if path.exists() else ""
    if heading not in text:
        return None
    rest = text.split(heading, 1)[1]
    end = rest.find("\n## ")
    return (heading + (rest if end < 0 else rest[:end])).strip()


def settings(commands: str, pg_version: str, fsync: bool, redis_version: str, cpu_processes: int) -> list[str]:
    """What the service ran with, for the results' settings section."""
    return [
        "Processes as `make run` starts them (`launcher.commands`, `launcher.service_environment`), image "
        f"worker processes from `BENCH_WORKER_CONCURRENCY` if set: {commands}",
        f"PostgreSQL {pg_version} (a cluster of the bench's own, fsync {'on' if fsync else 'off'}), Redis "
        f"{redis_version} (of its own, no persistence); a fresh database and a flushed Redis for each group of cases",
        "Changed from the defaults: `FETCH_ALLOWED_NETWORKS=127.0.0.2/32`; `API_KEYS` two keys (tenant A plays "
        "every caller but tenant B); `RATE_LIMIT_UPLOADS=100000/minute`, `RATE_LIMIT_READS=10000000/minute` and "
        "`MAX_ACTIVE_IMAGES_PER_KEY=10000000`, so that one client playing many callers is never refused (the "
        "limiter and the quota check still run)",
        "Sources: a threaded HTTP/1.1 server on 127.0.0.2 (keep-alive capable) that sleeps the latency before "
        "answering; every URL distinct; uploads quality 50",
        f"CPU limit: {cpu_processes} processes (multiprocessing, one per core) running `pipeline.compress(data, "
        "quality=50, max_dimension=...)` on the very same bytes from memory (five of each photo, the case's mix), "
        "right after each case, with the service idle; each throughput row says how much CPU other processes on "
        "the machine took meanwhile when it was 5% or more, and from 20% its ratio is not judged (Met: —)",
    ]


def redis_version() -> str:
    words = _read(["redis-server", "--version"]).split()
    return words[2].removeprefix("v=") if len(words) > 2 else "?"


class OthersCpu:
    """The share of the machine's CPU that processes not the bench's took during a block.

    The bench's: this process, the children it has reaped, and ``service``'s live processes and
    PostgreSQL, which must stay up through the block (a service stopped inside it would be counted twice).
    """

    def __init__(self, service=None) -> None:
        self.service = service
        self.share = 0.0

    def _ours(self) -> float:
        live = sum(self.service.cpu_by_process().values()) if self.service is not None else 0.0
        return own_cpu_s() + live

    def __enter__(self) -> OthersCpu:
        self._busy, self._ours_at, self._at = machine_busy_s(), self._ours(), time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        elapsed = time.monotonic() - self._at
        others = (machine_busy_s() - self._busy) - (self._ours() - self._ours_at)
        self.share = max(0.0, others) / (elapsed * (os.cpu_count() or 1)) if elapsed > 0 else 0.0
