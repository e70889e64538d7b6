"""The command line of each role (API, image workers, webhook workers, maintenance workers, beat), and starting one."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from config import DEFAULT_EVENTS_MAX_STREAMS, SettingsError, image_decode_budget_mb, log_level
from process_launch.environment import ROOT

#: One image process a core: each downloads its batch's sources on threads while it encodes (``processing``).
IMAGE_PROCESSES_PER_CORE = 1
#: The share of the machine's memory the image worker's processes may take together, each at its worst.
IMAGE_WORKER_MEMORY_SHARE = 0.5
#: An image worker process's own memory before an image's, in MiB (about 100 MiB of RSS measured).
IMAGE_PROCESS_BASELINE_MB = 128
_CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
IMAGE_WORKER_NICENESS = 10
# Threads of a webhook worker: an attempt mostly waits on its receiver, up to WEBHOOK_TIMEOUT_S. With
# 48 attempts hanging the worker held 120 MB and used 3% of a core; it takes 16 tenants at their
# bound (WEBHOOK_MAX_PER_TENANT) to keep every thread busy.
WEBHOOK_THREADS = 64
# Threads of each API process for ordinary calls, on top of the ones its progress streams may park.
ORDINARY_WEB_THREADS = 16
PR_SET_PDEATHSIG = 1
# What each child gets from the kernel when the launcher dies without stopping it: a signal on which
# it stops its own processes and that needs nobody to follow up. The worker's is a cold shutdown
# because a warm one waits for running tasks, which are acknowledged late and so are redelivered or
# swept back to PENDING.
PARENT_DEATH_SIGNALS = {
    "api": signal.SIGTERM,
    "worker": signal.SIGQUIT,
    "webhooks": signal.SIGQUIT,
    "maintenance": signal.SIGQUIT,
    "beat": signal.SIGTERM,
}


def web_threads(env: dict[str, str]) -> str:
    """Each API process's threads: enough for every progress stream it may serve, and the ordinary calls.

    A stream parks its thread until the request is final; ``EVENTS_MAX_STREAMS`` caps them so that
    polls and uploads always find a thread.
    """
    raw_streams = env.get("EVENTS_MAX_STREAMS", "").strip() or str(DEFAULT_EVENTS_MAX_STREAMS)
    if not raw_streams.isdigit():
        raise SystemExit(f"EVENTS_MAX_STREAMS must be an integer of at least 0, got {raw_streams!r}")
    raw = env.get("WEB_THREADS", "").strip()
    if not raw:
        return str(int(raw_streams) + ORDINARY_WEB_THREADS)
    if not raw.isdigit() or int(raw) <= int(raw_streams):
        raise SystemExit(
            f"WEB_THREADS={raw!r} must be an integer above EVENTS_MAX_STREAMS={raw_streams}: progress streams"
            " would take every thread and starve the API's other calls"
        )
    return raw


def image_worker_concurrency(env: dict[str, str], cores: int, memory_bytes: int | None) -> str:
    """The image worker's process count: ``WORKER_CONCURRENCY`` when set, else IMAGE_PROCESSES_PER_CORE a core,
    and no more than IMAGE_WORKER_MEMORY_SHARE of ``memory_bytes`` holds with each process at its worst
    (IMAGE_PROCESS_BASELINE_MB and an image's ``IMAGE_DECODE_BUDGET_MB``); at least one.
    """
    raw = env.get("WORKER_CONCURRENCY", "").strip()
    if raw:
        return raw
    try:
        worst_mb = IMAGE_PROCESS_BASELINE_MB + image_decode_budget_mb(env)
    except SettingsError as error:
        raise SystemExit(str(error)) from None
    count = IMAGE_PROCESSES_PER_CORE * cores
    if memory_bytes:
        count = min(count, int(IMAGE_WORKER_MEMORY_SHARE * memory_bytes) // (worst_mb << 20))
    return str(max(1, count))


def machine_memory() -> int | None:
    """The memory the processes started here may use, in bytes: the machine's, or its cgroup's limit when lower
    (a container's); None when unknown."""
    try:
        known = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    except (ValueError, OSError, AttributeError):
        known = []
    for path in _CGROUP_MEMORY_LIMITS:
        try:
            limit = Path(path).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():  # "max" (cgroup v2) is no limit; v1 writes a huge number instead
            known.append(int(limit))
    return min(known) if known else None


def commands(env: dict[str, str]) -> dict[str, list[str]]:
    """The command line of each role: ``api``, ``worker``, ``webhooks``, ``maintenance`` and ``beat``."""
    bin_dir = Path(sys.executable).parent
    port = env.get("PORT", "5000")
    host = env.get("HOST", "127.0.0.1")
    concurrency = image_worker_concurrency(env, os.cpu_count() or 2, machine_memory())
    json_logs = env.get("LOG_FORMAT", "").strip().lower() == "json"
    level = log_level(env)
    # Celery's banner (its queues and tasks, once for each worker and beat) is printed, not logged: only
    # at DEBUG, and never in JSON. Gunicorn's master logs before any app exists.
    quiet = json_logs or level != "DEBUG"
    celery = [str(bin_dir / "celery"), *(["--quiet"] if quiet else []), "-A", "app:celery_app"]
    gunicorn_logger = ["--logger-class", "observability.log_context.GunicornJsonLogger"] if json_logs else []
    argvs = {
        "api": [
            str(bin_dir / "gunicorn"),
            "app:create_app()",
            "--bind",
            f"{host}:{port}",
            "--workers",
            env.get("WEB_CONCURRENCY", "2"),
            # Threads, so that many pollers do not queue behind one another.
            "--worker-class",
            "gthread",
            "--threads",
            web_threads(env),
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "10",
            # A 10 MiB CSV of 370,000 URLs takes about 11 s to validate and store on PostgreSQL.
            "--timeout",
            "120",
            # The default control socket is one per user (~/.gunicorn): two services would share it.
            "--no-control-socket",
            "--log-level",
            level.lower(),
            *gunicorn_logger,
        ],
        "worker": [
            *celery,
            "worker",
            "--loglevel",
            level,
            "--queues",
            "images,imports",
            "--concurrency",
            concurrency,
            "--hostname",
            f"worker-{os.getpid()}@%h",
            # Workers need not gossip or sync with one another: the database holds every state.
            "--without-gossip",
            "--without-mingle",
        ],
        # Webhook attempts wait on other people's servers: threads, so that tens of slow receivers
        # cost one process, and none of them holds up the tick, the sweep or an image. Celery 5.7's
        # thread pool reconnects when Redis is lost and restarted, attempts in flight or not (tried).
        "webhooks": [
            *celery,
            "worker",
            "--loglevel",
            level,
            "--queues",
            "webhooks",
            "--pool",
            "threads",
            "--concurrency",
            env.get("WEBHOOK_CONCURRENCY", str(WEBHOOK_THREADS)),
            "--hostname",
            f"webhooks-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        # Beat's tick, the sweep and retention: a small pool that nothing else uses, since their
        # messages expire unless a process takes them within the interval.
        "maintenance": [
            *celery,
            "worker",
            "--loglevel",
            level,
            "--queues",
            "maintenance",
            "--concurrency",
            env.get("MAINTENANCE_CONCURRENCY", "2"),
            "--hostname",
            f"maintenance-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        "beat": [*celery, "beat", "--loglevel", level],
    }
    return argvs


def niceness(name: str, env: dict[str, str]) -> int:
    """How much lower than the launcher's the child's CPU priority is.

    Image work lowers its own so that on a shared machine an upload or a poll never waits for a core
    behind an encode: the encodes still take every core the API leaves idle.
    """
    if name != "worker":
        return 0
    raw = env.get("IMAGE_WORKER_NICENESS", str(IMAGE_WORKER_NICENESS))
    if not raw.strip().isdigit() or not 0 <= int(raw) <= 19:
        raise SystemExit(f"IMAGE_WORKER_NICENESS must be an integer from 0 to 19, got {raw!r}")
    return int(raw)


def child_setup(signum: int, nice: int) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers the child's priority by ``nice`` and, on Linux, has the kernel
    send ``signum`` to the child when the launcher dies."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    launcher_pid = os.getpid()

    # Runs between fork and exec, which is safe because the launcher starts no threads; for the same
    # reason the thread that forked, whose exit the kernel watches, is the launcher's main thread.
    def set_up_child() -> None:
        if nice:
            os.nice(nice)
        if libc is None:
            return
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != launcher_pid:
            os._exit(1)  # the launcher died before the signal was armed

    return set_up_child


def start(name: str, argv: list[str], env: dict[str, str], nice: int = 0) -> subprocess.Popen:
    """Start one child, leading a session and process group of its own."""
    # A session of its own keeps the terminal's signals for the launcher alone, which makes each of
    # them the same stop: closing the terminal would otherwise send SIGHUP to gunicorn (which reloads)
    # and to celery (which restarts), and SIGQUIT would kill beat outright. The process group lets
    # stop() reach the processes a child leaves behind (gunicorn's workers, celery's pool).
    return subprocess.Popen(
        argv,
        env=env,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=child_setup(PARENT_DEATH_SIGNALS[name], nice),
    )
