"""What each subcommand does, and the exit code it ends with."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from command_line.api_client import Client, CliError
from command_line.exit_codes import EXIT_CODES, FINAL_STATUSES
from command_line.progress import progress_line, wait_final


def save_output(client: Client, request_id: str, path: Path) -> None:
    """Write the request's output CSV to ``path``."""
    path.write_bytes(client.output_csv(request_id))
    print(f"output CSV saved to {path}", file=sys.stderr)


def finish(client: Client, request_id: str, args: argparse.Namespace) -> int:
    """With ``--wait``: follow the request, save ``--output``, and turn the final status into the exit code."""
    if not args.wait:
        return 0
    status = wait_final(client, request_id, args.timeout)
    if args.output:
        save_output(client, request_id, args.output)
    if status["status"] == "CANCELLED":
        raise CliError(f"request {request_id} was CANCELLED")
    return EXIT_CODES[status["status"]]


def print_answer(answer: dict[str, Any], args: argparse.Namespace, line: str) -> None:
    """Print the JSON answer with ``--json``, else ``line``."""
    print(json.dumps(answer, indent=2) if args.json else line, flush=True)


def run_upload(client: Client, args: argparse.Namespace) -> int:
    """Upload the CSV with its options, print the request id, then ``finish``."""
    if not args.csv.is_file():
        raise CliError(f"no such file: {args.csv}")
    fields = {
        name: str(value)
        for name, value in (
            ("webhook_url", args.webhook_url),
            ("quality", args.quality),
            ("target_score", args.target_score),
            ("format", args.format),
            ("never_bigger", None if args.never_bigger is None else str(args.never_bigger).lower()),
            ("max_dimension", args.max_dimension),
        )
        if value not in (None, "")
    }
    answer = client.upload(args.csv, fields, args.idempotency_key)
    print_answer(answer, args, answer["request_id"])
    return finish(client, answer["request_id"], args)


def run_status(client: Client, args: argparse.Namespace) -> int:
    """Print the status; with ``--wait``, follow it until it is final; save ``--output``."""
    status = client.status(args.request_id, per_page=None if args.json else 1)
    print_answer(status, args, progress_line(status))
    if args.wait and status["status"] not in FINAL_STATUSES:
        return finish(client, args.request_id, args)
    if args.output:
        save_output(client, args.request_id, args.output)
    return EXIT_CODES.get(status["status"], 0)


def run_cancel(client: Client, args: argparse.Namespace) -> int:
    """Cancel the request's unfinished images and print the status."""
    answer = client.cancel(args.request_id)
    print_answer(answer, args, progress_line(answer))
    return EXIT_CODES[answer["status"]]


def run_retry(client: Client, args: argparse.Namespace) -> int:
    """Put the failed images (of ``--error-code``, if given) back in line, then ``finish``."""
    answer = client.retry(args.request_id, args.error_codes)
    print_answer(answer, args, f"{answer['status']}: failed images put back in line: {answer['retried_images']}")
    return finish(client, args.request_id, args)


def run_report(client: Client, args: argparse.Namespace) -> int:
    """Copy the per-image report CSV to stdout, or to ``--output``."""
    if args.output is None:
        client.write_report(args.request_id, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    with args.output.open("wb") as sink:
        client.write_report(args.request_id, sink)
    print(f"report saved to {args.output}", file=sys.stderr)
    return 0


COMMANDS = {"upload": run_upload, "status": run_status, "cancel": run_cancel, "retry": run_retry, "report": run_report}
