"""The children's environment: single-machine defaults, the metrics folder, the migrations."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
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
    instance_dir = Path(env.get("INSTANCE_DIR") or ROOT / "instance")
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
    """Apply the database migrations (``flask db upgrade``), failing on any error."""
    log.info("applying migrations")
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "db", "upgrade"], env=env, cwd=ROOT, check=True
    )
