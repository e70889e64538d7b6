"""Command-line client of the image service, for scripts and pipelines.

    python cli.py upload (products.csv | --feed-url URL)
                                      [--input-format auto|contract|shopify|woocommerce|google_merchant]
                                      [--output-mode replace|append] [--output-rendition NAME]
                                      [--webhook-url URL] [--quality N|auto] [--target-score S]
                                      [--format jpeg|webp|avif] [--no-never-bigger] [--max-dimension N]
                                      [--profile NAME] [--renditions SPEC] [--fit contain|pad|cover]
                                      [--width N] [--height N] [--aspect W:H] [--background COLOUR]
                                      [--trim [TOLERANCE]] [--margin SHARE] [--min-dimension N]
                                      [--upscale|--no-upscale] [--max-bytes N] [--gravity centre|attention]
                                      [--strip all|rights] [--duplicates|--no-duplicates]
                                      [--idempotency-key KEY] [--wait] [--output out.csv] [--timeout S] [--json]
    python cli.py status REQUEST_ID [--wait] [--output out.csv] [--timeout S] [--json]
    python cli.py cancel REQUEST_ID [--json]
    python cli.py retry REQUEST_ID [--error-code CODE [CODE ...]] [--wait] [--output out.csv] [--timeout S] [--json]
    python cli.py report REQUEST_ID [--output report.csv]
    python cli.py failed-rows REQUEST_ID [--output failed-rows.csv]
    python cli.py sample [--output products.csv]
    python cli.py download-images REQUEST_ID [--naming plain|amazon] [--identifier COLUMN] [--rendition NAME]
                                             [--output FILE]

(``python -m cli ...`` from the repository's root works as well.) Every command takes ``--base-url``
(default: ``$IMAGE_SERVICE_URL``, else http://127.0.0.1:5000) and ``--api-key`` (default:
``$IMAGE_SERVICE_API_KEY``), sent as ``Authorization: Bearer <key>``.

``upload`` prints the request id on stdout (the whole JSON answer with ``--json``); ``status``,
``cancel`` and ``retry`` print the status (the JSON answer with ``--json``); ``report`` writes the
per-image report CSV to stdout, or to ``--output``; ``failed-rows`` the uploaded rows of the products
with a failed image, to fix and upload again; ``sample`` the sample CSV the service hands out in
single-machine mode, whose URLs name the service's own address; ``download-images`` a final request's
outputs as one ZIP, to ``--output`` (default ``<request id>-images.zip``), written whole or not at all:
a refused or broken download leaves no file. With ``--wait``, ``upload``, ``status`` and ``retry``
follow the request's progress stream (``/api/status/<id>/events``; polling the status API when the
stream cannot be had) until the request is final: a progress bar on stderr when stderr is a terminal,
else one plain line per change. ``--output`` (which implies ``--wait``) saves the output CSV. A final
request with failed images ends with their count by error code and where its report and failed rows
are, on stderr.

``upload`` reads the service's CSV (S. No., Product Name, Input Image Urls) or a platform's export as exported
(Shopify, WooCommerce, Google Merchant; ``--input-format auto``, the default, tells them by their header), and
``--feed-url`` has the service fetch the file itself instead. A platform's export comes back as uploaded with
each image URL replaced by its output's (``--output-mode replace``, its default); ``append`` adds an
``Output Image Urls`` column instead (the default for the service's CSV).

``--profile`` names a marketplace profile (its canvas, size bounds and byte cap preset the first rendition,
which is then checked against the marketplace's rules); ``--renditions`` asks several outputs of each image,
e.g. ``main:2048,zoom:1600,thumb:400x400:pad`` (the output CSV gets a column ``Output Image Urls (<name>)``
for each beyond the first); the canvas options apply to every rendition and override the profile's. Only
the options given are sent; the service checks them and refuses a bad one (``invalid_option``, naming the
field). The status of a request with a profile prints its compliance summary after the status line:
images passing as uploaded, fixed and still failing, then each rule failed; ``--wait`` ends with it too,
on stderr.

Exit codes, by the request's status once the command is done:
    0  COMPLETED, or not final and not waited for (an upload, a retry, a status without --wait); a CSV or ZIP written
    2  COMPLETED_WITH_ERRORS
    3  FAILED
    1  CANCELLED (``cancel`` included), or an error: the service's error code and message go to stderr
   64  a usage error (argparse's own 2 would read as COMPLETED_WITH_ERRORS)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from command_line.api_client import DEFAULT_BASE_URL, Client, CliError, describe_detail
from command_line.commands import COMMANDS
from command_line.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE
from command_line.upload_options import add_catalog_options, add_plan_options, positive_float, quality_value


class ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 means COMPLETED_WITH_ERRORS here, so usage errors exit 64."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, its connection options defaulting to the environment."""
    connection = ArgumentParser(add_help=False)
    connection.add_argument(
        "--base-url",
        default=os.environ.get("IMAGE_SERVICE_URL") or DEFAULT_BASE_URL,
        help=f"the service's address (default: $IMAGE_SERVICE_URL, else {DEFAULT_BASE_URL})",
    )
    connection.add_argument(
        "--api-key",
        default=os.environ.get("IMAGE_SERVICE_API_KEY") or None,
        help="sent as 'Authorization: Bearer <key>' (default: $IMAGE_SERVICE_API_KEY)",
    )
    as_json = ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the service's JSON answer")
    waiting = ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="follow the request until it is final")
    waiting.add_argument("--output", type=Path, help="save the output CSV here (implies --wait)")
    waiting.add_argument("--timeout", type=positive_float, default=600.0, help="seconds --wait waits (default 600)")

    parser = ArgumentParser(prog="cli.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser(
        "upload", parents=[connection, waiting, as_json], help="upload a CSV of products, or name one to fetch"
    )
    add_catalog_options(upload)
    upload.add_argument("--webhook-url", help="an http(s) URL to notify when the request is final")
    upload.add_argument(
        "--quality", type=quality_value, help="output quality, 1-95 or 'auto' (the service's default: 50)"
    )
    upload.add_argument("--target-score", type=float, help="with --quality auto: the SSIM each output must reach")
    upload.add_argument("--format", choices=("jpeg", "webp", "avif"), help="output format (default: jpeg)")
    upload.add_argument(
        "--never-bigger",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a source JPEG the encode would not shrink (the service's default: on)",
    )
    upload.add_argument("--max-dimension", type=int, help="shrink so the longest side is at most this")
    add_plan_options(upload)
    upload.add_argument(
        "--idempotency-key",
        help="sent as Idempotency-Key: the same upload sent again with the same key answers the first request",
    )
    status = commands.add_parser("status", parents=[connection, waiting, as_json], help="show a request's status")
    status.add_argument("request_id")
    cancel = commands.add_parser("cancel", parents=[connection, as_json], help="cancel a request's unfinished images")
    cancel.add_argument("request_id")
    retry = commands.add_parser(
        "retry", parents=[connection, waiting, as_json], help="re-run a request's failed images"
    )
    retry.add_argument("request_id")
    retry.add_argument(
        "--error-code",
        dest="error_codes",
        action="extend",
        nargs="+",
        metavar="CODE",
        help="only the failed images with these error codes, such as http_404 (default: every failed image)",
    )
    report = commands.add_parser("report", parents=[connection], help="the per-image report CSV")
    report.add_argument("request_id")
    report.add_argument("--output", type=Path, help="write the report here (default: stdout)")
    failed_rows = commands.add_parser(
        "failed-rows",
        parents=[connection],
        help="the rows of the products with a failed image, to fix and upload again",
    )
    failed_rows.add_argument("request_id")
    failed_rows.add_argument("--output", type=Path, help="write the rows here (default: stdout)")
    sample = commands.add_parser(
        "sample", parents=[connection], help="the sample CSV the service hands out, naming its own address"
    )
    sample.add_argument("--output", type=Path, help="write the CSV here (default: stdout)")
    download = commands.add_parser(
        "download-images", parents=[connection], help="download a final request's output images as one ZIP"
    )
    download.add_argument("request_id")
    download.add_argument(
        "--naming",
        choices=("plain", "amazon"),
        help="plain names each file <product key>_<position>.<ext> (the default); amazon names them "
        "<identifier>.MAIN.jpg, .PT01.jpg ... .PT08.jpg, as Amazon's bulk image upload wants",
    )
    download.add_argument(
        "--identifier",
        metavar="COLUMN",
        help="the column of the uploaded file whose value names each product's files, such as SKU "
        "(default: the product key; S. No. for the service's CSV)",
    )
    download.add_argument(
        "--rendition",
        metavar="NAME",
        help="the rendition to pack (default: the one the output file holds)",
    )
    download.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write the ZIP here (default: <request id>-images.zip in the current folder)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit code; errors go to stderr."""
    args = build_parser().parse_args(argv)
    if "wait" in args:
        args.wait = args.wait or args.output is not None
    client = Client(args.base_url, args.api_key)
    try:
        return COMMANDS[args.command](client, args)
    except CliError as error:
        print(f"error: {error.message}", file=sys.stderr)
        for detail in error.details:
            print(f"  {describe_detail(detail)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
