"""Helper threads of a worker process leave the process's signals to the main thread, so that a soft time limit
(SIGUSR1, sent to the process) always interrupts the main thread, even blocked in a system call."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

from fetching import deadline


def blocked_in_this_thread() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_fetch_thread_and_a_deadline_timer_block_the_process_signals() -> None:
    with ThreadPoolExecutor(1, initializer=deadline.leave_signals_to_the_main_thread) as pool:
        assert pool.submit(blocked_in_this_thread).result() >= deadline.MAIN_THREAD_SIGNALS

    seen: list[set[int]] = []
    watchdog = deadline.Watchdog(deadline.TimeLimit(0.01, "TEST"))
    watchdog._timer.function = lambda: seen.append(blocked_in_this_thread())
    watchdog.start()
    watchdog._timer.join(5)
    assert seen and seen[0] >= deadline.MAIN_THREAD_SIGNALS
    assert signal.SIGUSR1 not in blocked_in_this_thread()  # the caller's own mask is as it was
