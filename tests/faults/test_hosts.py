"""The service on hosts with network stacks of their own (``ip netns``), on Redis and on RabbitMQ.

``infra`` runs PostgreSQL, the broker and an S3 server; ``api`` the API, beat, webhooks and maintenance;
``worker-a`` and ``worker-b`` an image worker each; ``outside`` the image sources and the webhook receiver,
and the test itself. Every request's images have bytes of their own, so each must end with one output of
its own, one object in the bucket, and the request with one webhook, whatever befell a host:

- both worker hosts take part in a request;
- a worker host dies (every process in its namespace SIGKILLed) mid-request;
- a worker host is cut off (its link down) for longer than an image's lease and the broker's
  redelivery timeout, then comes back: what it held was taken over, and nothing it does once back changes
  the final request, its images, outputs or objects;
- the broker is killed and started again under traffic, and nothing is stuck.

The hosts need root and network namespaces: where they cannot be made, the tests fail saying so.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from harness import IMAGE_TASK_RECEIVED, wait_for
from host_deployment import BUCKET, HOST_BROKERS, HOSTS, WORKER_HOSTS, HostDeployment
from hosts import NamespacesUnavailable, Network
from invariants import changes_between, engine_of, fail_on, objects_in, output_problems, outputs_of, snapshot
from scenario import SlowSource, deliveries_for, start_request, wait_final, wait_progress
from support.loopback import LoopbackHTTPServer
from support.receivers import WebhookReceiver

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session", params=HOST_BROKERS)
def deployment(request) -> Iterator[HostDeployment]:
    """Made once per broker (the fault suite runs a module's tests in one test worker, ``--dist loadscope``),
    and kept should other modules' tests run in between: only a test of this module's (``hosts``) puts the
    test's thread on the ``outside`` host."""
    folder = Path(tempfile.mkdtemp(prefix="imgsvc-hosts-"))
    folder.chmod(0o755)  # PostgreSQL and RabbitMQ run as users of their own
    try:
        network = Network(folder, HOSTS).create()
    except NamespacesUnavailable as error:
        pytest.fail(f"hosts as network namespaces: {error}", pytrace=False)
    deployed = HostDeployment(network, request.param)
    server = None
    try:
        with network.entered(network["outside"]):
            deployed.start()
            # Its socket is made on the outside host, and so is its thread: both stay there.
            server = LoopbackHTTPServer(network["outside"].address).start()
            deployed.sources = SlowSource(server, delay_s=0.1)
            deployed.receiver = WebhookReceiver(server, "/hooks/catalog")
        yield deployed
    finally:
        with network.entered(network["outside"]):
            if server is not None:
                server.stop()
            deployed.stop()
        network.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def hosts(deployment) -> Iterator[HostDeployment]:
    """The deployment with both worker hosts up and joined, the test's thread on the outside host, and a
    database connection of the test's own."""
    with deployment.network.entered(deployment.outside):
        for name in WORKER_HOSTS:
            deployment.restart_worker_host(name)
        deployment.sources.delay_s = 0.1
        deployment.database = engine_of(deployment.settings)
        yield deployment
        deployment.database.dispose()


def check_request(hosts: HostDeployment, request_id: str, urls: list[str], report: dict) -> None:
    """Completed, every image once with an output of its own, every object in the bucket named by an output,
    and one webhook; nothing changes over the next seconds."""
    answer = wait_final(hosts, request_id, timeout_s=120)
    assert answer["status"] == "COMPLETED", answer
    assert answer["progress"]["completed_images"] == len(urls)
    stored = objects_in(hosts.s3_client(), BUCKET)
    at_final = snapshot(hosts.database, request_id, stored)
    outputs = outputs_of(hosts.database, request_id, stored)
    # The bucket also holds earlier requests' outputs: an orphan is an object that no output row names at all.
    problems = output_problems(dataclasses.replace(outputs, orphans=[]), len(urls))
    with hosts.database.connect() as connection:
        named = set(connection.execute(sqlalchemy.text("SELECT storage_key FROM image_outputs")).scalars())
    unnamed = sorted(set(stored) - named)
    if unnamed:
        problems.append(f"{len(unnamed)} objects in the bucket no output names: {unnamed[:10]}")
    wait_for(lambda: deliveries_for(hosts.receiver, request_id), 30, "the webhook")
    time.sleep(3)
    problems += changes_between(at_final, snapshot(hosts.database, request_id, objects_in(hosts.s3_client(), BUCKET)))
    fail_on(problems)
    assert len(deliveries_for(hosts.receiver, request_id)) == 1
    with hosts.database.connect() as connection:
        events = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM webhook_events WHERE request_id = :id"), {"id": request_id}
        ).scalar()
    assert events == 1
    report.update(broker=hosts.broker_kind, images=len(urls), outputs=len(outputs.pointed_at))


