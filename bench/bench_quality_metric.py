"""Which perceptual metric for `quality=auto`, what SSIM-luma target matches a SSIMULACRA2 target, and what
perceptual.choose_quality costs next to a single quality-50 encode.

Usage (one core, in a venv with requirements-quality.txt; butteraugli_main is optional, from Debian's
libjxl-devtools, found on PATH or at $BUTTERAUGLI):

    OMP_NUM_THREADS=1 taskset -c 1 python bench/bench_quality_metric.py [--max-mp 2.5] [--out FILE.json]

Images: the bench's photos (photos.py) up to --max-mp, samples/*.jpg, a flat synthetic packshot and a
detailed synthetic texture. Each is shrunk to 1024 px (the service's usual output) for the quality sweep
(JPEG q20..95 step 5, Pillow defaults: 4:2:0, baseline). Metrics: SSIMULACRA2 (the `ssimulacra2` package and
bench/ssimulacra2_fast.py), SSIM on luma (perceptual.py and `fast-ssim`), butteraugli (libjxl's CLI; at
q30/50/70/90 only, it takes ~0.7 s a comparison).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from photos import ensure_photos  # noqa: E402
from ssimulacra2_fast import ssimulacra2 as s2_fast  # noqa: E402

from imaging import perceptual  # noqa: E402

QUALITIES = list(range(20, 96, 5))
BUTTERAUGLI_QUALITIES = (30, 50, 70, 90)
SIDE = 1024
S2_TARGETS = (70, 80, 90)


def packshot() -> Image.Image:
    """A product on a white background: smooth shaded shape, a label, soft shadow (flat, like a shop's)."""
    h, w = 1024, 1024
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w, 3), 250.0, np.float32)
    body = ((xx - 512) / 180) ** 2 + ((yy - 560) / 360) ** 2 < 1
    shade = 0.6 + 0.4 * np.cos((xx - 470) / 180 * 1.2).clip(-1, 1)
    for c, base in enumerate((40, 110, 200)):
        img[..., c] = np.where(body, base * shade + 30, img[..., c])
    label = body & (abs(yy - 560) < 90)
    img[label] = (235, 225, 200)
    shadow = (((xx - 540) / 220) ** 2 + ((yy - 930) / 30) ** 2 < 1) & ~body
    img[shadow] *= 0.85
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def texture() -> Image.Image:
    """Fabric-like detail: fine stripes, a weave and grain over the whole frame (hard to compress)."""
    rng = np.random.default_rng(7)
    h, w = 1024, 1024
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    weave = 40 * np.sin(xx * 1.3) * np.sin(yy * 1.1) + 30 * np.sin((xx + yy) * 0.35)
    grain = rng.normal(0, 18, (h, w)).astype(np.float32)
    base = 128 + weave + grain
    rgb = np.stack([base * 1.05, base * 0.9, base * 0.7 + 20], axis=2)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def shrink(image: Image.Image, side: int = SIDE) -> Image.Image:
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def timed(fn, *args, repeat: int = 1) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        value = fn(*args)
        best = min(best, time.process_time() - t)
    return best, value


