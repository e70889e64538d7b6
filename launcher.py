"""``make run``: migrate, then run the API, the workers and beat in the foreground until stopped.

``launcher.py ROLE`` runs one of them alone (``api``, ``worker``, ``control``, ``beat``) or applies
the migrations (``migrate``): what a container or another machine runs.

Single-machine mode: SQLite, the filesystem broker and local storage unless the environment says
otherwise. Nothing started here outlives the launcher: Ctrl-C, SIGTERM, SIGHUP (the terminal closed)
and SIGQUIT stop every process (SIGTERM, then SIGKILL after a grace); a child that dies stops the rest
and the launcher exits 1; if the launcher itself is killed, the kernel signals its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from config import DEFAULT_EVENTS_MAX_STREAMS, SettingsError, log_format, log_level
from observability import log_context

HERE = Path(__file__).parent
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
STOP_GRACE_S = 15
IMAGE_PROCESSES_PER_CORE = 8
IMAGE_WORKER_NICENESS = 10
# Threads of each API process for ordinary calls, on top of the ones its progress streams may park.
ORDINARY_WEB_THREADS = 16
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PR_SET_PDEATHSIG = 1
# What each child gets from the kernel when the launcher dies without stopping it: a signal on which
# it stops its own processes and that needs nobody to follow up. The worker's is a cold shutdown
# because a warm one waits for running tasks, which are acknowledged late and so are redelivered or
# swept back to PENDING.
PARENT_DEATH_SIGNALS = {
    "api": signal.SIGTERM,
    "worker": signal.SIGQUIT,
    "control": signal.SIGQUIT,
    "beat": signal.SIGTERM,
}

ROLES = ("api", "worker", "control", "beat", "migrate")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client's multiprocess mode writes: one per kind of metric and process.
METRICS_FILE = re.compile(r"(counter|gauge|histogram|summary)_.+\.db")

log = logging.getLogger("launcher")


def service_environment() -> dict[str, str]:
    """The environment of every child: what the user set wins over single-machine defaults."""
    env = dict(os.environ)
    env.setdefault("SERVE_SAMPLES", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # glibc's per-thread arenas fragment a long-running image worker's memory; two are plenty.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # Every process started here counts into one folder, which the API's /metrics adds up (metrics.py).
    instance_dir = Path(env.get("INSTANCE_DIR") or HERE / "instance")
    env.setdefault(METRICS_DIR_VARIABLE, str(instance_dir / "metrics"))
    if "FETCH_ALLOWED_NETWORKS" not in os.environ:
        env["FETCH_ALLOWED_NETWORKS"] = LOOPBACK_NETWORKS
        banner = "!" * 78
        log.warning(
            "\n%s\n  FETCH_ALLOWED_NETWORKS was not set: loopback (%s) is OPEN for image and webhook\n"
            "  fetches, so the bundled samples and the built-in receiver work offline. Never do this on\n"
            "  a machine reachable from the internet: set FETCH_ALLOWED_NETWORKS= (empty) there.\n%s",
            banner,
            LOOPBACK_NETWORKS,
            banner,
        )
    return env


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


def commands(env: dict[str, str]) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    port = env.get("PORT", "5000")
    host = env.get("HOST", "127.0.0.1")
    # Most of an image's time is spent waiting on its source: many more processes than cores keep
    # every core encoding while the others wait (bench/RESULTS.md has the figures).
    concurrency = env.get("WORKER_CONCURRENCY", str(IMAGE_PROCESSES_PER_CORE * (os.cpu_count() or 2)))
    json_logs = env.get("LOG_FORMAT", "").strip().lower() == "json"
    level = log_level(env)
    # Celery's banner is printed, not logged; gunicorn's master logs before any app exists.
    celery = [str(bin_dir / "celery"), *(["--quiet"] if json_logs else []), "-A", "app:celery_app"]
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
        # Webhooks and maintenance never wait behind image work: a small pool of their own. Prefork,
        # because Celery's thread pool does not recover from a lost broker connection (seen here).
        "control": [
            *celery,
            "worker",
            "--loglevel",
            level,
            "--queues",
            "webhooks,maintenance",
            "--concurrency",
            env.get("CONTROL_CONCURRENCY", "2"),
            "--hostname",
            f"control-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        "beat": [*celery, "beat", "--loglevel", level],
    }
    return argvs


def clear_metrics(env: dict[str, str]) -> None:
    """Start the counts afresh: remove the files of the processes an earlier run started.

    Only prometheus_client's own files go, in case the folder was set to one that holds others.
    """
    folder = Path(env[METRICS_DIR_VARIABLE])
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if METRICS_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)


def migrate(env: dict[str, str]) -> None:
    log.info("applying migrations")
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"], env=env, cwd=HERE, check=True
    )


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
        cwd=HERE,
        start_new_session=True,
        preexec_fn=child_setup(PARENT_DEATH_SIGNALS[name], nice),
    )


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process of the group, if any is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def is_running(child: subprocess.Popen) -> bool:
    """Whether the child, or any process it started in its process group, is alive."""
    child.poll()  # reaps the child, so that an exited one no longer counts as a group member
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM every child, wait up to ``STOP_GRACE_S`` for them and their own processes, then kill."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        else:
            # A child that died may have left its own processes behind, e.g. gunicorn's workers,
            # which notice a dead master only every half --timeout and keep the port until then.
            signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(is_running(child) for child in children.values()):
        time.sleep(0.1)
    for name, child in children.items():
        if is_running(child):
            log.warning("%s did not stop in %ss: killing it", name, STOP_GRACE_S)
            signal_group(child.pid, signal.SIGKILL)
        child.wait()


def terminal_hung_up(fd: int) -> bool:
    """Whether the terminal open on ``fd`` was closed."""
    poller = select.poll()
    poller.register(fd, 0)  # hang-ups and errors are reported without being asked for
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def supervise(children: dict[str, subprocess.Popen], stop_signals: list[int]) -> int:
    """Wait until a stop is asked for (0) or a child dies (1)."""
    # When make, not a shell, leads the terminal's session (``ssh -t host make run``), closing the
    # terminal sends SIGHUP to make alone, which then waits for the launcher: watch the terminal too.
    terminal = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    while True:
        if stop_signals:
            log.info("%s: stopping", signal.Signals(stop_signals[0]).name)
            return 0
        if terminal is not None and terminal_hung_up(terminal):
            log.info("the terminal hung up: stopping")
            return 0
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with %s: stopping the service", name, child.returncode)
                return 1
        time.sleep(0.5)


def run_one(role: str) -> int:
    """Run one role in the foreground, as a container or a process manager on another machine does.

    The same command line as ``make run`` starts for that role, with the environment as given: none of
    the single-machine defaults, the migrations left to ``migrate``.
    """
    env = dict(os.environ)
    if role == "migrate":
        migrate(env)
        return 0
    argv = commands(env)[role]
    os.nice(niceness(role, env))
    os.execve(argv[0], argv, env)  # noqa: S606  (the role's own fixed command line)


def main() -> int:
    try:
        log_context.configure_logging(log_format(os.environ), level=log_level(os.environ), fixed_name="launcher")
    except SettingsError as error:
        raise SystemExit(str(error)) from None
    if len(sys.argv) > 1:
        if sys.argv[1] not in ROLES:
            raise SystemExit(f"usage: launcher.py [{'|'.join(ROLES)}]  (no argument: the whole service)")
        return run_one(sys.argv[1])
    env = service_environment()
    to_start = commands(env)
    nice = {name: niceness(name, env) for name in to_start}
    clear_metrics(env)
    migrate(env)
    stop_signals: list[int] = []
    for signum in STOP_SIGNALS:
        # A hang-up ignored by whoever started the launcher stays ignored: ``nohup make run``. The
        # others always stop it, even when a shell without job control started it in the background
        # with SIGINT ignored, as ``make run &`` in a script does.
        if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
            continue
        signal.signal(signum, lambda received, _frame: stop_signals.append(received))
    children: dict[str, subprocess.Popen] = {}
    try:
        for name, argv in to_start.items():
            children[name] = start(name, argv, env, nice[name])
        base = env.get("PUBLIC_BASE_URL") or f"http://127.0.0.1:{env.get('PORT', '5000')}"
        log.info("service starting at %s (API, workers, beat); Ctrl-C stops it", base)
        return supervise(children, stop_signals)
    finally:
        stop(children)


if __name__ == "__main__":
    sys.exit(main())
