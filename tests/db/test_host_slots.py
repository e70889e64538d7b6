"""The per-address semaphore on both of its stores: Redis (leases in a sorted set) and lock files (there while held)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.backing import ROOT
from support.slots import REDIS_URL

from config import Settings
from fetching import host_slots
from fetching.host_slots import FileHostSlots, HostBusy, HostSlots, RedisHostSlots
from lifecycle import housekeeping

HOST = "images.example.test"


def test_at_most_limit_slots_per_host_are_held(make_slots) -> None:
    slots = make_slots(2)
    first, second = slots.acquire(HOST, 0, 30), slots.acquire(HOST, 0, 30)
    assert first is not None and second is not None
    started = time.monotonic()
    with pytest.raises(HostBusy):
        slots.acquire(HOST, 0.3, 30)
    assert 0.3 <= time.monotonic() - started < 2
    # Another host has slots of its own; a host name's case does not make it another.
    assert slots.acquire("other.example.test", 0, 30) is not None
    with pytest.raises(HostBusy):
        slots.acquire(HOST.upper(), 0, 30)

    slots.release(first)
    assert slots.acquire(HOST, 0, 30) is not None


def test_processes_and_machines_share_the_slots_through_the_store(make_slots) -> None:
    here, there = make_slots(1), make_slots(1)
    held = here.acquire(HOST, 0, 30)
    with pytest.raises(HostBusy):
        there.acquire(HOST, 0.1, 30)
    here.release(held)
    assert there.acquire(HOST, 0, 30) is not None


def test_a_waiting_acquire_takes_a_slot_as_soon_as_one_is_released(make_slots) -> None:
    slots = make_slots(1)
    held = slots.acquire(HOST, 0, 30)
    threading.Timer(0.3, slots.release, args=[held]).start()
    started = time.monotonic()
    assert slots.acquire(HOST, 5, 30) is not None
    assert 0.25 <= time.monotonic() - started < 2


def take_in_turns(slots: HostSlots) -> dict[str, int]:
    """Six threads take a slot of one host five times each; how many held one at most, and how many turns ended."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "done": 0}

    def work() -> None:
        for _ in range(5):
            slot = slots.acquire(HOST, 10, 30)
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.02)
            with lock:
                state["now"] -= 1
                state["done"] += 1
            slots.release(slot)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return state


def test_contending_threads_never_hold_more_than_the_limit(make_slots) -> None:
    state = take_in_turns(make_slots(2))
    assert state["done"] == 30
    assert state["peak"] == 2


def test_a_redis_lease_frees_the_slot_of_a_holder_that_never_released(redis_prefix) -> None:
    slots = RedisHostSlots(REDIS_URL, 1, redis_prefix)
    assert slots.acquire(HOST, 0, lease_s=0.3) is not None  # a worker that then died
    with pytest.raises(HostBusy):
        slots.acquire(HOST, 0.1, 30)
    started = time.monotonic()
    assert slots.acquire(HOST, 3, 30) is not None
    assert time.monotonic() - started < 1
    # The set itself expires with its longest lease, so idle hosts leave no keys behind.
    assert 0 < slots.client.pttl(slots.key(HOST.lower())) <= 30_000


def test_a_lock_file_slot_frees_itself_when_its_process_dies(tmp_path: Path) -> None:
    folder = tmp_path / "host-slots"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from fetching import host_slots\n"
            f"assert host_slots.FileHostSlots(Path({str(folder)!r}), 1).acquire({HOST!r}, 0, 30)\n"
            "print('held', flush=True); time.sleep(60)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        slots = FileHostSlots(folder, 1)
        with pytest.raises(HostBusy):
            slots.acquire(HOST, 0.1, 30)
        holder.kill()  # no release, no clean-up: the kernel drops the lock
        holder.wait()
        assert slots.acquire(HOST, 1, 30) is not None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_an_unreachable_store_lets_the_fetch_go_on_without_a_slot(tmp_path: Path) -> None:
    from support.loopback import unused_port

    slots = RedisHostSlots(f"redis://127.0.0.1:{unused_port()}/0", 1)
    assert slots.acquire(HOST, 1, 30) is None
    slots.release(None)


