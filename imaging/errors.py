"""The error the imaging steps raise for a file that cannot become an output image."""

from __future__ import annotations


class ImageProcessingError(Exception):
    """A file that cannot be turned into an output image; ``code`` is stable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
