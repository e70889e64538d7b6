"""The options of ``cli.py upload``: the file or feed and its format, the encoding, and the output plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from catalog_formats.formats import INPUT_FORMATS
from marketplaces.profiles import PROFILES


def positive_float(raw: str) -> float:
    """``raw`` as a number above 0, for ``--timeout``."""
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {raw!r}")
    return value


def quality_value(raw: str) -> str:
    """A number or ``auto``; the service checks the range and answers with its own error."""
    if raw.strip().lower() == "auto" or raw.strip().isdigit():
        return raw.strip().lower()
    raise argparse.ArgumentTypeError(f"must be a number (1-95) or auto, got {raw!r}")


def trim_value(raw: str) -> str:
    """true, false, or a tolerance 0-255; the service checks the range and answers with its own error."""
    text = raw.strip().lower()
    if text in ("true", "false", "yes", "no", "on", "off") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(
        f"must be true, false or a tolerance 0-255, got {raw!r} (a bare --trim goes after the CSV)"
    )


def add_plan_options(upload: argparse.ArgumentParser) -> None:
    """The output plan's options of ``upload``: a profile, renditions, the canvas, metadata and duplicates."""
    upload.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        help="a marketplace profile: presets the first rendition and checks it against the marketplace's rules",
    )
    upload.add_argument(
        "--renditions",
        metavar="SPEC",
        help="the outputs of each image, NAME:N (longest side) or NAME:WxH[:FIT], comma-separated, such as "
        "main:2048,zoom:1600,thumb:400x400:pad; or a JSON list of objects",
    )
    canvas = upload.add_argument_group("canvas options (every rendition; they override the profile's)")
    canvas.add_argument(
        "--fit",
        choices=("contain", "pad", "cover"),
        help="contain (the service's default), pad or cover; pad and cover need --width and --height, or --aspect",
    )
    canvas.add_argument("--width", type=int, help="the canvas's width, 1-10000")
    canvas.add_argument("--height", type=int, help="the canvas's height, 1-10000")
    canvas.add_argument("--aspect", metavar="W:H", help="the canvas's width to height, such as 1:1 or 1:1.44")
    canvas.add_argument("--background", metavar="COLOUR", help="#rrggbb, #rgb, white or black (default white)")
    canvas.add_argument(
        "--trim",
        nargs="?",
        const="true",
        type=trim_value,
        metavar="TOLERANCE",
        help="remove a uniform border first; alone: a tolerance of 12; or true, false, or a tolerance 0-255",
    )
    canvas.add_argument("--margin", metavar="SHARE", help="the canvas's share left empty on each side, 0-0.4 or 5%%")
    canvas.add_argument("--min-dimension", type=int, help="the least shortest side, 1-10000")
    canvas.add_argument(
        "--upscale",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="enlarge to reach --min-dimension or the box (the service's default: never enlarge)",
    )
    canvas.add_argument("--max-bytes", type=int, help="the most bytes an output may weigh, 1000-100000000")
    canvas.add_argument("--gravity", choices=("centre", "attention"), help="cover's crop (default centre)")
    upload.add_argument(
        "--strip",
        choices=("all", "rights"),
        help="the outputs' metadata: all keeps none; rights keeps copyright, creator and the ICC profile (default)",
    )
    upload.add_argument(
        "--duplicates",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flag near-duplicate sources (the service's default: on with --profile)",
    )


def add_catalog_options(upload: argparse.ArgumentParser) -> None:
    """What ``upload`` sends and how its output file is written: the file or ``--feed-url`` (exactly one), the
    file's format, the output mode and the rendition the output file holds."""
    source = upload.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "csv",
        nargs="?",
        type=Path,
        metavar="CSV",
        help="the file to upload: the service's CSV (S. No., Product Name, Input Image Urls) or a platform's export",
    )
    source.add_argument(
        "--feed-url",
        metavar="URL",
        help="instead of a file: an http(s) URL the service fetches the CSV or feed from itself",
    )
    upload.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        help="how to read the file: contract is the service's CSV, the others a platform's export "
        "(the service's default: auto, told by the header)",
    )
    upload.add_argument(
        "--output-mode",
        choices=("replace", "append"),
        help="replace writes each output URL in place of its image URL (the default for a platform's export); "
        "append adds an Output Image Urls column (the default for the service's CSV)",
    )
    upload.add_argument(
        "--output-rendition",
        metavar="NAME",
        help="with --renditions or --profile: the rendition whose URLs the output file holds (default: the first)",
    )
