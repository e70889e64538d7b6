"""docker-compose.yml, checked as far as a machine without a Docker engine can: the file is valid compose,
each of our services runs the launcher role the tests run, and the stack's settings hold together.

No container is started here: MinIO, the bucket's one-shot, Flower and the images are not run (README).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import launcher
from config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
OUR_SERVICES = {"migrate", "api", "worker", "webhooks", "maintenance", "beat"}


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    message = "neither docker-compose nor the docker compose plugin is installed (apt-get install docker-compose)"
    if os.environ.get("TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _config(compose_file: Path, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # The compose file's own defaults, not this shell's settings.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(environment or {})}
    return subprocess.run(
        [*_compose_command(), "-f", str(compose_file), "config"], capture_output=True, text=True, env=env, cwd=ROOT
    )


@pytest.fixture(scope="module")
def stack() -> dict:
    """The compose file as compose resolves it: anchors merged, variables given their defaults."""
    resolved = _config(COMPOSE_FILE)
    assert resolved.returncode == 0, resolved.stderr
    return yaml.safe_load(resolved.stdout)


def test_the_compose_file_is_valid_and_an_invalid_one_is_refused(stack, tmp_path):
    assert set(stack["services"]) == OUR_SERVICES | {"flower", "minio", "minio-bucket", "postgres", "redis"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace('ports: ["127.0.0.1:5555:5555"]', "ports: 5555"))
    assert _config(broken).returncode != 0


def test_each_of_our_services_runs_the_launcher_role_the_tests_run(stack):
    env = stack["services"]["api"]["environment"]
    role_commands = launcher.commands({**os.environ, **env})
    for name in OUR_SERVICES:
        service = stack["services"][name]
        assert service["command"] == ["python", "launcher.py", name], name
        assert name in launcher.ROLES
        # `launcher.py ROLE` execs the very command line `make run` starts for it (launcher.run_one).
        assert name == "migrate" or name in role_commands, name
    # Unset unless given: the launcher starts one image process per core of the container.
    assert stack["services"]["worker"]["environment"]["WORKER_CONCURRENCY"] in ("", None)


def test_the_stack_stores_in_the_bucket_the_one_shot_creates_and_makes_readable(stack):
    services = stack["services"]
    env = services["api"]["environment"]
    settings = Settings.from_env({key: str(value) for key, value in env.items()})
    bucket = settings.s3["S3_BUCKET"]
    assert settings.storage_backend == "s3" and settings.s3["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert settings.s3["S3_PUBLIC_BASE_URL"].endswith(f"/{bucket}")
    for name in OUR_SERVICES:
        assert services[name]["environment"]["S3_BUCKET"] == bucket, name

    minio = services["minio"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    one_shot = " ".join(services["minio-bucket"]["command"])
    assert f"mc mb --ignore-existing store/{bucket}" in one_shot
    assert f"mc anonymous set download store/{bucket}" in one_shot
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in OUR_SERVICES:
        assert services[name]["depends_on"].get("minio-bucket", services[name]["depends_on"].get("migrate")), name
    assert services["migrate"]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"


def test_every_container_counts_into_the_one_metrics_folder_the_api_scrapes(stack):
    services = stack["services"]
    for name in OUR_SERVICES:
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/metrics", name
        assert any(
            str(volume).startswith("metrics:/metrics") or _target(volume) == "/metrics"
            for volume in services[name]["volumes"]
        ), name
    assert stack["volumes"]["metrics"]["driver_opts"]["type"] == "tmpfs"


def _target(volume) -> str | None:
    return volume.get("target") if isinstance(volume, dict) else None


def test_flower_watches_the_broker_the_service_uses(stack):
    flower = stack["services"]["flower"]
    broker = stack["services"]["worker"]["environment"]["CELERY_BROKER_URL"]
    assert f"--broker={broker}" in flower["command"] and "flower" in flower["command"]
