"""``make run``: migrate, then run the API, a worker and beat in the foreground until stopped.

Single-machine mode: SQLite, the filesystem broker and local storage unless the environment says
otherwise. Ctrl-C or SIGTERM stops every process started here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
STOP_GRACE_S = 15

log = logging.getLogger("launcher")


def service_environment() -> dict[str, str]:
    """The environment of every child: what the user set wins over single-machine defaults."""
    env = dict(os.environ)
    env.setdefault("SERVE_SAMPLES", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
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


def commands(env: dict[str, str]) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    port = env.get("PORT", "5000")
    host = env.get("HOST", "127.0.0.1")
    concurrency = env.get("WORKER_CONCURRENCY", str(os.cpu_count() or 2))
    return {
        "api": [
            str(bin_dir / "gunicorn"),
            "app:create_app()",
            "--bind",
            f"{host}:{port}",
            "--workers",
            env.get("WEB_CONCURRENCY", "2"),
            "--access-logfile",
            "-",
            "--graceful-timeout",
            "10",
            # A 10 MiB CSV of 370,000 URLs takes about 11 s to validate and store on PostgreSQL.
            "--timeout",
            "120",
        ],
        "worker": [
            str(bin_dir / "celery"),
            "-A",
            "app:celery_app",
            "worker",
            "--loglevel",
            "INFO",
            "--queues",
            "images",
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
            str(bin_dir / "celery"),
            "-A",
            "app:celery_app",
            "worker",
            "--loglevel",
            "INFO",
            "--queues",
            "webhooks,maintenance",
            "--concurrency",
            env.get("CONTROL_CONCURRENCY", "2"),
            "--hostname",
            f"control-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        "beat": [str(bin_dir / "celery"), "-A", "app:celery_app", "beat", "--loglevel", "INFO"],
    }


def migrate(env: dict[str, str]) -> None:
    log.info("applying migrations")
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"], env=env, cwd=HERE, check=True
    )


def stop(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %ss: killing it", name, STOP_GRACE_S)
            child.kill()
            child.wait()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s launcher: %(message)s")
    env = service_environment()
    migrate(env)
    stopping = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children = {
        # start_new_session: a Ctrl-C reaches the launcher only, which then stops each child in order.
        name: subprocess.Popen(argv, env=env, cwd=HERE, start_new_session=True)
        for name, argv in commands(env).items()
    }
    base = env.get("PUBLIC_BASE_URL") or f"http://127.0.0.1:{env.get('PORT', '5000')}"
    log.info("service starting at %s (API, worker, beat); Ctrl-C stops it", base)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with %s: stopping the service", name, child.returncode)
                stopping, exit_code = True, 1
        time.sleep(0.5)
    log.info("stopping")
    stop(children)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
