"""End-to-end throughput of a running service: upload, process, poll, all over HTTP.

Start the service first (``make run``, which allows loopback fetches), then:

    .venv/bin/python bench/bench_service.py --images 200 --megapixels 3

The script serves photo-like JPEGs itself from 127.0.0.2, uploads one CSV naming them, polls the
status API until the request is final, and prints images per second and status-poll latency.
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import requests
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.handlers import respond
from support.loopback import LoopbackHTTPServer


def photo_like(width: int, height: int, seed: int) -> bytes:
    """A JPEG with gradients, shapes and noise, so it decodes and compresses like a photo."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for n in range(12):
        x, y = (seed * 97 + n * 131) % width, (seed * 53 + n * 71) % height
        draw.ellipse((x, y, x + width // 5, y + height // 5), fill=((n * 40) % 256, (seed * 30) % 256, 120))
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image.filter(ImageFilter.GaussianBlur(2)), noise, 0.15)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:5000")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--megapixels", type=float, default=3.0)
    parser.add_argument("--distinct", type=int, default=20, help="distinct source images, served round-robin")
    parser.add_argument("--max-dimension", type=int, default=None)
    args = parser.parse_args()

    width = int((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    sources = [photo_like(width, height, seed) for seed in range(args.distinct)]
    with LoopbackHTTPServer("127.0.0.2") as server:
        urls = []
        for n in range(args.images):
            path = f"/bench/{time.time_ns()}-{n}.jpg"
            server.route(path, respond(200, sources[n % len(sources)], {"Content-Type": "image/jpeg"}))
            urls.append(server.url(path))
        lines = ["S. No.,Product Name,Input Image Urls"]
        lines += [f"{n + 1},SKU{n + 1},{url}" for n, url in enumerate(urls)]
        fields = {"max_dimension": str(args.max_dimension)} if args.max_dimension else {}

        started = time.perf_counter()
        answer = requests.post(
            f"{args.base_url}/api/upload",
            files={"file": ("bench.csv", "\n".join(lines).encode(), "text/csv")},
            data=fields,
            timeout=60,
        )
        upload_s = time.perf_counter() - started
        answer.raise_for_status()
        request_id = answer.json()["request_id"]
        poll_ms: list[float] = []
        while True:
            t0 = time.perf_counter()
            status = requests.get(f"{args.base_url}/api/status/{request_id}?per_page=100", timeout=60).json()
            poll_ms.append((time.perf_counter() - t0) * 1000)
            if status["status"] in {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}:
                break
            time.sleep(0.25)
        total_s = time.perf_counter() - started

    progress = status["progress"]
    print(f"images: {args.images} x {width}x{height} ({args.megapixels} MP), max_dimension={args.max_dimension}")
    print(f"status: {status['status']} completed={progress['completed_images']} failed={progress['failed_images']}")
    print(f"upload answered in {upload_s * 1000:.0f} ms; request final after {total_s:.1f} s")
    print(f"throughput: {args.images / total_s:.1f} images/s")
    print(
        f"status poll (100 products a page): p50 {statistics.median(poll_ms):.1f} ms, "
        f"max {max(poll_ms):.1f} ms over {len(poll_ms)} polls"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
