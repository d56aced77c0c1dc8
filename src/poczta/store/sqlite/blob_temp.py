"""Temporary files of the blob store: one directory per open store, and recovery of the
directories whose owner died.

Several processes write bodies at once (the workers of one server, an admin's command),
so no process may clean up "the" temp directory while another may be writing there.
Each open `BlobFiles` therefore writes under its own `tmp/<owner>/`, created on first
use, and holds an exclusive ``flock`` on `tmp/<owner>.lock` for as long as it lives.
The kernel drops that lock when the process exits, however it exits (``kill -9``
included), so "the lock can be taken" means "the owner is gone" without trusting
PIDs, which are reused.

A store opening later recovers every abandoned directory: each file whose content
matches the digest its name starts with is complete, and is moved to its final name
if that is missing; anything else is a partial write and is removed. Completing
instead of discarding matters for the "filesystem" sync method: there the rows of a
batch may become durable before its renames do, while the temp files themselves were
flushed before either (see `poczta.store.sqlite.blobs`). A complete file whose batch never
committed becomes a body nothing refers to, which costs space, not correctness.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["TempArea", "recover_abandoned"]

_LOCK_SUFFIX = ".lock"


class TempArea:
    """This process's private directory under `tmp/`, claimed on first use."""

    def __init__(self, tmp_root: Path) -> None:
        self.tmp_root = tmp_root
        self._dir: str | None = None  # a string: new_path is on every delivery's path
        self._lock_fd: int | None = None
        self._names = itertools.count()

    def new_path(self, digest: str) -> str:
        """A fresh temp file name for a body with this digest (the file is not created)."""
        if self._dir is None:
            self._dir = self._claim()
        return f"{self._dir}/{digest}.{next(self._names)}"

    def _claim(self) -> str:
        owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        # The lock exists before the directory: a directory without a lock file is
        # never a live owner's.
        lock_fd = os.open(self.tmp_root / f"{owner}{_LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            directory = self.tmp_root / owner
            directory.mkdir(mode=0o750)
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        return str(directory)

    def release(self) -> None:
        """Remove this store's directory and lock (only when no write is in flight)."""
        name, lock_fd = self._dir, self._lock_fd
        self._dir = self._lock_fd = None
        if name is None or lock_fd is None:
            return
        directory = Path(name)
        with contextlib.suppress(OSError):
            for entry in directory.iterdir():
                entry.unlink()
            directory.rmdir()
        with contextlib.suppress(OSError):
            (self.tmp_root / f"{directory.name}{_LOCK_SUFFIX}").unlink()
        os.close(lock_fd)


def recover_abandoned(tmp_root: Path, complete: Callable[[Path], None]) -> None:
    """Hand every file of every abandoned temp directory to `complete`, then remove it.

    `complete(path)` moves a finished body into place or deletes the file. Directories
    whose owner still holds its lock are left alone; so are files directly in `tmp_root`
    other than lock files (left by versions that wrote there; they are removed).
    """
    for entry in sorted(tmp_root.iterdir()):
        if entry.name.endswith(_LOCK_SUFFIX):
            _recover_owner(entry, complete)
        elif entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
        elif entry.is_dir() and not (tmp_root / f"{entry.name}{_LOCK_SUFFIX}").exists():
            _recover_directory(entry, complete)


def _recover_owner(lock_path: Path, complete: Callable[[Path], None]) -> None:
    try:
        lock_fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:  # recovered by someone else meanwhile
        return
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # the owner is alive
            return
        directory = lock_path.with_name(lock_path.name[: -len(_LOCK_SUFFIX)])
        if directory.is_dir():
            _recover_directory(directory, complete)
        with contextlib.suppress(OSError):
            lock_path.unlink()
    finally:
        os.close(lock_fd)


def _recover_directory(directory: Path, complete: Callable[[Path], None]) -> None:
    for path in sorted(directory.iterdir()):
        complete(path)
    with contextlib.suppress(OSError):
        directory.rmdir()
