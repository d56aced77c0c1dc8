"""Content-addressed message bodies: one file per distinct body, named by its SHA-256 digest.

A body lives at `<root>/ab/abcd…`: the first two hex digits pick one of 256 shard
directories, all created (and made durable) when the store opens, so delivering never
has to create and fsync a directory. Two levels (65,536 directories) would mean a new
directory, and one more journal commit, for nearly every one of the first tens of
thousands of messages; 256 directories of a few thousand entries each are no burden
for ext4 or XFS. Writing goes to a fresh file under `<root>/tmp/<owner>/` (same filesystem; one
directory per open store, see `poczta.store.sqlite.blob_temp`),
which is written, fsync'd and atomically renamed into place; the shard directory is
then fsync'd so that the new name survives a crash. Identical content is stored once.

The directory fsync can be done per write (`put(..., sync_dir=True)`) or left to the
caller, who collects the directories of a batch and syncs each once (`sync_dirs`)
before committing the rows that refer to them.

The delivery hot path splits a write in two so that no thread hand-off is needed per
message: `stage` (on the event loop: only fast page-cache syscalls, the temp file's fd
kept open) and, on the store's writer thread for a whole group commit, either
`commit_staged` or `place_staged` followed by `flush`. A final name always holds
complete content, so "the file exists" is a safe dedup test; a row that reuses a body
placed by a batch not yet flushed is answered only after a flush, which covers that body
too. Every method is synchronous and meant to run in a worker thread; OS errors become
`StoreUnavailable`.

How a group commit makes its files durable (`sync`):

``"filesystem"`` (the default on Linux)
    The store's writer renames the batch's temp files into place (`place_staged`),
    commits the rows, and then one ``syncfs(2)`` (`flush`) makes bodies, names and rows
    durable together (see `poczta.store.sqlite.writer`, and `recovery` for a
    machine crash in the middle of it). A temp file left by a crash is completed by the
    next store to open (`poczta.store.sqlite.blob_temp`). One flush per batch instead of one
    fsync per file and per directory: on ext4 a batch of 10 bodies waits ~0.9 ms instead
    of ~3.6 ms and spends a third of the CPU. syncfs also
    flushes whatever else is dirty on that filesystem, so the data directory should not
    share a filesystem with heavy unrelated writers (then choose ``"file"``). Since
    Linux 5.8 syncfs reports writeback errors, which fail the batch.
``"file"``
    fsync each temp file, rename, fsync each shard directory touched once. Also the
    fallback where syncfs does not exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from poczta.store.base import NotFound, StoreUnavailable
from poczta.store.sqlite.blob_temp import TempArea, recover_abandoned

__all__ = ["SYNC_METHODS", "BlobFiles", "StagedBlob", "blob_digest"]

_HEX = frozenset("0123456789abcdef")
SYNC_METHODS = ("filesystem", "file")
DIR_MODE = 0o750  # bodies are the users' mail: never readable by others


def _load_syncfs() -> Callable[[int], None] | None:
    """libc's syncfs(2) as a function raising OSError, or None where there is none.

    The standard library has no binding for it; ctypes releases the GIL during the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if function(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    return syncfs


_SYNCFS = _load_syncfs()


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or not _HEX.issuperset(digest):
        raise NotFound(f"not a blob digest: {digest!r}")


def _read_to_end(fd: int, size_hint: int | None) -> bytes:
    """The rest of a regular file. With the right `size_hint`, one read: asking one octet
    more than expected, a shorter answer is the end (a regular file gives less than asked
    only there); otherwise read on until a read gives nothing."""
    want = size_hint + 1 if size_hint is not None else os.fstat(fd).st_size + 1
    first = os.read(fd, want)
    if len(first) < want:
        return first
    pieces = [first]
    while piece := os.read(fd, 1 << 16):
        pieces.append(piece)
    return b"".join(pieces)


def blob_digest(data: bytes) -> str:
    """The name a body is stored under: its SHA-256 digest in lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StagedBlob:
    """A body written to a temp file but not yet durable (fd still open), or already stored."""

    digest: str
    final: str  # strings, not Paths: this is on every delivery's path
    fd: int | None = None  # None: already stored, or written and closed (see `detach`)
    temp: str | None = None  # None: the body was already stored

    def detach(self) -> None:
        """Close the temp file, for another process to place it ("filesystem" method)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class BlobFiles:
    """Message bodies as files named by digest under one root directory."""

    def __init__(self, root: Path | str, *, sync: str = "filesystem") -> None:
        if sync not in SYNC_METHODS:
            raise ValueError(f"unknown sync method {sync!r}")
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._syncfs = _SYNCFS if sync == "filesystem" else None
        self._known_dirs: set[Path] = set()
        self._root_name = str(self.root)
        self._temp = TempArea(self._tmp)
        self._root_fd: int | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            self._tmp.mkdir(exist_ok=True, mode=DIR_MODE)
            self._create_shards()
            self.recover_temporary()
        except OSError as exc:
            raise StoreUnavailable(f"blob directory unusable: {exc}") from exc

    def close(self) -> None:
        """Remove this store's temp directory (when no write is in flight)."""
        self._temp.release()
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    def _create_shards(self) -> None:
        created = False
        for first in range(256):
            shard = self.root / f"{first:02x}"
            if not shard.is_dir():
                shard.mkdir(exist_ok=True, mode=DIR_MODE)
                created = True
            self._known_dirs.add(shard)
        if created:
            _fsync_dir(self.root)

    def path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / digest[:2] / digest

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

    def final_name(self, digest: str) -> str:
        """Where the body `digest` lives (a string: this is on every delivery's path)."""
        return f"{self._root_name}/{digest[:2]}/{digest}"

    def stage(self, data: bytes) -> StagedBlob:
        """Write `data` to a temp file without fsync (cheap enough for the event loop)."""
        digest = blob_digest(data)
        final = self.final_name(digest)
        if os.path.exists(final):
            return StagedBlob(digest, final)
        try:
            temp = self._temp.new_path(digest)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except OSError as exc:
            raise StoreUnavailable(f"cannot store message body: {exc}") from exc
        staged = StagedBlob(digest, final, fd, temp)
        try:
            _write_all(fd, data)
        except OSError as exc:
            self.discard_staged([staged])
            raise StoreUnavailable(f"cannot store message body: {exc}") from exc
        return staged

    @property
    def sync_method(self) -> str:
        return "file" if self._syncfs is None else "filesystem"

    def commit_staged(self, staged: Iterable[StagedBlob]) -> None:
        """Make staged bodies durable under their final names, file by file (the "file"
        method's group commit); `StoreUnavailable` on failure.

        Bodies found already stored count too: their directory is synced again, since
        another worker may have renamed the file without having synced it yet.
        """
        items = list(staged)
        if not items:
            return
        pending = [item for item in items if item.fd is not None]
        directories = {Path(item.final).parent for item in items if item.fd is None}
        try:
            # One after another: after the first, each fsync finds little left to flush,
            # and fanning them out to threads measured slower (hand-offs, GIL churn).
            for item in pending:
                assert item.fd is not None
                os.fsync(item.fd)
            for item in pending:
                assert item.fd is not None and item.temp is not None
                os.close(item.fd)
                item.fd = None
                shard = Path(item.final).parent
                self._ensure_dir(shard)
                os.replace(item.temp, item.final)
                item.temp = None
                directories.add(shard)
        except OSError as exc:
            self.discard_staged(pending)
            raise StoreUnavailable(f"cannot store message bodies: {exc}") from exc
        self.sync_dirs(directories)

    def place_staged(self, staged: Iterable[StagedBlob]) -> None:
        """Rename staged bodies to their final names without flushing anything (the
        "filesystem" method: the caller commits their rows, then calls `flush`)."""
        pending = [item for item in staged if item.temp is not None]
        try:
            for item in pending:
                assert item.temp is not None
                if item.fd is not None:  # None: written and closed by another process
                    os.close(item.fd)
                    item.fd = None
                os.replace(item.temp, item.final)  # shard directories exist from the start
                item.temp = None
        except OSError as exc:
            self.discard_staged(pending)
            raise StoreUnavailable(f"cannot store message bodies: {exc}") from exc

    def flush(self) -> None:
        """Flush the whole filesystem of the store ("filesystem" method); `StoreUnavailable`."""
        if self._syncfs is None:
            raise StoreUnavailable("this blob store does not flush its filesystem")
        try:
            self._sync_root(self._syncfs)
        except OSError as exc:
            raise StoreUnavailable(f"cannot flush the mail store to disk: {exc}") from exc

    def _sync_root(self, syncfs: Callable[[int], None]) -> None:
        if self._root_fd is None:  # opened on first use: after any fork, kept until close
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        syncfs(self._root_fd)

    def discard_staged(self, staged: Iterable[StagedBlob]) -> None:
        """Close and remove temp files of bodies that will not be committed."""
        for item in staged:
            if item.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(item.fd)
                item.fd = None
            if item.temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(item.temp)
                item.temp = None

    def _write_new(self, data: bytes, final: Path) -> None:
        temp = Path(self._temp.new_path(final.name))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            _write_all(fd, data)
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
            parent.mkdir(exist_ok=True, mode=DIR_MODE)
            _fsync_dir(self.root)
        if not directory.is_dir():
            directory.mkdir(exist_ok=True, mode=DIR_MODE)
            _fsync_dir(parent)
        self._known_dirs.add(directory)

    def sync_dirs(self, directories: Iterable[Path]) -> None:
        """fsync each directory once (or the filesystem once); `StoreUnavailable` on failure."""
        unique = set(directories)
        try:
            if self._syncfs is not None and len(unique) > 1:
                self._sync_root(self._syncfs)
                return
            for directory in unique:
                _fsync_dir(directory)
        except OSError as exc:
            raise StoreUnavailable(f"cannot sync blob directory: {exc}") from exc

    def read(self, digest: str, size_hint: int | None = None) -> bytes:
        """The body `digest`; `size_hint`, its size when known, saves looking at the file.

        A plain name and os.open/os.read: pathlib, or a buffered file object and its
        read to the end (an fstat and a read more), cost more than the read of a small
        body itself."""
        _check_digest(digest)
        try:
            fd = os.open(self.final_name(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise NotFound(f"no blob {digest}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot read message body: {exc}") from exc
        try:
            return _read_to_end(fd, size_hint)
        except OSError as exc:
            raise StoreUnavailable(f"cannot read message body: {exc}") from exc
        finally:
            os.close(fd)

    def delete(self, digest: str) -> None:
        """Remove a body nothing refers to any more; a missing file is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def delete_unless_newer(self, digest: str, cutoff: float) -> bool:
        """Remove a released body unless its file was written after `cutoff` (then it may
        have just been placed again by a delivery); True when it is gone."""
        path = self.path(digest)
        try:
            if path.stat().st_mtime >= cutoff:
                return False
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreUnavailable(f"cannot remove message body: {exc}") from exc
        return True

    def digests(self) -> Iterator[str]:
        """Every stored digest (for consistency checks and garbage sweeps)."""
        for shard in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for entry in sorted(shard.iterdir()):
                if len(entry.name) == 64:
                    yield entry.name

    def recover_temporary(self) -> None:
        """Finish or remove the temp files of stores that died (see `blob_temp`)."""
        touched: set[Path] = set()

        def complete(temp: Path) -> None:
            digest = temp.name.partition(".")[0]
            try:
                final = self.path(digest)
                data = temp.read_bytes()
                if blob_digest(data) == digest and not final.exists():
                    self._ensure_dir(final.parent)
                    os.replace(temp, final)
                    touched.add(final.parent)
                    return
            except (NotFound, OSError):
                pass
            with contextlib.suppress(OSError):
                temp.unlink()

        recover_abandoned(self._tmp, complete)
        self.sync_dirs(touched)
