"""What each subcommand does, and the exit code it ends with."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from command_line.api_client import FAILURE_PAGE_SIZE, FAILURE_PAGES, Client, CliError, copy_body
from command_line.exit_codes import EXIT_CODES, FINAL_STATUSES
from command_line.progress import ProgressLines, progress_display, progress_line, wait_final
from command_line.saving import atomic_write
from output_plan.fields import PLAN_FIELDS


def save_output(client: Client, request_id: str, path: Path, printer: ProgressLines) -> None:
    """Write the request's output CSV to ``path``."""
    path.write_bytes(client.output_csv(request_id))
    printer.note(f"output CSV saved to {path}")


def failure_summary(client: Client, request_id: str, status: dict[str, Any]) -> list[str]:
    """When images failed: how many of each error code, where the report and the rows to fix are; else nothing."""
    failed = status["progress"]["failed_images"]
    if not failed:
        return []
    try:
        counts, every_one = client.failure_counts(request_id)
    except CliError as error:
        counted = f"{failed} failed (not counted by error code: {error.message})"
    else:
        codes = ", ".join(f"{code} \N{MULTIPLICATION SIGN}{count}" for code, count in counts.most_common())
        read = "" if every_one else f" (in the first {FAILURE_PAGES * FAILURE_PAGE_SIZE:,} products)"
        report = client.url(f"/api/requests/{quote(request_id, safe='')}/report.csv")
        counted = f"{failed} failed: {codes}{read} — report: {report} (cli.py report {request_id})"
    return [counted, f"the rows to fix and upload again: cli.py failed-rows {request_id} --output failed-rows.csv"]


def plan_summary(status: dict[str, Any]) -> list[str]:
    """A planned request's compliance summary (with a profile) and near-duplicate count (when flagged), as lines:
    how many images passed as uploaded, were fixed or still fail, and by rule; nothing for a plain request."""
    lines = []
    summary = status.get("compliance")
    if summary:
        lines.append(
            f"compliance with {summary['profile']} ({summary['checked']} checked): "
            f"{summary['passing_as_uploaded']} passing as uploaded, {summary['fixed']} fixed, "
            f"{summary['still_failing']} still failing"
        )
        for code, counts in (summary.get("by_rule") or {}).items():
            lines.append(f"  {code}: {counts['source']} failed as uploaded, {counts['output']} still failing")
    duplicates = status.get("duplicate_images")
    if duplicates:
        lines.append(f"near-duplicates of earlier images: {duplicates} (the report's Duplicate Of names them)")
    return lines


def final_plan_summary(client: Client, request_id: str, status: dict[str, Any]) -> list[str]:
    """``plan_summary`` of a final request; ``status`` as the wait ended (a progress event has no plan fields,
    so the status API is asked)."""
    if "profile" not in status:
        try:
            status = client.status(request_id)
        except CliError as error:
            return [f"the status (and any compliance summary) could not be read: {error.message}"]
    return plan_summary(status)


def finish(client: Client, request_id: str, args: argparse.Namespace) -> int:
    """With ``--wait``: follow the request, sum up its compliance, save ``--output``, sum up the failures, and turn
    the final status into the exit code."""
    if not args.wait:
        return 0
    # The summary goes through the display: on a terminal above the bar, which stays its last line.
    printer = progress_display()
    try:
        status = wait_final(client, request_id, args.timeout, printer)
        for line in final_plan_summary(client, request_id, status):
            printer.note(line)
        if args.output:
            save_output(client, request_id, args.output, printer)
        for line in failure_summary(client, request_id, status):
            printer.note(line)
    finally:
        printer.close()
    if status["status"] == "CANCELLED":
        raise CliError(f"request {request_id} was CANCELLED")
    return EXIT_CODES[status["status"]]


def print_answer(answer: dict[str, Any], args: argparse.Namespace, line: str) -> None:
    """Print the JSON answer with ``--json``, else ``line``."""
    print(json.dumps(answer, indent=2) if args.json else line, flush=True)


def run_upload(client: Client, args: argparse.Namespace) -> int:
    """Upload the CSV (or name the ``--feed-url`` the service fetches) with its options, print the request id,
    then ``finish``."""
    if args.csv is not None and not args.csv.is_file():
        raise CliError(f"no such file: {args.csv}")
    fields = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in (
            ("feed_url", args.feed_url),
            ("input_format", args.input_format),
            ("output_mode", args.output_mode),
            ("output_rendition", args.output_rendition),
            ("webhook_url", args.webhook_url),
            ("quality", args.quality),
            ("target_score", args.target_score),
            ("format", args.format),
            ("never_bigger", args.never_bigger),
            ("max_dimension", args.max_dimension),
            *((name, getattr(args, name)) for name in PLAN_FIELDS),
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
    if not args.json:
        for line in plan_summary(status):
            print(line, flush=True)
    printer = ProgressLines()
    if args.output:
        save_output(client, args.request_id, args.output, printer)
    if status["status"] in FINAL_STATUSES:
        for line in failure_summary(client, args.request_id, status):
            printer.note(line)
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


def copy_csv(client: Client, path: str, output: Path | None, what: str) -> int:
    """Copy the CSV at ``path`` on the service to stdout, or to ``output``."""
    if output is None:
        client.copy(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    with output.open("wb") as sink:
        client.copy(path, sink)
    print(f"{what} saved to {output}", file=sys.stderr)
    return 0


def run_report(client: Client, args: argparse.Namespace) -> int:
    """Copy the per-image report CSV to stdout, or to ``--output``."""
    return copy_csv(client, f"/api/requests/{quote(args.request_id, safe='')}/report.csv", args.output, "report")


def run_failed_rows(client: Client, args: argparse.Namespace) -> int:
    """Copy the rows of the products with a failed image, as uploaded, to stdout or to ``--output``."""
    path = f"/api/requests/{quote(args.request_id, safe='')}/failed-rows.csv"
    return copy_csv(client, path, args.output, "failed rows")


def run_sample(client: Client, args: argparse.Namespace) -> int:
    """Copy the sample CSV the service hands out, naming its own address, to stdout or to ``--output``."""
    return copy_csv(client, "/samples/products.csv", args.output, "sample CSV")


def run_download_images(client: Client, args: argparse.Namespace) -> int:
    """Stream the request's image pack (a ZIP) to ``--output``, by default ``<request id>-images.zip``: into a
    temporary file beside it, renamed once complete, so a refused or broken download leaves no file."""
    target = args.output or Path(f"{args.request_id}-images.zip")
    if target.is_dir():
        raise CliError(f"{target} is a folder: give --output the name of the ZIP file to write")
    params = {
        name: value
        for name, value in (("naming", args.naming), ("identifier", args.identifier), ("rendition", args.rendition))
        if value
    }
    path = f"/api/requests/{quote(args.request_id, safe='')}/images.zip"
    # The service refuses a pack before its first byte: asked first, the file is made only for an archive.
    with client.open_stream(path, params) as response, atomic_write(target) as sink:
        written = copy_body(response, sink)
    print(f"image pack saved to {target} ({written:,} bytes)", file=sys.stderr)
    return 0


COMMANDS = {
    "upload": run_upload,
    "status": run_status,
    "cancel": run_cancel,
    "retry": run_retry,
    "report": run_report,
    "failed-rows": run_failed_rows,
    "sample": run_sample,
    "download-images": run_download_images,
}
