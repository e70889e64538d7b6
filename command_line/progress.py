"""Following a request until it is final: its progress stream, else polling; a bar or plain lines."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import requests
from tqdm import tqdm

from command_line.api_client import Client, CliError
from command_line.exit_codes import FINAL_STATUSES

POLL_INTERVAL_S = 1.0
# The service sends a comment every 15 s on an idle stream: this long without a byte, it is dead.
STREAM_SILENCE_S = 60.0
# Breaks of the progress stream in a row, each followed by a reconnect, before the CLI polls instead.
STREAM_MAX_BREAKS = 3


class WaitExpired(CliError):
    """The request was not final by the end of ``--timeout``."""


def progress_line(status: dict[str, Any]) -> str:
    """The status and its counts on one line: ``PROCESSING: 40.0% (2 completed, ...)``."""
    p = status["progress"]
    return (
        f"{status['status']}: {p['percent']:.1f}% ({p['completed_images']} completed, "
        f"{p['failed_images']} failed, {p['pending_images']} pending of {p['total_images']})"
    )


def images_done(status: dict[str, Any]) -> int:
    """Images that are done with, whichever way: completed, failed or cancelled."""
    p = status["progress"]
    return p["completed_images"] + p["failed_images"] + p.get("cancelled_images", 0)


class ProgressLines:
    """Progress as plain lines on stderr, one whenever it differs from the last: for logs and pipes."""

    def __init__(self) -> None:
        self.last_line = ""
        self.state = "unknown"

    def show(self, status: dict[str, Any]) -> None:
        self.state, line = status["status"], progress_line(status)
        if line != self.last_line:
            print(line, file=sys.stderr, flush=True)
            self.last_line = line

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class ProgressBar(ProgressLines):
    """Progress as a tqdm bar on stderr, a terminal: images done of the total, failures and status after it."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: tqdm | None = None  # drawn once the total is known

    def show(self, status: dict[str, Any]) -> None:
        self.state = status["status"]
        total = status["progress"]["total_images"]
        if self.bar is None:
            # A terminal that reports no size (some pseudo-terminals do) gets 80x24: tqdm draws nothing in 0 rows.
            sized = _terminal_columns() > 0
            self.bar = tqdm(
                total=total,
                file=sys.stderr,
                unit="image",
                dynamic_ncols=sized,
                ncols=None if sized else 80,
                nrows=None if sized else 24,
                leave=True,
            )
        elif self.bar.total != total:  # a big upload's images are counted as they are imported
            self.bar.total = total
        # Assigned, not added: a retry puts failed images back in line, and the count goes down.
        self.bar.n = images_done(status)
        self.bar.set_postfix(failed=status["progress"]["failed_images"], status=self.state, refresh=False)
        self.bar.refresh()

    def note(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


def progress_display() -> ProgressLines:
    """A bar when stderr is a terminal, else plain lines."""
    return ProgressBar() if sys.stderr.isatty() else ProgressLines()


class StreamUnavailable(Exception):
    """The progress stream cannot be followed; polling takes over."""


def wait_final(client: Client, request_id: str, timeout_s: float, printer: ProgressLines) -> dict[str, Any]:
    """Follow the request until it is final, showing its progress with ``printer`` (a bar, or a line per change).

    The progress stream first; if it cannot be opened, or breaks again and again, the status API is
    polled for the rest of the wait.
    """
    deadline = time.monotonic() + timeout_s
    try:
        return follow_events(client, request_id, deadline, timeout_s, printer)
    except StreamUnavailable as error:
        printer.note(f"progress stream unavailable ({error}): polling instead")
    return poll_final(client, request_id, deadline, timeout_s, printer)


def follow_events(
    client: Client, request_id: str, deadline: float, timeout_s: float, printer: ProgressLines
) -> dict[str, Any]:
    """Read the progress stream to its ``final`` event, reconnecting with ``Last-Event-ID`` after a break.

    Raises:
        StreamUnavailable: the stream could not be opened, or broke ``STREAM_MAX_BREAKS`` times in a row.
        WaitExpired: the deadline passed.
    """
    last_event_id, breaks, reconnect_s = None, 0, 3.0
    while True:
        try:
            # Never read past the deadline: a quiet stream would hold the CLI a heartbeat too long.
            read_timeout_s = max(1.0, min(STREAM_SILENCE_S, deadline - time.monotonic() + 0.5))
            for event in client.events(request_id, last_event_id, read_timeout_s):
                if event.retry_ms is not None:
                    reconnect_s = event.retry_ms / 1000
                if event.name in ("progress", "final"):
                    breaks = 0
                    last_event_id = event.event_id
                    status = json.loads(event.data)
                    printer.show(status)
                    if event.name == "final":
                        return status
                if time.monotonic() >= deadline:
                    raise WaitExpired(f"request {request_id} is still {printer.state} after {timeout_s:g} s")
            problem = "the stream ended before the request was final"
        except WaitExpired:
            raise
        except CliError as error:
            raise StreamUnavailable(error.message) from error
        except (requests.RequestException, ValueError, KeyError) as error:
            problem = f"the stream broke: {error}"
        breaks += 1
        if breaks >= STREAM_MAX_BREAKS:
            raise StreamUnavailable(problem)
        if time.monotonic() + reconnect_s >= deadline:
            raise WaitExpired(f"request {request_id} is still {printer.state} after {timeout_s:g} s")
        time.sleep(reconnect_s)


def poll_final(
    client: Client, request_id: str, deadline: float, timeout_s: float, printer: ProgressLines
) -> dict[str, Any]:
    """Poll until the request is final.

    Transient failures (no answer, 429, 502-504) are retried until the deadline: the request is
    already accepted, so a restarting service or a rate limit should not fail a long wait.
    """
    while True:
        delay = POLL_INTERVAL_S
        try:
            status = client.status(request_id)
        except CliError as error:
            if not error.transient:
                raise
            printer.note(f"retrying: {error.message}")
            delay = max(delay, error.retry_after_s or 0.0)
        else:
            printer.show(status)
            if status["status"] in FINAL_STATUSES:
                return status
        if time.monotonic() >= deadline:
            raise WaitExpired(f"request {request_id} is still {printer.state} after {timeout_s:g} s")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
