"""Shrinking to fit max_dimension and the output format's longest side: planned from the header, drafted on load
(JPEG), resampled after."""

from __future__ import annotations

from PIL import Image

from imaging.encode import MAX_SIDE
from imaging.work import Work

_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 3.0


def target_size(width: int, height: int, max_dimension: int | None) -> tuple[int, int] | None:
    """Size with the longest side at max_dimension, or None when no shrinking is needed."""
    if max_dimension is None or max(width, height) <= max_dimension:
        return None
    if width >= height:
        return max_dimension, max(1, round(height * max_dimension / width))
    return max(1, round(width * max_dimension / height)), max_dimension


def plan(work: Work) -> None:
    """Step: choose the size to shrink to, if any: to max_dimension, and to the longest side the output holds."""
    fits = MAX_SIDE[work.output_format]
    work.target = target_size(*work.image.size, fits if work.max_dimension is None else min(work.max_dimension, fits))


def draft(work: Work) -> None:
    """Step, before loading: let libjpeg decode at 1/2, 1/4 or 1/8 scale, still at least the target's size."""
    if work.target is None:
        return
    # JPEG only (a no-op elsewhere). Must happen before load().
    drafted = work.image.draft(work.image.mode, work.target)
    if drafted is not None:
        work.box = drafted[1]


def shrink(work: Work) -> None:
    """Step: resample to the target size."""
    im = work.image
    if work.target is not None and im.size != work.target:
        work.replace(im.resize(work.target, _RESAMPLE, box=work.box, reducing_gap=_REDUCING_GAP))
