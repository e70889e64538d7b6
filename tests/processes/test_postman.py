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
MIN_ASSERTIONS = 87
NEWMAN_TIMEOUT_S = 300


def collection_request_names() -> set[str]:
    def names(items: list[dict]) -> Iterator[str]:
        for entry in items:
            if "item" in entry:
                yield from names(entry["item"])
            else:
                yield entry["name"]

    return set(names(json.loads(COLLECTION.read_text())["item"]))


def collection_requests() -> Iterator[dict]:
    def requests(items: list[dict]) -> Iterator[dict]:
        for entry in items:
            if "item" in entry:
                yield from requests(entry["item"])
            else:
                yield entry["request"]

    return requests(json.loads(COLLECTION.read_text())["item"])


def _raw_url(request: dict) -> str:
    url = request["url"]
    return url if isinstance(url, str) else url["raw"]


def _fields(request: dict) -> dict[str, str]:
    body = request.get("body") or {}
    if body.get("mode") not in ("formdata", "urlencoded"):
        return {}
    return {field["key"]: field["value"] for field in body[body["mode"]]}


def test_the_collection_shows_platform_exports_image_packs_and_feeds() -> None:
    """Without a service: the collection uploads a Shopify export with input_format=shopify, uploads a file by
    its URL as application/x-www-form-urlencoded, and downloads images.zip both plainly and named for Amazon."""
    requests = list(collection_requests())
    uploads = [_fields(r) for r in requests if r["method"] == "POST" and _raw_url(r).endswith("/api/upload")]
    assert any(fields.get("input_format") == "shopify" and "file" in fields for fields in uploads)
    feeds = [r for r in requests if r["method"] == "POST" and "feed_url" in _fields(r)]
    assert feeds and all(r["body"]["mode"] == "urlencoded" and "file" not in _fields(r) for r in feeds)
    packs = [_raw_url(r) for r in requests if r["method"] == "GET" and "/images.zip" in _raw_url(r)]
    assert any("?" not in url for url in packs)
    assert any("naming=amazon" in url and "identifier=" in url for url in packs)


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
