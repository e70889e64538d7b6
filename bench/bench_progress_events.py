"""What 100 watchers of one running request cost: ``python bench/bench_progress_events.py``.

The bench's own stack (PostgreSQL with pg_stat_statements, Redis, the service's real processes as
``make run`` starts them), one request of slow images running throughout, and two windows of equal
length: first with nobody watching, then with ``--watchers`` progress streams open on it. Each window
reports the API processes' RSS and CPU, the database's statements per second (all of them, and the
hub's read alone), and, in the second, the events each watcher received and how long a status poll took.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
import stack as stack_module
from PIL import Image

sys.path.insert(0, str(stack_module.ROOT / "tests"))
from support.loopback import LoopbackHTTPServer

HUB_QUERY = "%FROM requests%WHERE requests.id IN%"


class CountingPostgres(stack_module.BenchPostgres):
    """The bench's cluster, counting statements (pg_stat_statements) for the queries-per-second figures."""

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'}"
            " -c shared_preload_libraries=pg_stat_statements"
        )
        self._run([stack_module._pg_ctl(), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"])


def tree_rss_kib(root: int) -> int:
    """Resident memory of a process and all its descendants, in KiB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        pending.extend(children.get(pid, ()))
    return total


def statements(running) -> tuple[int, int]:
    """(all statements, the hub's reads) run so far on the service's database."""
    rows = running.query(
        "SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER (WHERE query LIKE %s), 0)"
        " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()",
        (HUB_QUERY,),
    )
    return int(rows[0][0]), int(rows[0][1])


class Watcher(threading.Thread):
    """One progress stream on the request, reconnecting (with Last-Event-ID) after a 503 as a client would."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, stop
        self.events = 0
        self.refused = 0
        self.connected = threading.Event()
        self.last_id: str | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                with requests.get(self.url, headers=headers, stream=True, timeout=(5, 60)) as response:
                    if response.status_code == 503:
                        self.refused += 1
                        time.sleep(1)
                        continue
                    self.connected.set()
                    for line in response.iter_lines(chunk_size=1024):
                        if self.stop.is_set():
                            return
                        if line.startswith(b"id: "):
                            self.last_id = line[4:].decode()
                        elif line.startswith(b"event: "):
                            self.events += 1
                            if line == b"event: final":
                                return
            except requests.RequestException:
                time.sleep(0.5)


def measure(running, seconds: float, base_url: str, request_id: str) -> dict[str, float]:
    api_pid = running.processes["api"].process.pid
    cpu0, (all0, hub0), t0 = stack_module.tree_cpu_s(api_pid), statements(running), time.monotonic()
    polls: list[float] = []
    while time.monotonic() - t0 < seconds:
        started = time.monotonic()
        requests.get(f"{base_url}/api/status/{request_id}?per_page=1", timeout=10).raise_for_status()
        polls.append(time.monotonic() - started)
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    all1, hub1 = statements(running)
    return {
        "api_rss_mib": tree_rss_kib(api_pid) / 1024,
        "api_cpu_pct": 100 * (stack_module.tree_cpu_s(api_pid) - cpu0) / elapsed,
        "db_statements_per_s": (all1 - all0) / elapsed,
        "hub_reads_per_s": (hub1 - hub0) / elapsed,
        "poll_ms_median": 1000 * statistics.median(polls),
        "poll_ms_max": 1000 * max(polls),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--images", type=int, default=3000)
    args = parser.parse_args()
    stack_module.BenchPostgres = CountingPostgres  # the stack builds its cluster from this name

    out = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 40)).save(out, "JPEG", quality=90)
    jpeg = out.getvalue()

    def slow_image(request) -> None:
        time.sleep(0.5)
        request.send(200, jpeg, {"Content-Type": "image/jpeg"})

    log_dir = Path(tempfile.mkdtemp(prefix="imgsvc-bench-events-"))
    with LoopbackHTTPServer(stack_module.IMAGE_HOST) as sources, stack_module.Stack(log_dir) as bench:
        sources.default = slow_image
        with bench.service("events") as running:
            running.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT 1")
            base = running.base_url
            urls = [sources.url(f"/{uuid.uuid4().hex}/{n}.jpg") for n in range(args.images)]
            lines = ["S. No.,Product Name,Input Image Urls"]
            lines += [f'{n + 1},P{n},"{",".join(urls[n * 10 : n * 10 + 10])}"' for n in range(args.images // 10)]
            answer = requests.post(
                f"{base}/api/upload", files={"file": ("p.csv", "\n".join(lines).encode(), "text/csv")}, timeout=120
            )
            answer.raise_for_status()
            request_id = answer.json()["request_id"]
            time.sleep(3)  # let the request get going

            quiet = measure(running, args.window_s, base, request_id)
            stop = threading.Event()
            watchers = [Watcher(f"{base}/api/status/{request_id}/events", stop) for _ in range(args.watchers)]
            for watcher in watchers:
                watcher.start()
            for watcher in watchers:
                watcher.connected.wait(30)
            watched = measure(running, args.window_s, base, request_id)
            progress = requests.get(f"{base}/api/status/{request_id}?per_page=1", timeout=10).json()["progress"]
            stop.set()
            connected = sum(w.connected.is_set() for w in watchers)
            events = [w.events for w in watchers]

    print(f"request: {args.images} images at 0.5 s each; still running at the end: {progress}")
    refused = sum(w.refused for w in watchers)
    print(f"windows of {args.window_s:g} s; {connected}/{args.watchers} watchers connected, {refused} 503s on the way")
    print(f"logs: {log_dir}")
    print(f"events per watcher: min {min(events)}, median {statistics.median(events):g}, max {max(events)}")
    print(f"{'':24}{'no watchers':>14}{f'{args.watchers} watchers':>14}")
    for key in quiet:
        print(f"{key:24}{quiet[key]:14.1f}{watched[key]:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
