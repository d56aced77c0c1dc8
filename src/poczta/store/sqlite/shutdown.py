"""Unclean machine shutdowns: moving UIDNEXT and HIGHESTMODSEQ past anything handed out.

With the "filesystem" sync method a batch's rows are committed and visible to readers
about a millisecond before the flush that makes them durable (`poczta.store.sqlite.writer`).
An IMAP client may see a new UID or MODSEQ in that window; if the machine then loses
power, the rows are gone and the store would hand out the same numbers again, for other
messages: the client's cache would then show the wrong message under a UID it knows.

So every process that writes holds a shared `flock` on `<database>.running`, a file that
says whether the store was shut down cleanly. The first writer to open it (no one else
holds the lock) reads it: "clean" from the last writer to close, or "running BOOT" from
a writer that never closed, where BOOT is the kernel's boot id at the time. Only a
different boot id means the machine went down with the store open; a process killed
with -9 loses nothing the kernel had, and its boot id is the current one. After an
unclean shutdown every mailbox's UIDNEXT and HIGHESTMODSEQ move forward by more than
could have been handed out in the lost window (`MARGIN`, plus the user's message count,
which bounds one COPY or MOVE), in a durable commit, before anyone reads or writes.
The last writer to close (it gets the lock exclusively) writes "clean".

Where the boot id is unknown (not Linux), any shutdown without "clean" counts as
unclean.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from pathlib import Path

__all__ = ["MARGIN", "ShutdownMarker", "boot_id", "skip_lost_numbers"]

log = logging.getLogger("poczta.store")

MARGIN = 100_000  # UIDs / MODSEQs per mailbox beyond any batch's (each job takes a few)
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """The kernel's id of this boot, or "" where there is none."""
    try:
        return _BOOT_ID.read_text("ascii").strip()
    except OSError:
        return ""


def skip_lost_numbers(conn: sqlite3.Connection) -> int:
    """Move every mailbox's UIDNEXT and HIGHESTMODSEQ past the lost window; return how
    many mailboxes moved. Commits with a full sync."""
    (synchronous,) = conn.execute("PRAGMA synchronous").fetchone()
    (busy,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 30000")  # an admin command may hold the lock
    try:
        conn.execute("BEGIN IMMEDIATE")
        with conn:
            cursor = conn.execute(
                "UPDATE mailboxes SET uidnext = uidnext + ?1 + counts.n,"
                " highestmodseq = highestmodseq + ?1 + counts.n"
                " FROM (SELECT mailboxes.user_id AS user_id, count(messages.uid) AS n"
                "       FROM mailboxes LEFT JOIN messages ON messages.mailbox_id = mailboxes.id"
                "       GROUP BY mailboxes.user_id) AS counts"
                " WHERE counts.user_id = mailboxes.user_id",
                (MARGIN,),
            )
            return cursor.rowcount
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy)}")
        conn.execute(f"PRAGMA synchronous = {int(synchronous)}")


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShutdownMarker:
    """A writer's hold on `<database>.running` (see the module docstring)."""

    def __init__(self, database: Path, conn: sqlite3.Connection, boot: str | None = None) -> None:
        self._path = Path(f"{database}.running")
        self._boot = boot_id() if boot is None else boot
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            _fsync_directory(self._path.parent)  # the marker must survive what it marks
        except FileExistsError:
            self._fd = os.open(self._path, os.O_RDWR)
        try:
            self._open(conn)
        except BaseException:
            os.close(self._fd)
            raise

    def _open(self, conn: sqlite3.Connection) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # other writers are running: the check is done
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            return
        state = os.pread(self._fd, 200, 0).decode("ascii", "replace").split()
        if state and state != ["clean"] and (not self._boot or state[1:] != [self._boot]):
            moved = skip_lost_numbers(conn)
            log.warning(
                "the mail store was not shut down cleanly (machine restarted): moved UIDNEXT"
                " and HIGHESTMODSEQ of %d mailboxes past any number handed out before",
                moved,
            )
        self._write(f"running {self._boot}\n")
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def _write(self, text: str) -> None:
        data = text.encode("ascii")
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)

    def close(self) -> None:
        """Release the hold; the last writer marks the store as shut down cleanly."""
        if self._fd < 0:
            return
        try:
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._write("clean\n")
        except OSError as exc:
            log.warning("cannot mark the mail store as shut down cleanly: %s", exc)
        finally:
            os.close(self._fd)
            self._fd = -1
