"""At most N image requests at once per source address, across every worker process and machine.

The slots are keyed by ``address_key``: the canonical form of the address a connection is pinned to,
so every spelling of an address, and every name that resolves to it, shares one set of slots (the
caller, ``http_session.address_slots``, takes one for each request, redirect hops included).

With a Redis broker the slots of an address are a sorted set in that Redis, each member a holder whose
score is when its lease runs out, so the slot of a worker that died frees itself once the fetch's
deadline has passed; a Lua script prunes, counts and adds in one step, and an idle set is gone with
its last member. Without Redis (the single-machine setup) they are up to N lock files per address in
the instance folder, held with ``flock``, which the kernel lets go of when the holder's process ends,
however it ends. A lock file exists only while it is held: its holder removes it, and the address's
folder once it is empty, on release; ``sweep`` removes what holders that died left behind.

Waiting for a slot polls with a short sleep, for as long as the caller allows.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import logging
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import Settings
from network_policy.addresses import IPAddress

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05

# KEYS[1]: the host's set; ARGV: limit, lease in ms, holder token. The clock is Redis's own, so the
# workers' clocks need not agree.
_ACQUIRE_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease_ms = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + lease_ms, ARGV[3])
if redis.call('PTTL', KEYS[1]) < lease_ms then
  redis.call('PEXPIRE', KEYS[1], lease_ms)
end
return 1
"""


def address_key(address: IPAddress) -> str:
    """The slots' key of ``address``: an IPv4-mapped IPv6 address as its IPv4, without any zone."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)  # a dual-stack socket connects to exactly that IPv4 host
        address = ipaddress.IPv6Address(int(address))
    return str(address)


class HostBusy(Exception):
    """Every slot of the address stayed taken for as long as the caller would wait."""

    def __init__(self, key: str, limit: int) -> None:
        super().__init__(f"all {limit} slots of {key} are taken")
        self.key = key
        self.limit = limit


@dataclass(frozen=True)
class Slot:
    key: str
    token: Any


class HostSlots(ABC):
    """A counting semaphore per key (an ``address_key``); subclasses say where the slots live."""

    #: What the slots' store raises when it is unreachable; fetching then goes on without a slot.
    store_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a host needs at least one slot")
        self.limit = limit

    def acquire(self, key: str, wait_s: float, lease_s: float) -> Slot | None:
        """Take one of the key's slots, waiting up to ``wait_s``; ``lease_s`` bounds how long it is held.

        Returns None, logged, when the slots' store fails: the limit protects the source hosts,
        and is not worth failing the fetch over.

        Raises:
            HostBusy: no slot freed within ``wait_s``.
        """
        key = key.lower()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                token = self._try_acquire(key, lease_s)
            except self.store_errors:
                log.warning("download slots unavailable; fetching from %s without one", key, exc_info=True)
                return None
            if token is not None:
                return Slot(key, token)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HostBusy(key, self.limit)
            # Jitter keeps waiting workers from polling in step.
            time.sleep(min(remaining, POLL_INTERVAL_S * random.uniform(0.5, 1.5)))

    def release(self, slot: Slot | None) -> None:
        """Give a slot back; a failure is logged, and the lease or the process's end frees it instead."""
        if slot is None:
            return
        try:
            self._release(slot)
        except self.store_errors:
            log.warning("could not release a slot of %s; it frees itself", slot.key, exc_info=True)

    def sweep(self) -> int:
        """Remove what idle keys left in the store, and say how many keys that was."""
        return 0

    @abstractmethod
    def _try_acquire(self, key: str, lease_s: float) -> Any | None:
        """Take one of the key's slots for ``lease_s``: the slot's token, or None if all are taken."""

    @abstractmethod
    def _release(self, slot: Slot) -> None:
        """Give the slot back."""


class RedisHostSlots(HostSlots):
    """Slots shared by every machine using one Redis: a sorted set of leases per key, gone when idle."""

    def __init__(self, url: str, limit: int, key_prefix: str = "") -> None:
        import redis  # only needed with a Redis broker

        super().__init__(limit)
        self.store_errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.key_prefix = key_prefix
        self._acquire_script = self.client.register_script(_ACQUIRE_SCRIPT)

    def key(self, name: str) -> str:
        """The Redis key of the slots of ``name``, an ``address_key``."""
        return f"{self.key_prefix}host-slots:{name}"

    def _try_acquire(self, key: str, lease_s: float) -> Any | None:
        token = uuid.uuid4().hex
        lease_ms = max(1, int(lease_s * 1000))
        taken = self._acquire_script(keys=[self.key(key)], args=[self.limit, lease_ms, token])
        return token if taken == 1 else None

    def _release(self, slot: Slot) -> None:
        # Redis deletes a sorted set with its last member, so an idle key leaves nothing behind.
        self.client.zrem(self.key(slot.key), slot.token)


class FileHostSlots(HostSlots):
    """Slots shared by the processes of one machine: up to N lock files per key, held with ``flock``."""

    def __init__(self, folder: Path, limit: int) -> None:
        super().__init__(limit)
        self.folder = folder

    def _try_acquire(self, key: str, lease_s: float) -> Any | None:
        # A hash names the folder: a key may hold characters a file name may not.
        folder = self.folder / hashlib.sha256(key.encode()).hexdigest()[:32]
        first = random.randrange(self.limit)
        for offset in range(self.limit):
            path = folder / f"slot-{(first + offset) % self.limit}"
            fd = _lock(path, create=True)
            if fd is not None:
                return (fd, path)
        return None

    def _release(self, slot: Slot) -> None:
        fd, path = slot.token
        _remove_locked(fd, path)

    def sweep(self) -> int:
        """Remove the lock files no process holds, left by holders that died, and the folders then empty."""
        removed = 0
        try:
            folders = list(self.folder.iterdir())
        except OSError:  # no slot was ever taken; any other trouble shows where slots are taken
            return 0
        for folder in folders:
            with suppress(OSError):  # a slot is held or being taken, or the folder went meanwhile
                for path in list(folder.iterdir()):
                    fd = _lock(path, create=False)
                    if fd is not None:
                        _remove_locked(fd, path)
                folder.rmdir()
            if not folder.exists():
                removed += 1
        return removed


def _lock(path: Path, create: bool) -> int | None:
    """A descriptor of the lock file ``path``, locked; None when another process holds it (or it is gone)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            if not create:
                return None
            # The folder was removed as idle, or never made: make it (again). A sweep may remove it
            # between mkdir finding it and checking it is a folder; then mkdir raises and we try again.
            with suppress(FileExistsError):
                path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_at(fd, path):
                return fd
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # Its holder removed the file between our open and our lock: that file is no slot any more.
        os.close(fd)
        if not create:
            return None


def _is_at(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _remove_locked(fd: int, path: Path) -> None:
    """Remove the lock file ``fd`` holds, then let it go, and remove its folder if that left it empty."""
    try:
        # Removed while still locked, so whoever opened it meanwhile sees it is gone once they lock it.
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing the only descriptor of the file releases its lock
    with suppress(OSError):  # another slot of the key is held, or being taken
        path.parent.rmdir()


def from_settings(settings: Settings) -> HostSlots | None:
    """The slots ``FETCH_MAX_PER_HOST`` asks for, in the broker's Redis if there is one; None if 0."""
    if settings.fetch_max_per_host == 0:
        return None
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisHostSlots(settings.broker_url, settings.fetch_max_per_host, settings.broker_key_prefix)
    # Any other broker: the bound holds per machine only.
    return FileHostSlots(settings.instance_dir / "host-slots", settings.fetch_max_per_host)
