"""The CLI's downloads are written whole or not at all: a temporary file beside the target, renamed at the end."""

from __future__ import annotations

import os

import pytest

from command_line.saving import atomic_write


def test_a_complete_write_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "pack.zip"
    target.write_bytes(b"old")

    with atomic_write(target) as sink:
        sink.write(b"new ")
        sink.write(b"bytes")
        assert target.read_bytes() == b"old"  # nothing shows at the target until the end

    assert target.read_bytes() == b"new bytes"
    assert os.listdir(tmp_path) == ["pack.zip"]


@pytest.mark.parametrize("interruption", [OSError("the download broke"), KeyboardInterrupt()])
def test_a_write_that_raises_leaves_no_file_and_the_target_as_it_was(tmp_path, interruption):
    target = tmp_path / "pack.zip"
    other = tmp_path / "other.zip"
    other.write_bytes(b"kept")

    with pytest.raises(type(interruption)), atomic_write(target) as sink:
        sink.write(b"half of it")
        raise interruption
    with pytest.raises(type(interruption)), atomic_write(other) as sink:
        sink.write(b"half of it")
        raise interruption

    assert sorted(os.listdir(tmp_path)) == ["other.zip"]
    assert other.read_bytes() == b"kept"


def test_the_file_gets_the_mode_a_plain_open_gives(tmp_path):
    umask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "pack.zip") as sink:
            sink.write(b"x")
    finally:
        os.umask(umask)

    assert (tmp_path / "pack.zip").stat().st_mode & 0o777 == 0o640