def images_by_host(hosts: HostDeployment, request_id: str) -> dict[str, int]:
    """How many of the request's images each worker host completed (the task each image row names)."""
    with hosts.database.connect() as connection:
        tasks = connection.execute(
            sqlalchemy.text("SELECT claimed_by FROM images WHERE request_id = :id"), {"id": request_id}
        ).scalars()
        tasks = list(tasks)
    ran = {name: hosts.tasks_of(hosts.network[name]) for name in WORKER_HOSTS}
    return {name: sum(task in ran[name] for task in tasks) for name in WORKER_HOSTS}


def held_by(hosts: HostDeployment, name: str, request_id: str) -> list[int]:
    """The request's images PROCESSING under a task the host took."""
    taken = hosts.tasks_of(hosts.network[name], IMAGE_TASK_RECEIVED)
    with hosts.database.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT id, claimed_by FROM images WHERE request_id = :id AND status = 'PROCESSING'"),
            {"id": request_id},
        ).all()
    return [row.id for row in rows if row.claimed_by in taken]


def test_a_request_completes_with_both_worker_hosts_taking_part(hosts, report):
    request_id, urls = start_request(hosts, hosts.sources, hosts.receiver, images=48)
    check_request(hosts, request_id, urls, report)

    def traced() -> dict[str, int] | None:
        shares = images_by_host(hosts, request_id)
        return shares if sum(shares.values()) == len(urls) else None

    # A task's "succeeded" line is logged after it recorded its images, so it may trail the final status.
    shares = wait_for(traced, 15, "every image traced to the worker host that completed it")
    report["images_by_host"] = shares
    assert min(shares.values()) >= 4, f"both worker hosts take part: {shares}"


def test_a_worker_host_killed_mid_request_loses_nothing(hosts, report):
    hosts.sources.delay_s = 0.5
    request_id, urls = start_request(hosts, hosts.sources, hosts.receiver, images=48)
    victim = hosts.network["worker-a"]
    wait_for(lambda: held_by(hosts, victim.name, request_id), 60, "worker-a to hold images")
    report["held_when_killed"] = len(held_by(hosts, victim.name, request_id))
    report["processes_killed"] = victim.kill_every_process()
    assert victim.pids() == []
    check_request(hosts, request_id, urls, report)


def test_a_worker_host_cut_off_past_its_lease_is_taken_over_and_undoes_nothing(hosts, report):
    hosts.sources.delay_s = 0.5
    request_id, urls = start_request(hosts, hosts.sources, hosts.receiver, images=48)
    cut_off = hosts.network["worker-b"]
    held = wait_for(lambda: held_by(hosts, cut_off.name, request_id), 60, "worker-b to hold images")
    hosts.network.cut(cut_off)
    cut_at = time.monotonic()
    lease_s = max(int(hosts.settings["STALE_IMAGE_AFTER_S"]), int(hosts.settings["BROKER_VISIBILITY_TIMEOUT_S"]))
    answer = wait_final(hosts, request_id, timeout_s=120)
    assert answer["status"] == "COMPLETED", answer
    report["final_after_cut_s"] = round(time.monotonic() - cut_at, 1)
    time.sleep(max(0.0, lease_s + 5 - (time.monotonic() - cut_at)))
    before = snapshot(hosts.database, request_id, objects_in(hosts.s3_client(), BUCKET))
    hosts.network.reconnect(cut_off)
    report["cut_off_s"] = round(time.monotonic() - cut_at, 1)
    # Its images were done by the other host while it was away.
    with hosts.database.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT id, status, claimed_by FROM images WHERE id = ANY(:ids)"), {"ids": held}
        ).all()
    assert {row.status for row in rows} == {"COMPLETED"}
    wait_for(
        lambda: {row.claimed_by for row in rows} <= hosts.tasks_of(hosts.network["worker-a"]),
        15,
        "worker-a to have done every image worker-b held",
    )
    report["held_when_cut"] = len(held)
    # Back on the network, worker-b acknowledges, reconnects and takes work again: none of it changes the
    # request.
    wait_for(lambda: hosts.answers(), 10, "the API")
    time.sleep(15)
    fail_on(changes_between(before, snapshot(hosts.database, request_id, objects_in(hosts.s3_client(), BUCKET))))
    check_request(hosts, request_id, urls, report)
    assert len(deliveries_for(hosts.receiver, request_id)) == 1


def test_the_broker_restarted_under_traffic_leaves_nothing_stuck(hosts, report):
    hosts.sources.delay_s = 0.5
    request_id, urls = start_request(hosts, hosts.sources, hosts.receiver, images=48)
    wait_progress(hosts, request_id, 8)
    report["broker_away_s"] = round(hosts.restart_broker(), 1)
    check_request(hosts, request_id, urls, report)
    # Every process lived through it, and the next request goes through as the first did.
    for name, process in hosts.processes.items():
        assert process.process.poll() is None, f"{name} died: " + process.log()[-3000:]
    hosts.sources.delay_s = 0.1
    again_id, again_urls = start_request(hosts, hosts.sources, hosts.receiver, images=8)
    check_request(hosts, again_id, again_urls, {})
