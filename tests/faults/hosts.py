"""Hosts on one machine: a network namespace each (``ip netns``), joined by veth links to one bridge.

Every host has its own network stack: its own loopback, ports and routes, so no host reaches another's
127.0.0.1. Each is given an address in 127.77.0.0/24 on its link, so that all traffic stays on loopback
addresses: the host's own loopback keeps only 127.0.0.1/32, the rest of 127.0.0.0/8 is routed over the
link, and ``route_localnet`` lets the kernel carry such addresses on a link that is not ``lo``.

A host can be killed (SIGKILL to every process in its namespace) or cut off (its link down at the
bridge, so that its packets go nowhere and its peers see nothing close, as a network partition does).
The test's own thread enters a host (``entered``) to reach the others' addresses: a socket belongs to
the namespace its thread was in when it was made, and threads started from there inherit it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
SUBNET = "127.77.0"
_libc = ctypes.CDLL(None, use_errno=True)


class NamespacesUnavailable(RuntimeError):
    """This machine (or sandbox) cannot make network namespaces."""


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=check)


def _setns(path: str) -> None:
    with open(path) as namespace:
        if _libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({path}): {os.strerror(error)}")


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    #: The host's own disk: its processes' INSTANCE_DIR and logs are under it.
    folder: Path
    #: The bridge's side of the host's link.
    port: str
    processes: list = field(default_factory=list)

    def command(self, argv: list[str] | tuple[str, ...] = ()) -> list[str]:
        """``argv`` run on this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.namespace, check=False).stdout.split()
        return [int(pid) for pid in listed]

    def kill_every_process(self, timeout_s: float = 20) -> int:
        """SIGKILL everything running in the namespace until nothing is; returns how many were killed."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise AssertionError(f"host {self.name}: processes {pids} outlived SIGKILL")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            time.sleep(0.1)
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.process.wait(timeout=5)
        return len(killed)


class Network:
    """Hosts named by ``names``, each in a namespace of its own, on one bridge in a namespace of its own."""

    def __init__(self, folder: Path, names: list[str]) -> None:
        if shutil.which("ip") is None:
            raise NamespacesUnavailable("`ip` (Debian's iproute2) is not installed")
        tag = uuid.uuid4().hex[:6]
        self.switch = f"imgsvc-{tag}-net"
        self.hosts = {
            name: Host(
                name=name,
                namespace=f"imgsvc-{tag}-{name}",
                address=f"{SUBNET}.{number}",
                folder=folder / name,
                port=f"p{number}-{tag}",
            )
            for number, name in enumerate(names, start=1)
        }

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def create(self) -> Network:
        made = _ip("netns", "add", self.switch, check=False)
        if made.returncode != 0:
            raise NamespacesUnavailable(
                f"`ip netns add` failed ({made.stderr.strip()}): the hosts test needs root and network namespaces"
            )
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def _build(self) -> None:
        _ip("-n", self.switch, "link", "add", "bridge", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "bridge", "up")
        for host in self.hosts.values():
            host.folder.mkdir(parents=True, exist_ok=True)
            _ip("netns", "add", host.namespace)
            _ip(
                "link",
                "add",
                host.port,
                "netns",
                self.switch,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.namespace,
            )
            _ip("-n", self.switch, "link", "set", host.port, "master", "bridge", "up")
            inside = ["ip", "netns", "exec", host.namespace]
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            # Only 127.0.0.1 is the host's own: the rest of 127.0.0.0/8 goes over its link.
            _ip("-n", host.namespace, "address", "del", "127.0.0.1/8", "dev", "lo", check=False)
            _ip("-n", host.namespace, "address", "add", "127.0.0.1/32", "dev", "lo")
            subprocess.run(
                [
                    *inside,
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv4.conf.all.route_localnet=1",
                    "net.ipv4.conf.eth0.route_localnet=1",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            _ip("-n", host.namespace, "address", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")

    def cut(self, host: Host) -> None:
        """Take the host's link down at the bridge: nothing it sends arrives, nothing reaches it."""
        _ip("-n", self.switch, "link", "set", host.port, "down")

    def reconnect(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port, "up")

    @contextlib.contextmanager
    def entered(self, host: Host) -> Iterator[Host]:
        """The calling thread on ``host``'s network for the block; back on its own network after it."""
        with open("/proc/thread-self/ns/net") as own:
            _setns(f"/run/netns/{host.namespace}")
            try:
                yield host
            finally:
                if _libc.setns(own.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the test's own network")

    def destroy(self) -> None:
        for host in self.hosts.values():
            if _ip("netns", "pids", host.namespace, check=False).returncode == 0:
                with contextlib.suppress(AssertionError):
                    host.kill_every_process()
            _ip("netns", "del", host.namespace, check=False)
        _ip("netns", "del", self.switch, check=False)
