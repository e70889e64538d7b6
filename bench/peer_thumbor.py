"""The peer, side by side in the same run: thumbor 7.8 from PyPI (its Pillow engine, quality 50, one process
per core, no storage, no result storage), fed the same kind of sources as the service, bytes of their own
per URL, from the same server, with 48 requests in flight.

thumbor is installed once, into a virtualenv of its own under bench/results/ (it pins its own Pillow);
nothing of it is imported here. What thumbor does per image is less than the service: no job, no database,
no stored output, no webhook; the row says so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import venv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from sources import SourceServer
from stack import own_port

HERE = Path(__file__).resolve().parent
VENV = HERE / "results" / "thumbor-venv"
VERSION = "7.8.0"
IN_FLIGHT = 48
CONFIG = """
QUALITY = 50
ENGINE = 'thumbor.engines.pil'
LOADER = 'thumbor.loaders.http_loader'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ALLOW_UNSAFE_URL = True
RESPECT_ORIENTATION = True
PRESERVE_EXIF_INFO = False
AUTO_WEBP = False
MAX_AGE = 0
HTTP_LOADER_MAX_CLIENTS = 64
HTTP_LOADER_CONNECT_TIMEOUT = 5
HTTP_LOADER_REQUEST_TIMEOUT = 30
"""


def ensure_thumbor() -> Path:
    """thumbor's executable, installed into its own virtualenv the first time."""
    executable = VENV / "bin" / "thumbor"
    installed = VENV / f".thumbor-{VERSION}"
    if not installed.exists():
        venv.create(VENV, with_pip=True, clear=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", f"thumbor=={VERSION}"], check=True)
        installed.touch()
    return executable


@dataclass(frozen=True)
class PeerRate:
    label: str
    images: int
    ok: int
    seconds: float
    processes: int

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


class Thumbor:
    """A running thumbor on 127.0.0.1, ``processes`` processes; a context manager."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.port = own_port()
        self._folder = tempfile.TemporaryDirectory(prefix="bench-thumbor-")
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> Thumbor:
        conf = Path(self._folder.name) / "thumbor.conf"
        conf.write_text(CONFIG)
        argv = [str(ensure_thumbor()), "--ip", "127.0.0.1", "--port", str(self.port), "--conf", str(conf)]
        with open(Path(self._folder.name) / "thumbor.log", "wb") as log:
            self._process = subprocess.Popen(
                [*argv, "--processes", str(self.processes), "--log-level", "error"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{self.port}/healthcheck", timeout=1).status_code == 200:
                    return self
            if self._process.poll() is not None:
                break
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"thumbor did not start: {(Path(self._folder.name) / 'thumbor.log').read_text()[-2000:]}")

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, 15)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, 9)
                self._process.wait()
        self._folder.cleanup()

    def url(self, source_url: str, max_dimension: int | None) -> str:
        # JPEG out whatever comes in, as the service makes it (thumbor keeps a PNG's format by default).
        fit = f"fit-in/{max_dimension}x{max_dimension}/filters:no_upscale():format(jpeg)/" if max_dimension else ""
        operations = fit or "filters:format(jpeg)/"
        return f"http://127.0.0.1:{self.port}/unsafe/{operations}{source_url.removeprefix('http://')}"

    def throughput(
        self, server: SourceServer, label: str, images: int, latency_s: float, max_dimension: int | None
    ) -> PeerRate:
        """Every source once through thumbor, IN_FLIGHT at a time, from the first request to the last answer."""
        urls = [self.url(source.url, max_dimension) for source in server.sources(images, latency_s, f"thumbor-{label}")]
        local = threading.local()
        sessions: list[requests.Session] = []

        def fetch(url: str) -> bool:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                sessions.append(local.session)
            try:
                answer = local.session.get(url, timeout=60)
            except requests.RequestException:
                return False
            return answer.status_code == 200 and answer.content[:2] == b"\xff\xd8"

        warm = [self.url(s.url, max_dimension) for s in server.sources(2 * self.processes, 0.0, "thumbor-warm")]
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(fetch, warm))
            started = time.perf_counter()
            ok = sum(pool.map(fetch, urls))
            seconds = time.perf_counter() - started
        for session in sessions:
            session.close()
        return PeerRate(label, images, ok, seconds, self.processes)


if __name__ == "__main__":
    # A quick look on its own: python bench/peer_thumbor.py [images]
    from photos import ensure_photos

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with SourceServer(ensure_photos()) as sources, Thumbor(os.cpu_count() or 2) as peer:
        for label, latency, size in (("full/100ms", 0.1, None), ("1024/100ms", 0.1, 1024)):
            measured = peer.throughput(sources, label, count, latency, size)
            print(
                f"{label}: {measured.rate:.1f} images/s ({measured.ok}/{measured.images} in {measured.seconds:.1f} s)"
            )
