"""Time pipeline.compress on 12 MP and 2 MP inputs, beside libvips alone, and report peak RSS; a script, not a
test.

Each case runs in a fresh subprocess so its peak RSS (getrusage ru_maxrss) is its own.
Usage: python bench/bench_pipeline.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))
sys.dont_write_bytecode = True  # the service serves samples/; keep __pycache__ out of it

# name: (input file, max_dimension, engine). "service" is pipeline.compress as the service runs it (Pillow);
# "libvips" libvips alone (thumbnail_buffer, one thread), for the side-by-side; "naive" the textbook version
# for contrast.
CASES: dict[str, tuple[str, int | None, str]] = {
    "jpeg 12MP, full size": ("photo.jpg", None, "service"),
    "libvips jpeg 12MP, full size": ("photo.jpg", None, "libvips"),
    "jpeg 12MP -> 1600": ("photo.jpg", 1600, "service"),
    "libvips jpeg 12MP -> 1600": ("photo.jpg", 1600, "libvips"),
    "jpeg 12MP -> 800": ("photo.jpg", 800, "service"),
    "libvips jpeg 12MP -> 800": ("photo.jpg", 800, "libvips"),
    "jpeg 2MP -> 1024": ("photo-2mp.jpg", 1024, "service"),
    "libvips jpeg 2MP -> 1024": ("photo-2mp.jpg", 1024, "libvips"),
    "naive jpeg 12MP -> 1600": ("photo.jpg", 1600, "naive"),
    "png 12MP, full size": ("photo.png", None, "service"),
    "png 12MP -> 1600": ("photo.png", 1600, "service"),
}


def naive_compress(data: bytes, quality: int, max_dimension: int | None) -> bytes:
    """What one writes first: exif_transpose, convert, thumbnail without draft, optimize."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        if max_dimension:
            rgb.thumbnail((max_dimension, max_dimension), Image.Resampling.LANCZOS, reducing_gap=None)
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
        return out.getvalue()


def run_case(name: str, folder: Path, repeat: int) -> dict[str, float]:
    """Run one case in this process and return its timings and memory."""
    from imaging import pipeline

    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import _compress_libvips

    filename, max_dimension, engine = CASES[name]
    data = (folder / filename).read_bytes()

    def once() -> int:
        if engine == "naive":
            return len(naive_compress(data, 50, max_dimension))
        if engine == "libvips":
            return _compress_libvips(data, max_dimension)
        return len(pipeline.compress(data, quality=50, max_dimension=max_dimension).data)

    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    once()  # warm-up: plugin registration, allocator
    started = time.perf_counter()
    for _ in range(repeat):
        size = once()
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "ms_per_image": elapsed / repeat * 1000,
        "peak_rss_mib": peak_kib / 1024,
        "input_kib": len(data) / 1024,
        "output_kib": size / 1024,
        "baseline_rss_mib": baseline_kib / 1024,
    }


def make_inputs(folder: Path) -> None:
    """Write a photo-like 4000x3000 JPEG (q90) and PNG into ``folder``."""
    from make_samples import landscape

    im = landscape((4000, 3000), seed=12)
    im.save(folder / "photo.jpg", "JPEG", quality=90)
    im.save(folder / "photo.png", "PNG", compress_level=1)
    landscape((1632, 1224), seed=13).save(folder / "photo-2mp.jpg", "JPEG", quality=90)


def main() -> None:
    """Generate the inputs once, then time every case in its own subprocess."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--make-inputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.make_inputs:
        make_inputs(Path(args.folder))
        return
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.folder), args.repeat)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        # Linux keeps ru_maxrss across fork+exec, so this parent must stay small: generating
        # the inputs here would inflate every child's peak.
        subprocess.run([sys.executable, __file__, "--make-inputs", "--folder", tmp], check=True)
        print(f"{'case':<28}{'ms/image':>10}{'peak RSS MiB':>14}{'growth MiB':>12}{'in KiB':>9}{'out KiB':>9}")
        for name in CASES:
            child = subprocess.run(
                [sys.executable, __file__, "--case", name, "--folder", tmp, "--repeat", str(args.repeat)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(child.stdout)
            print(
                f"{name:<28}{r['ms_per_image']:>10.0f}{r['peak_rss_mib']:>14.0f}"
                f"{r['peak_rss_mib'] - r['baseline_rss_mib']:>12.0f}{r['input_kib']:>9.0f}{r['output_kib']:>9.0f}"
            )
        print(
            "peak RSS: whole process (interpreter, Pillow, input bytes); growth: peak minus RSS before the first call"
        )


if __name__ == "__main__":
    main()
