"""The decode budget: what an image takes in memory, estimated from its header and checked before decoding.

The peaks are measured in a process of their own (its peak RSS reset before compress, through
/proc/self/clear_refs), so that nothing else the test run holds or frees counts.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imaging import budget, pipeline
from imaging.pipeline import ImageProcessingError, compress

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
#: Python, Pillow and numpy start-up pages a measured process may touch for the first time in compress.
NOTHING_DECODED = 24 * MiB

# Makes a source in the measuring process itself, frees its pixels, then measures compress on it.
MEASURE = r"""
import gc, io, json, sys
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[1])
from imaging import pipeline

case = json.loads(sys.argv[2])
width, height = case["size"]
ramp = (np.add.outer(np.arange(height) * 0.4, np.arange(width) * 0.6) * 255 / (width + height)).astype(np.uint8)

def plane(shift):
    return Image.fromarray(ramp + np.uint8(shift))

def source(kind):
    out = io.BytesIO()
    rgb = Image.merge("RGB", (plane(0), plane(40), plane(80)))
    if kind == "rgba_png":
        Image.merge("RGBA", (plane(0), plane(40), plane(80), plane(120))).save(out, "PNG", compress_level=1)
    elif kind == "cmyk_progressive_jpeg":
        Image.merge("CMYK", (plane(0), plane(40), plane(80), plane(120))).save(out, "JPEG", progressive=True)
    elif kind == "grey16_png":
        Image.fromarray(ramp.astype(np.uint16) * 257).save(out, "PNG", compress_level=1)
    elif kind == "palette_transparent_png":
        rgb.quantize(64).save(out, "PNG", transparency=0, compress_level=1)
    elif kind == "rgba_webp":
        Image.merge("RGBA", (plane(0), plane(40), plane(80), plane(120))).save(out, "WEBP", quality=80, method=0)
    elif kind == "rotated_progressive_jpeg":
        exif = Image.Exif()
        exif[0x0112] = 6
        rgb.save(out, "JPEG", progressive=True, exif=exif.tobytes())
    else:
        rgb.save(out, kind)
    return out.getvalue()

def memory():
    with open("/proc/self/status") as status:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status if line.startswith("Vm")}

data = source(case["kind"])
del ramp
options = case["options"]
estimate = pipeline.memory_needed(data, **{k: v for k, v in options.items() if k != "target_score"})
gc.collect()
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak (VmHWM) starts again from here
base = memory()["VmRSS"]
try:
    made = pipeline.compress(data, **options, decode_budget=case["budget"])
    result = {"made": [made.width, made.height]}
except pipeline.ImageProcessingError as error:
    result = {"code": error.code, "message": error.message}
result.update(peak=memory()["VmHWM"] - base, estimate=estimate)
print(json.dumps(result))
"""


def measured(kind: str, size: tuple[int, int], decode_budget: int | None, **options: object) -> dict:
    """compress on a ``kind`` source of ``size`` in a process of its own: made or refused, its peak, the estimate."""
    case = {"kind": kind, "size": size, "budget": decode_budget, "options": options}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(ROOT), json.dumps(case)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_proc = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux")
FIFTY_MP = (7071, 7071)


@needs_proc
@pytest.mark.parametrize(
    ("kind", "outcome"),
    [("rgba_png", "image_too_large"), ("cmyk_progressive_jpeg", "image_too_large"), ("grey16_png", "made")],
)
def test_a_50_mp_source_is_refused_before_decoding_or_made_within_the_default_budget(kind: str, outcome: str) -> None:
    result = measured(kind, FIFTY_MP, budget.DEFAULT_BUDGET)

    if outcome == "made":
        assert result.get("made") == list(FIFTY_MP), result
        assert result["peak"] <= min(result["estimate"], budget.DEFAULT_BUDGET), result
    else:
        assert result.get("code") == "image_too_large", result
        assert result["estimate"] > budget.DEFAULT_BUDGET, result
        assert result["peak"] < NOTHING_DECODED, result  # refused from the header: no pixel was decoded
        assert "384 MiB" in result["message"] and "IMAGE_DECODE_BUDGET_MB" in result["message"], result


@needs_proc
@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("PNG", {}),
        ("rgba_png", {"output_format": "webp"}),
        ("palette_transparent_png", {"quality": None, "target_score": 0.965}),
        ("grey16_png", {"output_format": "avif"}),
        ("cmyk_progressive_jpeg", {"max_dimension": 500}),
        ("rotated_progressive_jpeg", {"quality": None, "target_score": 0.965, "output_format": "webp"}),
        ("rgba_webp", {}),
        ("TIFF", {"output_format": "avif", "quality": None, "target_score": 0.965}),
    ],
)
def test_the_estimate_bounds_the_measured_peak(kind: str, options: dict) -> None:
    result = measured(kind, (2400, 1800), None, **options)

    assert "made" in result, result
    assert result["peak"] <= result["estimate"], result
    # And it is an estimate, not a blanket refusal: what grows with the pixels is within three times the peak.
    assert result["estimate"] - budget.FIXED_BYTES < 3 * result["peak"], result


def test_the_estimate_is_checked_before_decoding_and_names_the_budget() -> None:
    # A header claiming 7071x7071 RGBA with no pixel data behind it: refused, not found truncated.
    header = io.BytesIO()
    Image.new("RGBA", (7071, 7071)).save(header, "PNG", compress_level=0)
    truncated = header.getvalue()[:4096]
    with pytest.raises(ImageProcessingError) as info:
        compress(truncated, decode_budget=256 * MiB)
    assert info.value.code == "image_too_large"
    assert "7071x7071" in info.value.message and "256 MiB" in info.value.message
    assert "IMAGE_DECODE_BUDGET_MB" in info.value.message
    with pytest.raises(ImageProcessingError) as unbounded:
        compress(truncated, decode_budget=None)
    assert unbounded.value.code == "corrupt_image"  # only then decoded


def test_a_jpeg_shrunk_on_load_counts_at_the_size_it_decodes_at() -> None:
    source = io.BytesIO()
    Image.linear_gradient("L").resize((4000, 3000)).convert("RGB").save(source, "JPEG")
    data = source.getvalue()
    full, drafted = pipeline.memory_needed(data), pipeline.memory_needed(data, max_dimension=400)
    # Decoded at 1/8 of each side: under a tenth of the pixels' memory (FIXED_BYTES aside).
    assert full - budget.FIXED_BYTES > 4000 * 3000 * 4 > 10 * (drafted - budget.FIXED_BYTES)
    with pytest.raises(ImageProcessingError) as info:
        compress(data, decode_budget=full - 1)
    assert info.value.code == "image_too_large"
    made = compress(data, decode_budget=drafted, max_dimension=400)
    assert (made.width, made.height) == (400, 300)


@pytest.mark.parametrize(("output_format", "quality"), [("jpeg", 50), ("webp", 50), ("avif", None)])
def test_the_output_format_and_quality_search_weigh_in(output_format: str, quality: int | None) -> None:
    source = io.BytesIO()
    Image.new("RGB", (1000, 1000), (10, 20, 30)).save(source, "PNG")
    jpeg = pipeline.memory_needed(source.getvalue())
    other = pipeline.memory_needed(source.getvalue(), output_format=output_format, quality=quality)
    assert other >= jpeg
    assert (other > jpeg) == (output_format != "jpeg")
