"""Shrinking: the size that fits max_dimension, and how to resample to it."""

from __future__ import annotations

from PIL import Image

RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0


def target_size(width: int, height: int, max_dimension: int | None) -> tuple[int, int] | None:
    """Size with the longest side at max_dimension, or None when no shrinking is needed."""
    if max_dimension is None or max(width, height) <= max_dimension:
        return None
    if width >= height:
        return max_dimension, max(1, round(height * max_dimension / width))
    return max(1, round(width * max_dimension / height)), max_dimension
