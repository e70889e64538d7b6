"""The state the pipeline's steps hand on to each other: what was asked, what was read, the pixels so far."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass
class Work:
    """One image on its way through the steps (see pipeline.PREPARE_STEPS); each step reads and updates it."""

    #: The source as opened, then the pixels as each step leaves them; change it with ``replace``.
    image: Image.Image
    #: The source file, read by Pillow until ``decode.close_file``.
    stream: io.BytesIO
    source_bytes: int
    max_dimension: int | None
    max_pixels: int
    #: Whether never_bigger may keep a JPEG source as it is (see keep_source).
    keep_jpeg: bool
    #: The profile embedded in the source, whatever its colour space.
    source_icc: object = None
    source_format: str = ""
    #: The size to shrink to (see resize.plan); None keeps the size.
    target: tuple[int, int] | None = None
    #: The region of the drafted (JPEG scaled-on-load) image that maps onto the target.
    box: tuple[float, float, float, float] | None = None
    orientation: int = 1
    #: The source's RGB profile, to embed in the output.
    icc: bytes | None = None
    #: The source file, held only when it is a JPEG that could be kept as it is (see keep_source).
    source_jpeg: bytes | None = None
    #: The format it is encoded as, and whether its quality is searched (quality=auto): the format's longest
    #: side bounds the size (see resize.plan), and both weigh in the memory it takes (see budget).
    output_format: str = "jpeg"
    auto: bool = False
    #: The most memory, in bytes, the image may take on its way (see budget); None is no limit.
    decode_budget: int | None = None
    #: The source's size as its header gives it, before any draft.
    source_size: tuple[int, int] = (0, 0)
    #: Whether the source has an alpha channel or a transparent colour.
    had_alpha: bool = False
    #: What transparency is flattened onto.
    background: tuple[int, int, int] = (255, 255, 255)

    def replace(self, new: Image.Image) -> None:
        """Make ``new`` the image, freeing the old one's pixels at once: peak memory stays at two images."""
        if self.image is not new:
            self.image.close()
        self.image = new


#: A step of the pipeline: it reads the Work and updates it in place.
Step = Callable[[Work], None]
