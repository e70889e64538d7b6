"""``make run``'s launcher takes every process it started with it, however it ends.

Each test starts the real launcher as ``make run`` does, in a session of its own as a terminal would,
strikes it (a signal to it or to its process group, or the death of one of its children), then
checks that no process of that run is left and that its port is free.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.launched import GONE_WITHIN_S, LauncherRun, describe, nice_value

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Loopback closed to fetches, as on a machine reachable from the internet.
SETTINGS = {"FETCH_ALLOWED_NETWORKS": ""}


@pytest.fixture
def launcher_run(tmp_path) -> Iterator[LauncherRun]:
    run = LauncherRun(tmp_path, settings=SETTINGS)
    try:
        yield run
    finally:
        run.kill_left_over()


# One function a strike, alike but for the signal and its target, so that each test id names its strike.
def sigkill_launcher(run: LauncherRun) -> None:
    os.kill(run.pid, signal.SIGKILL)


def sigkill_group(run: LauncherRun) -> None:
    os.killpg(run.pid, signal.SIGKILL)


def sighup_group(run: LauncherRun) -> None:
    """What closing the terminal does."""
    os.killpg(run.pid, signal.SIGHUP)


def sigquit_launcher(run: LauncherRun) -> None:
    os.kill(run.pid, signal.SIGQUIT)


def sigint_group(run: LauncherRun) -> None:
    """What Ctrl-C does."""
    os.killpg(run.pid, signal.SIGINT)


def sigterm_launcher(run: LauncherRun) -> None:
    os.kill(run.pid, signal.SIGTERM)


def api_dies(run: LauncherRun) -> None:
    """The gunicorn master killed (say by the OOM killer), its workers left behind on the port."""
    os.kill(run.child("gunicorn").pid, signal.SIGKILL)


STRIKES: list[tuple[Callable[[LauncherRun], None], int]] = [
    (sigkill_launcher, -signal.SIGKILL),
    (sigkill_group, -signal.SIGKILL),
    (sighup_group, 0),
    (sigquit_launcher, 0),
    (sigint_group, 0),
    (sigterm_launcher, 0),
    (api_dies, 1),
]


@pytest.mark.parametrize(("strike", "exit_code"), STRIKES, ids=[strike.__name__ for strike, _ in STRIKES])
def test_nothing_outlives_the_launcher(launcher_run: LauncherRun, strike, exit_code: int) -> None:
    launcher_run.wait_ready()
    struck_at = time.monotonic()
    strike(launcher_run)

    left = launcher_run.wait_gone(GONE_WITHIN_S)
    gone_after_s = time.monotonic() - struck_at
    assert not left, f"{len(left)} processes outlived the launcher by {GONE_WITHIN_S}s:\n{describe(left)}"
    assert launcher_run.port_is_free(), f"port {launcher_run.port} still taken {gone_after_s:.1f}s after the strike"
    assert launcher_run.process.wait(timeout=5) == exit_code, launcher_run.log()[-4000:]
    if exit_code == 0:
        assert "Traceback" not in launcher_run.log(), launcher_run.log()[-4000:]


def test_image_work_yields_the_cpu_to_the_api(launcher_run: LauncherRun) -> None:
    """The image worker and its pool run at a lower priority; the API, the other workers and beat do not."""
    launcher_run.wait_ready()
    own = nice_value(os.getpid())
    by_role = {role: launcher_run.child(word) for role, word in (("api", "gunicorn"), ("beat", " beat"))}
    by_role["worker"] = launcher_run.child("--queues images")
    by_role["webhooks"] = launcher_run.child("--queues webhooks")
    by_role["maintenance"] = launcher_run.child("--queues maintenance")
    pool = [info for info in launcher_run.recorded if info.ppid == by_role["worker"].pid]
    assert pool, describe(launcher_run.recorded)
    assert {pid: nice_value(pid) for pid in [by_role["worker"].pid, *(info.pid for info in pool)]} == dict.fromkeys(
        [by_role["worker"].pid, *(info.pid for info in pool)], min(own + 10, 19)
    )
    assert {role: nice_value(info.pid) for role, info in by_role.items() if role != "worker"} == {
        "api": own,
        "beat": own,
        "webhooks": own,
        "maintenance": own,
    }
