"""``make run``'s launcher takes every process it started with it, however it ends.

Each test starts the real launcher as ``make run`` does, in a session of its own as a terminal would,
strikes it (a signal to it or to its process group, or the death of one of its children), then
checks that no process of that run is left and that its port is free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.launched import GONE_WITHIN_S, LauncherRun, Terminal, as_from_a_terminal, describe, read_process

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


@pytest.fixture
def terminal(tmp_path) -> Iterator[Terminal]:
    terminal = Terminal(tmp_path / "launcher.log")
    try:
        yield terminal
    finally:
        terminal.close()


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


def test_nothing_outlives_a_closed_terminal_that_make_leads(tmp_path, terminal: Terminal) -> None:
    """Only make, leading the session, gets the SIGHUP; the launcher notices the terminal hung up."""
    run = LauncherRun(tmp_path, terminal, settings=SETTINGS)
    try:
        run.wait_ready()
        terminal.close()

        left = run.wait_gone(GONE_WITHIN_S)
        assert not left, f"{len(left)} processes outlived the terminal by {GONE_WITHIN_S}s:\n{describe(left)}"
        assert run.port_is_free()
        # Ended on its own; Python makes it 120 because it cannot flush its output to the closed terminal.
        assert run.process.wait(timeout=5) >= 0
    finally:
        run.kill_left_over()


def nice_value(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


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


def test_one_role_runs_alone_with_its_own_command_line(tmp_path) -> None:
    """``launcher.py worker`` becomes the image worker itself: same pid, celery's command line, lower priority."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "INSTANCE_DIR": str(instance),
        "WORKER_CONCURRENCY": "1",
        "FETCH_ALLOWED_NETWORKS": "",
    }
    subprocess.run([sys.executable, "launcher.py", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            as_from_a_terminal([sys.executable, "launcher.py", "worker"]), cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes() and time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()
            time.sleep(0.2)
        info = read_process(worker.pid)
        assert info is not None and "celery" in info.cmdline and "--queues images,imports" in info.cmdline
        assert nice_value(worker.pid) == min(nice_value(os.getpid()) + 10, 19)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    refused = subprocess.run([sys.executable, "launcher.py", "everything"], cwd=ROOT, env=env, capture_output=True)
    assert refused.returncode != 0 and b"usage: launcher.py" in refused.stderr