def test_settings_choose_the_store(tmp_path: Path) -> None:
    base = {"INSTANCE_DIR": str(tmp_path)}
    assert isinstance(host_slots.from_settings(Settings.from_env(base)), FileHostSlots)
    redis_settings = Settings.from_env({**base, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"})
    assert isinstance(host_slots.from_settings(redis_settings), RedisHostSlots)
    assert host_slots.from_settings(Settings.from_env({**base, "FETCH_MAX_PER_HOST": "0"})) is None
    assert Settings.from_env(base).fetch_max_per_host == 32


# --- lock files exist only while held -----------------------------------------------


def leave_behind(folder: Path, key: str) -> None:
    """Take one of ``key``'s slots in a process that then dies: what it leaves is its lock file, held by no one."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from pathlib import Path; from fetching import host_slots\n"
            f"assert host_slots.FileHostSlots(Path({str(folder)!r}), 1).acquire({key!r}, 0, 30)\n"
            "os._exit(0)",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )


def test_lock_files_and_folders_go_once_their_slots_are_released(tmp_path: Path) -> None:
    folder = tmp_path / "host-slots"
    slots = FileHostSlots(folder, 2)
    held = [slots.acquire(key, 0, 30) for key in ("127.0.0.2", "127.0.0.2", "::1", HOST)]
    assert len(list(folder.iterdir())) == 3
    for slot in held:
        slots.release(slot)
    assert list(folder.iterdir()) == []


def test_the_sweep_removes_what_holders_that_died_left_and_nothing_held(tmp_path: Path) -> None:
    folder = tmp_path / "host-slots"
    slots = FileHostSlots(folder, 1)
    leave_behind(folder, "127.0.0.2")
    held = slots.acquire("127.0.0.3", 0, 30)
    assert len(list(folder.iterdir())) == 2

    assert slots.sweep() == 1
    assert len(list(folder.iterdir())) == 1
    with pytest.raises(HostBusy):
        FileHostSlots(folder, 1).acquire("127.0.0.3", 0, 0.1)
    slots.release(held)
    assert list(folder.iterdir()) == []
    assert slots.sweep() == 0


def test_sweeping_while_slots_are_taken_never_lets_more_than_the_limit_in(tmp_path: Path) -> None:
    folder = tmp_path / "host-slots"
    sweeper = FileHostSlots(folder, 2)
    outcome: dict[str, int] = {}
    contention = threading.Thread(target=lambda: outcome.update(take_in_turns(FileHostSlots(folder, 2))))
    contention.start()
    while contention.is_alive():
        sweeper.sweep()
    assert outcome["done"] == 30
    assert outcome["peak"] == 2
    assert list(folder.iterdir()) == []


def test_a_folder_swept_between_mkdir_finding_it_and_checking_it_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race CI met once: mkdir(exist_ok=True) saw the folder, a sweep removed it, and the
    # check that follows raised FileExistsError. The taker must make it again, not go without a slot.
    slots = FileHostSlots(tmp_path / "host-slots", 1)
    real_mkdir = Path.mkdir
    swept: list[Path] = []

    def mkdir_losing_the_race(self: Path, *args: object, **kwargs: object) -> None:
        if not swept:
            swept.append(self)
            raise FileExistsError(17, "File exists", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_losing_the_race)
    held = slots.acquire("127.0.0.2", 0, 1)
    assert swept
    with pytest.raises(HostBusy):
        FileHostSlots(tmp_path / "host-slots", 1).acquire("127.0.0.2", 0, 0.1)
    slots.release(held)


def test_the_sweeper_sweeps_the_lock_files(quiet_service, base_url) -> None:
    slots = quiet_service.app.extensions["host_slots"]
    assert isinstance(slots, FileHostSlots)
    leave_behind(slots.folder, "127.0.0.2")

    report = housekeeping.sweep(quiet_service.app.config["SETTINGS"])
    assert report is not None and report["host_slots"] == 1
    assert list(slots.folder.iterdir()) == []
