"""Unit tests for storage.LocalStorage: atomic writes, keys kept inside the root, public URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import storage
from config import Settings
from storage import LocalStorage, StorageError

BASE = "http://127.0.0.1:5000"
KEY = "6f1c0000-0000-4000-8000-000000000000/42.jpg"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder


@pytest.fixture
def local(root: Path) -> LocalStorage:
    return LocalStorage(root, BASE)


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


# --- put ------------------------------------------------------------------------------------------


def test_put_writes_the_object_under_its_key(local: LocalStorage, root: Path) -> None:
    local.put(KEY, b"\xff\xd8jpeg bytes")
    assert (root / KEY).read_bytes() == b"\xff\xd8jpeg bytes"
    assert local.path_for(KEY) == (root / KEY).resolve()


def test_put_creates_missing_folders(local: LocalStorage, root: Path) -> None:
    local.put("a/b/c/d.jpg", b"x")
    assert (root / "a" / "b" / "c" / "d.jpg").read_bytes() == b"x"


def test_put_leaves_no_temporary_file(local: LocalStorage, root: Path) -> None:
    local.put(KEY, b"first")
    local.put("other.jpg", b"second")
    assert leftovers(root) == []
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["42.jpg", "other.jpg"]


def test_put_replaces_an_existing_object(local: LocalStorage, root: Path) -> None:
    local.put(KEY, b"old content, longer than the new one")
    local.put(KEY, b"new")
    assert (root / KEY).read_bytes() == b"new"
    assert leftovers(root) == []


def test_put_replaces_by_rename_so_a_reader_never_sees_a_torn_file(local: LocalStorage, root: Path) -> None:
    old = b"A" * 100_000
    new = b"B" * 50_000
    local.put(KEY, old)
    old_inode = os.stat(root / KEY).st_ino
    with open(root / KEY, "rb") as reader:
        local.put(KEY, new)
        # A reader that opened the old object still reads all of it; the name now holds the new one.
        assert reader.read() == old
    assert (root / KEY).read_bytes() == new
    assert os.stat(root / KEY).st_ino != old_inode


def test_put_writes_an_empty_object(local: LocalStorage, root: Path) -> None:
    local.put(KEY, b"")
    assert (root / KEY).read_bytes() == b""


def test_put_removes_its_temporary_file_when_the_rename_fails(
    local: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.put(KEY, b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.local.os, "replace", failing_replace)
    with pytest.raises(storage.StorageError, match="disk full"):
        local.put(KEY, b"new")
    monkeypatch.undo()
    assert leftovers(root) == []
    assert (root / KEY).read_bytes() == b"old"  # the previous object is untouched


def test_put_removes_its_temporary_file_when_the_write_fails(
    local: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdopen = os.fdopen

    def failing_fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)

        class Failing:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()
                return False

            def write(self, data):
                handle.write(data[:3])
                raise OSError("write failed")

        return Failing()

    monkeypatch.setattr(storage.local.os, "fdopen", failing_fdopen)
    with pytest.raises(storage.StorageError, match="write failed"):
        local.put(KEY, b"partial data")
    monkeypatch.undo()
    assert leftovers(root) == []
    assert not (root / KEY).exists()


@pytest.mark.parametrize("key", ["../x", "../media-sibling/x.jpg", "a/../../x", "/etc/passwd", "/tmp/x.jpg"])
def test_put_refuses_keys_outside_the_root(local: LocalStorage, root: Path, key: str) -> None:
    with pytest.raises(StorageError):
        local.put(key, b"x")
    assert not (root.parent / "x").exists()
    assert leftovers(root.parent) == []


# --- path_for -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "../../x",
        "a/../../x",
        "a/b/../../../x",
        "../media/../x",
        "..",
    ],
)
def test_path_for_refuses_climbing_out(local: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError, match="outside the storage root"):
        local.path_for(key)


def test_path_for_refuses_a_sibling_folder_sharing_the_prefix(local: LocalStorage, root: Path) -> None:
    # "media-other" starts with "media" as a string but is not inside it.
    with pytest.raises(StorageError):
        local.path_for("../media-other/x.jpg")


@pytest.mark.parametrize("key", ["/x", "/etc/passwd"])
def test_path_for_refuses_absolute_keys(local: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError):
        local.path_for(key)


def test_path_for_refuses_an_absolute_key_pointing_inside_the_root(local: LocalStorage, root: Path) -> None:
    with pytest.raises(StorageError):
        local.path_for(str(root.resolve() / "x.jpg"))


def test_path_for_refuses_the_root_given_as_an_absolute_key(local: LocalStorage, root: Path) -> None:
    with pytest.raises(StorageError):
        local.path_for(str(root))


@pytest.mark.parametrize("key", ["", ".", "./", "a/..", "a/b/../..", "./."])
def test_path_for_refuses_the_root_itself(local: LocalStorage, key: str) -> None:
    with pytest.raises(StorageError):
        local.path_for(key)


def test_path_for_refuses_a_symlink_leading_out(local: LocalStorage, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(StorageError):
        local.path_for("link/x.jpg")


@pytest.mark.parametrize("key", [KEY, "x.jpg", "a/b/c.jpg", "a/../b.jpg", "./x.jpg", "..x.jpg", "a/..b/c.jpg"])
def test_path_for_accepts_keys_inside_the_root(local: LocalStorage, root: Path, key: str) -> None:
    path = local.path_for(key)
    assert path == (root / key).resolve()
    assert path.is_relative_to(root.resolve())


def test_path_for_works_with_an_unresolved_root(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    unresolved = tmp_path / "media" / ".." / "media"
    local = LocalStorage(unresolved, BASE)
    assert local.path_for("x.jpg") == (tmp_path / "media" / "x.jpg").resolve()
    with pytest.raises(StorageError):
        local.path_for("../x.jpg")


# --- url_for --------------------------------------------------------------------------------------


def test_url_for_is_public_base_url_media_key(local: LocalStorage) -> None:
    assert local.url_for(KEY) == f"{BASE}/media/{KEY}"
    assert local.url_for("x.jpg") == "http://127.0.0.1:5000/media/x.jpg"


def test_url_for_uses_the_configured_public_base_url(tmp_path: Path) -> None:
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "PUBLIC_BASE_URL": "https://img.example.com/"})
    backend = storage.from_settings(settings)
    assert isinstance(backend, LocalStorage)
    assert backend.url_for(KEY) == f"https://img.example.com/media/{KEY}"


def test_from_settings_defaults_to_local_storage_under_the_instance_folder(tmp_path: Path) -> None:
    settings = Settings.from_env({"INSTANCE_DIR": str(tmp_path), "PORT": "8080"})
    backend = storage.from_settings(settings)
    assert isinstance(backend, LocalStorage)
    assert (tmp_path / "media").is_dir()
    assert backend.url_for("x.jpg") == "http://127.0.0.1:8080/media/x.jpg"
    backend.put("x.jpg", b"data")
    assert (tmp_path / "media" / "x.jpg").read_bytes() == b"data"


# --- the shape of output keys, and how the storage serves them --------------------------------------

DIGEST = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
UUID4 = "6f1c0000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    "key",
    [KEY, f"{UUID4}/1.webp", f"{UUID4}/7.avif", f"objects/ab/{DIGEST}-1.jpg", f"objects/00/{DIGEST}-42.webp"],
)
def test_is_output_key_accepts_the_shapes_the_storage_writes(key: str) -> None:
    assert len(DIGEST) == 64
    assert storage.is_output_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "webhook_secret",
        "service.db",
        "test.db-wal",
        f"{UUID4}/.tmp-abc123.jpg",
        f"{UUID4}/42.png",
        f"{UUID4}/42.jpg.bak",
        f"{UUID4}/42.JPG",
        f"{UUID4}/-1.jpg",
        f"{UUID4}/x.jpg",
        f"{UUID4}//42.jpg",
        f"{UUID4}/42.jpg\n",
        f"{UUID4}/sub/42.jpg",
        f"./{UUID4}/42.jpg",
        f"x/../{UUID4}/42.jpg",
        UUID4.upper() + "/42.jpg",
        "6f1c0000-0000-1000-8000-000000000000/42.jpg",  # a version-1 UUID
        "6f1c00000000400080000000000000000/42.jpg",
        f"objects/ab/{DIGEST[:-1]}-1.jpg",
        f"objects/AB/{DIGEST}-1.jpg",
        f"objects/ab/{DIGEST.upper()}-1.jpg",
        f"objects/abc/{DIGEST}-1.jpg",
        f"objects/ab/{DIGEST}-1.jpg/x",
        f"objects/ab/{DIGEST}-1",
        f"objects/ab/{DIGEST}.jpg",
        f"objects/ab/{DIGEST}-.jpg",
        f"objects/ab/{DIGEST}--1.jpg",
        "",
    ],
)
def test_is_output_key_refuses_everything_else(key: str) -> None:
    assert not storage.is_output_key(key)


def test_local_path_is_the_file_of_a_stored_output(local: LocalStorage, root: Path) -> None:
    local.put(KEY, b"jpeg")
    assert local.local_path(KEY) == (root / KEY).resolve()
    assert local.local_path(f"{UUID4}/43.jpg") is None  # not stored


def test_local_path_refuses_files_that_are_not_outputs(local: LocalStorage, root: Path) -> None:
    for name in ("webhook_secret", f"{UUID4}/.tmp-abc.jpg", f"{UUID4}/42.png", "../outside.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
        assert local.local_path(name) is None


def test_local_path_refuses_an_output_key_that_is_a_folder(local: LocalStorage, root: Path) -> None:
    (root / KEY).mkdir(parents=True)
    assert local.local_path(KEY) is None


def test_an_object_store_serves_its_own_objects() -> None:
    s3 = storage.S3Storage("bucket", None, "us-east-1", None)
    assert s3.local_path(KEY) is None


@pytest.mark.parametrize(
    ("key", "media_type"),
    [(KEY, "image/jpeg"), (f"{UUID4}/1.webp", "image/webp"), (f"objects/ab/{DIGEST}-3.avif", "image/avif")],
)
def test_media_type_follows_the_keys_format(key: str, media_type: str) -> None:
    assert storage.media_type(key) == media_type


def test_orphaned_temporary_files_older_than_a_task_are_removed(local: LocalStorage, root: Path) -> None:
    local.put(KEY, b"jpeg")
    folder = (root / KEY).parent
    orphan = folder / ".tmp-killed.jpg"
    recent = folder / ".tmp-writing.jpg"
    for path in (orphan, recent):
        path.write_bytes(b"half")
    old = os.path.getmtime(orphan) - 1000
    os.utime(orphan, (old, old))

    assert local.delete_orphaned_temporaries(older_than_s=210) == 1

    assert not orphan.exists()
    assert recent.exists() and (root / KEY).read_bytes() == b"jpeg"
    assert local.delete_orphaned_temporaries(older_than_s=210) == 0


def test_a_listing_goes_through_the_shared_outputs_in_key_order_from_where_it_stopped(
    local: LocalStorage, root: Path
) -> None:
    keys = sorted(f"objects/{prefix}/{prefix}{DIGEST[2:]}-{n}.jpg" for prefix in ("0a", "ff", "7c") for n in (1, 2))
    for key in keys:
        local.put(key, b"jpeg")
    local.put(KEY, b"jpeg")  # a per-request output: not under objects/
    (root / "objects" / "0a" / ".tmp-writing.jpg").write_bytes(b"half")

    first = local.list_objects("", 4)
    assert [item.key for item in first] == keys[:4]
    assert [item.key for item in local.list_objects(first[-1].key, 4)] == keys[4:]
    assert local.list_objects(keys[-1], 4) == []
    modified = first[0].modified_at
    assert modified.tzinfo is not None and abs(modified.timestamp() - os.path.getmtime(root / keys[0])) < 1


def test_a_listing_of_a_store_with_no_shared_outputs_is_empty(local: LocalStorage) -> None:
    assert local.list_objects("", 10) == []


def test_a_shared_outputs_key_holds_its_row_id() -> None:
    assert storage.shared_output_id(f"objects/ab/{DIGEST}-42.webp") == 42
    assert storage.shared_output_id(KEY) is None
    assert storage.shared_output_id(f"objects/ab/{DIGEST}-{10**19}.jpg") is None  # no row has such an id
    assert storage.shared_output_id("objects/ab/notes.txt") is None