class Metrics:
    """Each metric as (reference image, distorted image) -> score, higher better except butteraugli."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.butteraugli = os.environ.get("BUTTERAUGLI") or shutil.which("butteraugli_main")
        try:
            import fast_ssim

            self.fast_ssim = fast_ssim
        except ImportError:
            self.fast_ssim = None

    def s2_package(self, ref: Image.Image, dist: Image.Image) -> float:
        import ssimulacra2

        ref.save(self.tmp / "ref.png")
        dist.save(self.tmp / "dist.png")
        return ssimulacra2.compute_ssimulacra2(str(self.tmp / "ref.png"), str(self.tmp / "dist.png"))

    def s2_fast(self, ref: Image.Image, dist: Image.Image) -> float:
        return s2_fast(np.asarray(ref), np.asarray(dist))

    def ssim_block(self, ref: Image.Image, dist: Image.Image) -> float:
        return perceptual.ssim_luma(ref, dist, "block")

    def ssim_gauss(self, ref: Image.Image, dist: Image.Image) -> float:
        return perceptual.ssim_luma(ref, dist, "gauss")

    def fast_ssim_luma(self, ref: Image.Image, dist: Image.Image) -> float:
        a = np.ascontiguousarray(np.asarray(ref.convert("L")))
        b = np.ascontiguousarray(np.asarray(dist.convert("L")))
        return self.fast_ssim.ssim(a, b)

    def butteraugli_max(self, ref: Image.Image, dist: Image.Image) -> float:
        ref.save(self.tmp / "ref.png")
        dist.save(self.tmp / "dist.png")
        out = subprocess.run(
            [self.butteraugli, str(self.tmp / "ref.png"), str(self.tmp / "dist.png")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(out.split()[0])


def crossing(qualities: list[int], scores: list[float], target: float) -> int | None:
    """The lowest swept quality whose score meets target (None if none does)."""
    return next((q for q, s in zip(qualities, scores, strict=True) if s >= target), None)


def value_at(qualities: list[int], scores: list[float], quality: float) -> float:
    return float(np.interp(quality, qualities, scores))


def load_images(max_mp: float) -> list[tuple[str, Image.Image]]:
    images, seen = [], set()
    for photo in ensure_photos():
        mp = photo.width * photo.height / 1e6
        if mp > max_mp or photo.spec.sample in seen:
            continue
        seen.add(photo.spec.sample)
        with Image.open(photo.path) as im:
            images.append((photo.path.name, im.convert("RGB")))
    for path in sorted((HERE.parent / "samples").glob("*.jpg")):
        with Image.open(path) as im:
            images.append((path.name, im.convert("RGB")))
    images += [("synthetic-packshot", packshot()), ("synthetic-texture", texture())]
    return images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-mp", type=float, default=2.5, help="skip bench photos larger than this")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quality_metric.json")
    parser.add_argument("--no-package", action="store_true", help="skip the slow pure-Python ssimulacra2")
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="keep the metrics and sweeps of --out, measure choose_quality again at $TARGET_SSIM, report",
    )
    args = parser.parse_args()
    if args.cost_only:
        results = json.loads(args.out.read_text())
        images = dict(load_images(args.max_mp))
        for row in results:
            full = images[row["image"]]
            row["choose"] = choose_costs(row["image"], full, shrink(full))
            row["target_ssim"] = TARGET_SSIM
        args.out.write_text(json.dumps(results, indent=1))
        report(results)
        return
    tmp = Path(tempfile.mkdtemp(prefix="qmetric-"))
    metrics = Metrics(tmp)
    results = []
    for name, full in load_images(args.max_mp):
        small = shrink(full)
        row = {"image": name, "size": list(full.size), "small": list(small.size), "time_ms": {}, "scores": {}}
        # Time per comparison (CPU, one core) at q50, at the image's own size and at 1024 px.
        for label, ref in (("full", full), ("1024", small)):
            dist = decode(jpeg(ref, 50))
            candidates = {
                "s2_fast": metrics.s2_fast,
                "ssim_block": metrics.ssim_block,
                "ssim_gauss": metrics.ssim_gauss,
            }
            if metrics.fast_ssim:
                candidates["fast_ssim_luma"] = metrics.fast_ssim_luma
            if not args.no_package and (label == "1024" or ref.width * ref.height <= 1.1e6):
                candidates["s2_package"] = metrics.s2_package
            if metrics.butteraugli and label == "1024":
                candidates["butteraugli"] = metrics.butteraugli_max
            for metric, fn in candidates.items():
                repeat = 3 if metric in ("ssim_block", "ssim_gauss", "fast_ssim_luma") else 1
                if metric == "butteraugli":  # a subprocess: its CPU is the child's
                    t0 = os.times()
                    fn(ref, dist)
                    t1 = os.times()
                    seconds = (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
                else:
                    seconds, _ = timed(fn, ref, dist, repeat=repeat)
                row["time_ms"][f"{metric}@{label}"] = round(seconds * 1000, 1)
        # The sweep at 1024 px.
        sweep = {"s2_fast": [], "ssim_block": [], "ssim_gauss": [], "bytes": []}
        if metrics.fast_ssim:
            sweep["fast_ssim_luma"] = []
        for q in QUALITIES:
            data = jpeg(small, q)
            dist = decode(data)
            sweep["bytes"].append(len(data))
            sweep["s2_fast"].append(round(metrics.s2_fast(small, dist), 2))
            sweep["ssim_block"].append(round(metrics.ssim_block(small, dist), 5))
            sweep["ssim_gauss"].append(round(metrics.ssim_gauss(small, dist), 5))
            if metrics.fast_ssim:
                sweep["fast_ssim_luma"].append(round(metrics.fast_ssim_luma(small, dist), 5))
        if not args.no_package:  # the port against the package, at two qualities
            row["s2_check"] = {
                q: [round(metrics.s2_package(small, decode(jpeg(small, q))), 2), sweep["s2_fast"][QUALITIES.index(q)]]
                for q in (30, 70)
            }
        if metrics.butteraugli:
            sweep["butteraugli"] = {
                q: round(metrics.butteraugli_max(small, decode(jpeg(small, q))), 3) for q in BUTTERAUGLI_QUALITIES
            }
        row["scores"] = sweep
        row["choose"] = choose_costs(name, full, small)
        row["target_ssim"] = TARGET_SSIM
        results.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    report(results)


def choose_costs(name: str, full: Image.Image, small: Image.Image, target: float | None = None) -> dict:
    """CPU of choose_quality vs one q50 encode of the same (decoded, resized) image, full size and 1024 px.

    Also vs the whole task at q50 when the image is a file: pipeline.compress's decode + resize + encode.
    """
    from imaging import pipeline

    target = TARGET_SSIM if target is None else target
    source = next((p for p in (HERE / "results" / "photos" / name, HERE.parent / "samples" / name) if p.exists()), None)
    costs = {}
    for label, image in (("full", full), ("1024", small)):
        base, _ = timed(jpeg, image, 50, repeat=5)
        entry = {"q50_ms": round(base * 1000, 2)}
        if source is not None:
            data = source.read_bytes()
            task, _ = timed(
                lambda d, m=(None if label == "full" else SIDE): pipeline.compress(d, quality=50, max_dimension=m),
                data,
                repeat=3,
            )
            entry["compress_q50_ms"] = round(task * 1000, 2)
        variants = {"tiles": {}, "full": {"sample": "full"}, "tiles_step10": {"step": 10}}
        for variant, kwargs in variants.items():
            seconds, choice = timed(lambda im, kw=kwargs: perceptual.choose_quality(im, target, **kw), image, repeat=3)
            entry[variant] = {
                "ms": round(seconds * 1000, 2),
                "ratio": round(seconds / base, 2),
                "quality": choice.quality,
                "score": round(choice.score, 4),
                "trials": len(choice.trials),
            }
            if source is not None:  # the task with auto: compress's decode + resize, then choose instead of encode
                entry[variant]["task_ratio"] = round((task - base + seconds) / task, 2)
        costs[label] = entry
    return costs


def report(results: list[dict]) -> None:
    """Markdown tables: the calibration and how well SSIM-luma tracks SSIMULACRA2."""
    print("\n## Calibration (1024 px, SSIM-luma value where SSIMULACRA2 crosses the target)\n")
    print("| SSIMULACRA2 target | per-image SSIM-luma at crossing: min / median / max | threshold (median) |")
    print("| --- | --- | --- |")
    thresholds = {}
    for target in S2_TARGETS:
        values = []
        for row in results:
            sw = row["scores"]
            s2 = sw["s2_fast"]
            # the (interpolated) quality at which SSIMULACRA2 reaches the target, and SSIM-luma there
            if max(s2) < target or s2[0] >= target:
                continue
            q = float(np.interp(target, s2, QUALITIES)) if all(np.diff(s2) > 0) else crossing(QUALITIES, s2, target)
            values.append(value_at(QUALITIES, sw["ssim_block"], q))
        thresholds[target] = float(np.median(values)) if values else None
        if values:
            print(
                f"| {target} | {min(values):.4f} / {np.median(values):.4f} / {max(values):.4f} (n={len(values)}) "
                f"| {thresholds[target]:.4f} |"
            )
    print("\n## Per image: quality chosen (sweep step 5) by SSIMULACRA2 and by SSIM-luma at the fitted threshold\n")
    print("| image | " + " | ".join(f"S2≥{t}: q (S2) / SSIM q (S2 there)" for t in S2_TARGETS) + " |")
    print("| --- |" + " --- |" * len(S2_TARGETS))
    for row in results:
        sw, cells = row["scores"], []
        for target in S2_TARGETS:
            q_s2 = crossing(QUALITIES, sw["s2_fast"], target)
            thr = thresholds[target]
            q_ss = crossing(QUALITIES, sw["ssim_block"], thr) if thr else None
            s2_at = sw["s2_fast"][QUALITIES.index(q_ss)] if q_ss else None
            cells.append(f"{q_s2} / {q_ss} ({s2_at})")
        print(f"| {row['image']} | " + " | ".join(cells) + " |")
    print("\n## CPU per comparison (ms, one core; q50 vs source; SSIM includes both luma conversions)\n")
    keys = sorted({k for row in results for k in row["time_ms"]})
    print("| image | size | " + " | ".join(keys) + " |")
    print("| --- | --- |" + " --- |" * len(keys))
    for row in results:
        size = "x".join(map(str, row["size"]))
        print(f"| {row['image']} | {size} | " + " | ".join(str(row["time_ms"].get(k, "")) for k in keys) + " |")
    checks = [(row["image"], q, v) for row in results for q, v in row.get("s2_check", {}).items()]
    if checks:
        print("\n## ssimulacra2_fast.py vs the ssimulacra2 package (1024 px)\n")
        print("| image | quality | package | port |")
        print("| --- | --- | --- | --- |")
        for name, q, (package, port) in checks:
            print(f"| {name} | {q} | {package} | {port} |")
    print("\n## choose_quality at SSIM-luma target", results[0].get("target_ssim"), "\n")
    print(
        "| image | size | q50 encode ms | tiles: ms (x encode) | q, trials | full: ms (x encode) | q "
        "| task x (compress q50 -> auto) | S2 at tiles q (1024) | step 10: ms (x encode), q |"
    )
    print("| --- |" + " --- |" * 9)
    for row in results:
        for label, c in row["choose"].items():
            t, f = c["tiles"], c["full"]
            s2 = "" if label != "1024" else row["scores"]["s2_fast"][QUALITIES.index(t["quality"])]
            size = "x".join(map(str, row["size"] if label == "full" else row["small"]))
            print(
                f"| {row['image']} | {size} | {c['q50_ms']} | {t['ms']} ({t['ratio']}x) | {t['quality']}, "
                f"{t['trials']} | {f['ms']} ({f['ratio']}x) | {f['quality']} | {t.get('task_ratio', '')} | {s2} "
                f"| {c['tiles_step10']['ms']} ({c['tiles_step10']['ratio']}x), {c['tiles_step10']['quality']} |"
            )


TARGET_SSIM = float(os.environ.get("TARGET_SSIM", "0.95"))  # replaced by the fitted value in QUALITY.md

if __name__ == "__main__":
    main()
