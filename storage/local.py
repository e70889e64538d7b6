"""Local storage: files under a folder, written atomically, served by the app at ``/media/<key>``."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from storage.interface import SHARED_PREFIX, ListedObject, StorageError, is_output_key


class LocalStorage:
    """Files under a folder, served by the app itself at ``/media/<key>``."""

    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = root
        self.public_base_url = public_base_url

    def path_for(self, key: str) -> Path:
        """The file for ``key``; refuses keys that would leave the root.

        Raises:
            StorageError: the key is absolute or climbs out of the root.
        """
        if Path(key).is_absolute():
            raise StorageError(f"absolute storage key: {key!r}")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise StorageError(f"key outside the storage root: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Write then rename: a crash mid-write leaves a temporary file, never a torn image.

        Raises:
            StorageError: the folder cannot be written (full, read-only, gone).
        """
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        except OSError as error:
            raise StorageError(f"cannot write under {path.parent}: {error.strerror or error}") from error
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp_name, path)
        except OSError as error:
            Path(tmp_name).unlink(missing_ok=True)
            raise StorageError(f"cannot write {path.name}: {error.strerror or error}") from error
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        """Remove the file, if there is one.

        Raises:
            StorageError: the file exists and cannot be removed.
        """
        try:
            self.path_for(key).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"cannot remove {key}: {error.strerror or error}") from error

    def delete_orphaned_temporaries(self, older_than_s: float) -> int:
        """Every ``put`` runs inside a task, and no task outlives its hard time limit: a temporary
        file older than that was left by a worker killed between the write and the rename.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for path in (*self.root.glob("*/.tmp-*"), *self.root.glob("objects/*/.tmp-*")):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # renamed or removed meanwhile
        return removed

    def list_objects(self, start_after: str, limit: int) -> list[ListedObject]:
        """The files under ``objects/``, in key order, each folder read whole; temporary files are not listed.

        Raises:
            StorageError: the folder cannot be read.
        """
        top = self.root / SHARED_PREFIX
        listed: list[ListedObject] = []
        try:
            folders = sorted(entry.name for entry in os.scandir(top) if entry.is_dir()) if top.is_dir() else []
            for folder in folders:
                prefix = f"{SHARED_PREFIX}{folder}/"
                if start_after[: len(prefix)] > prefix:
                    continue  # every key in this folder sorts before start_after
                for name in sorted(entry.name for entry in os.scandir(top / folder) if not entry.name.startswith(".")):
                    key = prefix + name
                    if key <= start_after:
                        continue
                    try:
                        modified = (top / folder / name).stat().st_mtime
                    except FileNotFoundError:
                        continue  # removed meanwhile
                    listed.append(ListedObject(key, datetime.fromtimestamp(modified, UTC)))
                    if len(listed) >= limit:
                        return listed
        except OSError as error:
            raise StorageError(f"cannot list {top}: {error.strerror or error}") from error
        return listed

    def read_chunks(self, key: str, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        try:
            handle = self.path_for(key).open("rb")
        except OSError as error:
            raise StorageError(f"cannot read {key}: {error.strerror or error}") from error
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def url_for(self, key: str) -> str:
        return f"{self.public_base_url}/media/{key}"

    def local_path(self, key: str) -> Path | None:
        # Only outputs: the root may hold other files (temporary ones, or worse if it is the instance folder).
        if not is_output_key(key):
            return None
        try:
            path = self.path_for(key)
        except StorageError:
            return None
        return path if path.is_file() else None
