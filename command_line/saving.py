"""Files the CLI writes whole or not at all: a temporary file beside the target, renamed over it at the end."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def partial_path(target: Path) -> Path:
    """A hidden name of its own beside ``target``: the rename stays within one file system."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


@contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``target``'s content to, renamed to ``target`` once the block ends without an error.

    When the block raises (a broken download, a full disk, Ctrl-C), the file is removed and ``target`` is as it
    was: never half written. The file is made with the mode a plain ``open`` would give it (0666 less the umask).
    """
    partial = partial_path(target)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
