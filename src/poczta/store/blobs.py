"""Content-addressed message bodies: one file per distinct body, named by its SHA-256 digest.

A body lives at `<root>/ab/cd/abcd…` (the first two pairs of hex digits shard the
directories). Writing goes to a fresh file under `<root>/tmp/` (same filesystem),
which is written, fsync'd and atomically renamed into place; the shard directory is
then fsync'd so that the new name survives a crash. Identical content is stored once.

The directory fsync can be done per write (`put(..., sync_dir=True)`) or left to the
caller, who collects the directories of a batch and syncs each once (`sync_dirs`)
before committing the rows that refer to them. Every method is synchronous and meant
to run in a worker thread; OS errors become `StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from pathlib import Path

from poczta.store.base import NotFound, StoreUnavailable

__all__ = ["BlobStore", "blob_digest"]

_HEX = frozenset("0123456789abcdef")


def blob_digest(data: bytes) -> str:
    """The name a body is stored under: its SHA-256 digest in lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Message bodies as files named by digest under one root directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._known_dirs: set[Path] = set()
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"blob directory unusable: {exc}") from exc
        self.clear_temporary()

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise NotFound(f"not a blob digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put(self, data: bytes, *, sync_dir: bool = True) -> tuple[str, Path]:
        """Store `data` durably (unless the caller syncs the directory); return digest and dir."""
        digest = blob_digest(data)
        final = self.path(digest)
        directory = final.parent
        try:
            if not final.exists():
                self._ensure_dir(directory)
                self._write_new(data, final)
            if sync_dir:
                _fsync_dir(directory)
        except OSError as exc:
            raise StoreUnavailable(f"cannot store message body: {exc}") from exc
        return digest, directory

    def _write_new(self, data: bytes, final: Path) -> None:
        temp = self._tmp / f"{final.name[:16]}.{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        os.close(fd)
        os.replace(temp, final)

    def _ensure_dir(self, directory: Path) -> None:
        """Create a shard directory (and its parent) durably if it is missing."""
        if directory in self._known_dirs:
            return
        parent = directory.parent
        if not parent.is_dir():
            parent.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        if not directory.is_dir():
            directory.mkdir(exist_ok=True)
            _fsync_dir(parent)
        self._known_dirs.add(directory)

    def sync_dirs(self, directories: Iterable[Path], pool: Executor | None = None) -> None:
        """fsync each directory once (in parallel on `pool`); `StoreUnavailable` on failure."""
        unique = list(set(directories))
        try:
            if pool is not None and len(unique) > 1:
                list(pool.map(_fsync_dir, unique))
            else:
                for directory in unique:
                    _fsync_dir(directory)
        except OSError as exc:
            raise StoreUnavailable(f"cannot sync blob directory: {exc}") from exc

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no blob {digest}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot read message body: {exc}") from exc

    def delete(self, digest: str) -> None:
        """Remove a body nothing refers to any more; a missing file is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def digests(self) -> Iterator[str]:
        """Every stored digest (for consistency checks and garbage sweeps)."""
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for second in sorted(first.glob("[0-9a-f][0-9a-f]")):
                for entry in sorted(second.iterdir()):
                    if len(entry.name) == 64:
                        yield entry.name

    def clear_temporary(self) -> None:
        """Remove partial writes left by a crash (call only when no write is in flight)."""
        for entry in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()
