"""The Postman collection, run by newman against the service as ``make run`` starts it.

``launcher.py`` with no arguments and its embedded defaults (SQLite, the filesystem broker, local
storage, loopback open for fetches) in an instance folder and on a port of its own. newman missing is a
failure, not a skip, when TEST_REQUIRE_SERVICES=1 (as in CI, which runs ``npm ci --prefix postman``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import REQUIRE_SERVICES
from loopback_servers import unused_port
from test_launcher_signals import GONE_WITHIN_S, PROCESSES_OF_A_RUN, carries, describe, live_processes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "postman" / "catalog-image-service.postman_collection.json"
NEWMAN = ROOT / "postman" / "node_modules" / ".bin" / "newman"
# The assertions of a run in which every poll finds its request final at once; each further poll adds one.
MIN_ASSERTIONS = 44
NEWMAN_TIMEOUT_S = 300


def collection_request_names() -> set[str]:
    def names(items: list[dict]) -> Iterator[str]:
        for entry in items:
            if "item" in entry:
                yield from names(entry["item"])
            else:
                yield entry["name"]

    return set(names(json.loads(COLLECTION.read_text())["item"]))


class MakeRun:
    """``python launcher.py`` as ``make run`` starts it, with an instance folder and a port of its own."""

    def __init__(self, folder: Path, extra_env: dict[str, str]) -> None:
        self.instance_dir = folder / "instance"
        self.port = unused_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.marker = f"INSTANCE_DIR={self.instance_dir}".encode()
        self.log_path = folder / "launcher.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(folder),
            "LANG": "C.UTF-8",
            "INSTANCE_DIR": str(self.instance_dir),
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "WORKER_CONCURRENCY": "2",
            **extra_env,
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "launcher.py"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def left_over(self) -> list:
        return [info for info in live_processes() if info.pid != os.getpid() and carries(info.pid, self.marker)]

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the launcher exited early:\n{self.log()[-4000:]}"
            try:
                answers = requests.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                answers = False
            if "ready." in self.log() and answers and len(self.left_over()) >= PROCESSES_OF_A_RUN:
                return
            time.sleep(0.2)
        raise AssertionError(f"the launcher was not ready in {timeout_s}s:\n{self.log()[-4000:]}")

    def stop(self) -> list:
        """SIGTERM, as a service manager stops it; what is still running after the grace."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=GONE_WITHIN_S + 15)
        deadline = time.monotonic() + GONE_WITHIN_S
        while self.left_over() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.left_over()

    def kill_left_over(self) -> None:
        for info in self.left_over():
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)


@pytest.fixture
def newman() -> Path:
    if not NEWMAN.exists():
        message = f"{NEWMAN} is missing: npm ci --prefix postman"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return NEWMAN


def start(tmp_path: Path, extra_env: dict[str, str]) -> MakeRun:
    run = MakeRun(tmp_path, extra_env)
    try:
        run.wait_ready()
    except BaseException:
        run.kill_left_over()
        raise
    return run


def run_collection(newman: Path, run: MakeRun, report: Path, api_key: str = "") -> tuple[int, dict, str]:
    argv = [str(newman), "run", str(COLLECTION), "--env-var", f"baseUrl={run.base_url}"]
    if api_key:
        argv += ["--env-var", f"apiKey={api_key}"]
    argv += ["--working-dir", str(ROOT), "--reporters", "cli,json", "--reporter-json-export", str(report)]
    finished = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=NEWMAN_TIMEOUT_S)
    return finished.returncode, json.loads(report.read_text())["run"], finished.stdout[-6000:]


def assert_all_passed(exit_code: int, report: dict, output: str) -> None:
    failures = [f"{failure['source']['name']}: {failure['error']['message']}" for failure in report["failures"]]
    assert exit_code == 0 and not failures, "\n".join(failures) + "\n" + output
    ran = [execution["item"]["name"] for execution in report["executions"]]
    assert set(ran) == collection_request_names(), output
    repeated_polls = len(ran) - len(set(ran))
    assertions = report["stats"]["assertions"]
    assert assertions["failed"] == 0 and assertions["total"] >= MIN_ASSERTIONS + repeated_polls, assertions
    assert report["stats"]["requests"]["failed"] == 0, report["stats"]["requests"]


def stop_and_check(run: MakeRun) -> None:
    left = run.stop()
    assert not left, f"{len(left)} processes outlived the launcher:\n{describe(left)}"
    assert run.process.returncode == 0, run.log()[-4000:]


def test_the_collection_passes_against_make_run(tmp_path: Path, newman: Path) -> None:
    run = start(tmp_path, {})
    try:
        assert_all_passed(*run_collection(newman, run, tmp_path / "report.json"))
        stop_and_check(run)
    finally:
        run.kill_left_over()


def test_the_collection_sends_its_api_key(tmp_path: Path, newman: Path) -> None:
    """With API_KEYS set the collection passes with the key in ``apiKey``, and fails with a wrong one."""
    run = start(tmp_path, {"API_KEYS": "k1"})
    try:
        assert_all_passed(*run_collection(newman, run, tmp_path / "keyed.json", api_key="k1"))

        exit_code, report, output = run_collection(newman, run, tmp_path / "wrong.json", api_key="wrong")
        assert exit_code != 0, output
        refused = [failure for failure in report["failures"] if failure["source"]["name"] == "Upload the sample CSV"]
        assert refused and "401" in refused[0]["error"]["message"], output
        stop_and_check(run)
    finally:
        run.kill_left_over()
