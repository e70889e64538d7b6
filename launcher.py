"""``make run``: migrate, then run the API, the workers and beat in the foreground until stopped.

``launcher.py ROLE`` runs one of them alone (``api``, ``worker``, ``webhooks``, ``maintenance``, ``beat``)
or applies the migrations (``migrate``): what a container or another machine runs.

Single-machine mode: SQLite, the filesystem broker and local storage unless the environment says
otherwise. Nothing started here outlives the launcher: Ctrl-C, SIGTERM, SIGHUP (the terminal closed)
and SIGQUIT stop every process (SIGTERM, then SIGKILL after a grace); a child that dies stops the rest
and the launcher exits 1; if the launcher itself is killed, the kernel signals its children.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from config import SettingsError, log_format, log_level
from observability import log_context
from process_launch.environment import clear_metrics, migrate, service_environment
from process_launch.processes import commands, niceness, start
from process_launch.supervision import STOP_SIGNALS, stop, supervise

ROLES = ("api", "worker", "webhooks", "maintenance", "beat", "migrate")

log = logging.getLogger("launcher")


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
    """Run the role named on the command line, else the whole service until it is stopped."""
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
    # The migrations built the app once and logged the warnings about its settings: the processes
    # started now log them at DEBUG, so that each shows once a run, not once a process.
    env.setdefault("STARTUP_WARNINGS", "0")
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
