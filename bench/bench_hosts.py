"""Throughput across hosts: the catalog mix on RabbitMQ next to Redis, and two worker hosts against one.

The service is deployed as the fault suite's hosts test deploys it (``tests/faults/hosts.py``,
``host_deployment.py``), each host a network namespace of its own: PostgreSQL, the broker and an S3 server
(moto) on ``infra``; the API, beat, the webhook and maintenance workers on ``api``; one image process on
``worker-a`` (and one on ``worker-b``); the photos served from ``outside``, where the bench runs. Every
case is a fresh deployment with the service's default settings but ``WORKER_CONCURRENCY=1``, warmed up,
then timed from the upload's POST to its final status, with every URL serving bytes of its own. The cases
alternate (Redis then RabbitMQ, one worker host then two) and each runs ``--rounds`` times, so that a
moment of a shared machine is not read as a difference between them.

The hosts share this machine's cores: one image process is a core's worth, two worker hosts are two
cores' worth, and every other process of every host (PostgreSQL, the broker, moto, the API) takes its CPU
from the same two cores. The same run's limit is ``pipeline.compress`` on the very same bytes from memory,
by one process and by two (``throughput.cpu_limit``), measured with the deployment stopped.

    .venv/bin/python bench/bench_hosts.py [--images 200] [--rounds 2] [--write]

Needs root (network namespaces), PostgreSQL's server programs, redis-server and rabbitmq-server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "faults")]

import facts  # noqa: E402
import photos  # noqa: E402
import throughput  # noqa: E402
from client import Api, csv_of  # noqa: E402
from host_deployment import HOSTS, WORKER_HOSTS, HostDeployment  # noqa: E402
from hosts import Network  # noqa: E402
from sources import SourceServer  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = facts.KEPT_SECTIONS[1]
BROKERS = ("redis", "rabbitmq")


@dataclass
class Case:
    broker: str
    worker_hosts: int
    round: int
    images: int = 0
    seconds: float = 0.0
    completed: int = 0
    status: str = ""
    others_share: float = 0.0
    started_s: float = 0.0  #: from nothing to every role ready

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


class HostProcesses:
    """Every process of every host, for ``facts.OthersCpu``: what the deployment spends is the bench's own."""

    def __init__(self, network: Network) -> None:
        self.network = network

    def cpu_by_process(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        spent = {}
        for host in self.network.hosts.values():
            for pid in host.pids():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                spent[f"{host.name}:{pid}"] = sum(int(value) for value in fields[11:15]) / tick
        return spent


def run_case(case: Case, catalog: list, images: int, folder: Path) -> Case:
    network = Network(folder / f"{case.broker}-{case.worker_hosts}-{case.round}", HOSTS).create()
    deployment = HostDeployment(network, case.broker, base={}, WORKER_CONCURRENCY="1")
    try:
        with network.entered(network["outside"]):
            begun = time.monotonic()
            deployment.start(worker_hosts=WORKER_HOSTS[: case.worker_hosts])
            case.started_s = time.monotonic() - begun
            with SourceServer(catalog, host=network["outside"].address) as server:
                api = Api(deployment.base_url, None)
                warm = server.sources(case.worker_hosts * 4, 0.0, f"warm-{case.broker}-{case.round}")
                warmed = api.upload(csv_of([source.url for source in warm]))
                api.wait_final(warmed.request_id, 120)
                sources = server.sources(images, 0.0, f"{case.broker}-{case.worker_hosts}-{case.round}")
                with facts.OthersCpu(HostProcesses(network)) as others:
                    upload = api.upload(csv_of([source.url for source in sources]))
                    final_at, status = api.wait_final(upload.request_id, 600)
                case.others_share = others.share
                case.images = images
                case.seconds = final_at - upload.started
                case.completed = status["progress"]["completed_images"]
                case.status = status["status"]
                api.close()
    finally:
        with network.entered(network["outside"]):
            deployment.stop()
        network.destroy()
    return case


def limits(catalog: list, images: int) -> dict[int, float]:
    """images/s of one and of two processes compressing the case's bytes from memory (the faster codec)."""
    paths = [photo.path for photo in catalog]
    sample = [n % len(catalog) for n in range(min(images, 5 * len(catalog)))]
    found = {}
    for processes in (1, 2):
        found[processes] = max(
            throughput.cpu_limit(paths, sample, None, processes, codec) for codec in throughput.CODECS
        )
    return found


def table(cases: list[Case], limit: dict[int, float]) -> str:
    lines = [
        "| Broker | Worker hosts | Round | Images/s | Of the same run's limit | Final | Others' CPU | Started in |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        lines.append(
            f"| {case.broker} | {case.worker_hosts} | {case.round} | {case.rate:.1f} | "
            f"{case.rate / limit[case.worker_hosts]:.2f} of {limit[case.worker_hosts]:.1f} | "
            f"{case.status}, {case.completed}/{case.images} in {case.seconds:.1f} s | {case.others_share:.0%} | "
            f"{case.started_s:.0f} s |"
        )
    return "\n".join(lines)


def median_rate(cases: list[Case], broker: str, worker_hosts: int) -> float:
    return statistics.median(c.rate for c in cases if c.broker == broker and c.worker_hosts == worker_hosts)


def summary(cases: list[Case], limit: dict[int, float], images: int, rounds: int) -> str:
    header = facts.machine_facts()
    two = {broker: median_rate(cases, broker, 2) / median_rate(cases, broker, 1) for broker in BROKERS}
    brokers = {hosts: median_rate(cases, "rabbitmq", hosts) / median_rate(cases, "redis", hosts) for hosts in (1, 2)}
    lines = [
        f"Written by `bench/bench_hosts.py --images {images} --rounds {rounds} --write` on "
        f"{time.strftime('%Y-%m-%d')}; {header['CPU']}, {header['Commit']}. Load average at the end: "
        f"{facts.load_average()}.",
        "",
        "Each host is a network namespace of this machine (`tests/faults/hosts.py`): PostgreSQL, the broker and "
        "moto's S3 server on `infra`, the API, beat, webhooks and maintenance on `api`, one image process "
        "(`WORKER_CONCURRENCY=1`, every other setting its default) on each worker host, the photos on `outside`. "
        f"{images} distinct URLs of the catalog mix (`bench/photos.py`, 0 ms latency), a fresh deployment per "
        "case, warmed up first; POST to final status. The same run's limit: `pipeline.compress` of the same bytes "
        'from memory by as many processes as the case has worker hosts, the faster codec. "Others\' CPU" is '
        "what processes outside the deployment and the bench took of the machine meanwhile.",
        "",
        table(cases, limit),
        "",
        f"- **RabbitMQ against Redis** (medians): {brokers[1]:.2f}x with one worker host, {brokers[2]:.2f}x with two.",
        f"- **Two worker hosts against one** (medians): {two['redis']:.2f}x on Redis, {two['rabbitmq']:.2f}x on "
        f"RabbitMQ; the same-run limit of two processes is {limit[2] / limit[1]:.2f}x one's. The hosts share two "
        "cores: the second worker host adds the second core's worth of image processing, and nothing more, "
        "while PostgreSQL, the broker, moto and the API take their share of the same two cores.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help=f"write the section into {RESULTS.name}")
    args = parser.parse_args()
    catalog = photos.ensure_photos(specs=photos.CATALOG_SPECS)
    folder = Path(tempfile.mkdtemp(prefix="imgsvc-bench-hosts-"))
    folder.chmod(0o755)
    cases = []
    try:
        for round_ in range(1, args.rounds + 1):
            for broker in BROKERS:
                for worker_hosts in (1, 2):
                    case = run_case(Case(broker, worker_hosts, round_), catalog, args.images, folder)
                    print(
                        f"{broker}, {worker_hosts} worker host(s), round {round_}: {case.rate:.1f} images/s "
                        f"({case.status}, {case.completed}/{case.images} in {case.seconds:.1f} s; others "
                        f"{case.others_share:.0%})",
                        flush=True,
                    )
                    cases.append(case)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    limit = limits(catalog, args.images)
    print(f"limits: one process {limit[1]:.1f} images/s, two {limit[2]:.1f}", flush=True)
    text = summary(cases, limit, args.images, args.rounds)
    print(text)
    if args.write:
        facts.replace_section(RESULTS, HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
