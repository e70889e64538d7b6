"""The Postman collection, run by newman against the service as ``make run`` starts it.

``launcher.py`` with no arguments and its embedded defaults (SQLite, the filesystem broker, local
storage, loopback open for fetches) in an instance folder and on a port of its own. newman missing is a
failure, not a skip, when TEST_REQUIRE_SERVICES=1 (as in CI, which runs ``npm ci --prefix postman``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backing import REQUIRE_SERVICES
from support.launched import LauncherRun, start, stop_and_check

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "postman" / "catalog-image-service.postman_collection.json"
NEWMAN = ROOT / "postman" / "node_modules" / ".bin" / "newman"
# The assertions of a run in which every poll finds its request final at once; each further poll adds one.
MIN_ASSERTIONS = 62
NEWMAN_TIMEOUT_S = 300


def collection_request_names() -> set[str]:
    def names(items: list[dict]) -> Iterator[str]:
        for entry in items:
            if "item" in entry:
                yield from names(entry["item"])
            else:
                yield entry["name"]

    return set(names(json.loads(COLLECTION.read_text())["item"]))


@pytest.fixture
def newman() -> Path:
    if not NEWMAN.exists():
        message = f"{NEWMAN} is missing: npm ci --prefix postman"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return NEWMAN


def run_collection(newman: Path, run: LauncherRun, report: Path, api_key: str = "") -> tuple[int, dict, str]:
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
