"""How the SQLite store notices changes to watched mailboxes, made by any process.

SQLite has no notifications between processes, but `PRAGMA data_version` tells a
connection, cheaply, whether any other connection has committed since it last asked.
While anyone watches a mailbox (`poczta.store.changes`), the poller asks that every
`interval` seconds (and at once after a write of this process), and when the answer
moved, reads the state of every watched mailbox in one query and reports it to the hub.
A quiet database costs one pragma per interval per process; a busy one, one indexed
query of the watched mailboxes per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import TypeVar

from poczta.store.base import MailboxChange, MailboxId, StoreError
from poczta.store.changes import ChangeHub
from poczta.store.sqlite.writer import connect

__all__ = ["ChangePoller", "mailbox_changes"]

log = logging.getLogger("poczta.store")
T = TypeVar("T")
Read = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]


def mailbox_changes(
    conn: sqlite3.Connection, ids: Collection[MailboxId]
) -> dict[MailboxId, MailboxChange]:
    """The current state of each mailbox of `ids` that still exists."""
    rows = conn.execute(
        "SELECT id, highestmodseq, uidnext, messages"
        " FROM mailboxes WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    )
    return {
        MailboxId(row[0]): MailboxChange(MailboxId(row[0]), row[1], row[2], row[3]) for row in rows
    }


class ChangePoller:
    """The task that probes the database for a `ChangeHub` while it has watchers."""

    def __init__(
        self,
        path: Path,
        hub: ChangeHub,
        read: Read[dict[MailboxId, MailboxChange]],
        interval: float = 0.1,
    ) -> None:
        self._hub = hub
        self._read = read
        self._interval = interval
        self._conn = connect(path, readonly=True)
        self._version = self._data_version()
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _data_version(self) -> int:
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def poke(self) -> None:
        """This process wrote: probe now rather than at the next interval."""
        if self._hub:
            self._poked.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._conn.close()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                # not wait_for: on Python 3.11 it loses a cancel that comes as the event is set
                async with asyncio.timeout(self._interval):
                    await self._poked.wait()
            self._poked.clear()
            if not self._hub:
                continue
            try:
                await self._probe()
            except (StoreError, sqlite3.Error) as exc:  # try again at the next interval
                log.warning("cannot read mailbox changes: %s", exc)

    async def _probe(self) -> None:
        version = self._data_version()  # a read of shared memory: fine on the loop
        if version == self._version:
            return
        self._version = version
        watched = list(self._hub.watched)
        states = await self._read(lambda conn: mailbox_changes(conn, watched))
        self._hub.changed(states)
        self._hub.gone([m for m in watched if m not in states])
