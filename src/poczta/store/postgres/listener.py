"""How the PostgreSQL store learns of changes to watched mailboxes, made by any process or node.

Every write that changes a mailbox notifies `mailboxes.CHANGES_CHANNEL` with the
mailbox's id in its transaction, so the notification arrives when, and only if, it
commits. Each store instance keeps one connection of its own that LISTENs, opened when
the first watcher comes (`MailboxListener.start`). The ids that arrive are gathered for
a moment, then the states of those that are watched are read in one query and handed to
the `ChangeHub`, which wakes their watchers. When the listening connection is lost, it
is made again (after a pause, repeated until the server answers), and every watched
mailbox is read once more, so a change committed while nobody listened still wakes its
watchers.

A connection can also stay open while the server behind it no longer answers (a host
that vanished, a network that drops packets, a failover that kept the address): nothing
would ever arrive on it, and the kernel may take hours to notice. So every `keepalive`
seconds the listener asks the server a trivial question; no answer within `timeout`
seconds counts as a lost connection.

The other way round, a node that stops (frozen, suspended, its host swapping) keeps its
listening session open without reading it, and every notification of every node waits
in the server's queue for it; once that queue is full, each write that notifies fails.
So the listening session carries an `idle_session_timeout` of `IDLE_LIMIT` keepalives
(PostgreSQL 14 and later): the server ends it when its questions stop. The node, if it
wakes, finds its connection lost and listens again as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from poczta.store.base import MailboxChange, MailboxId, StoreError
from poczta.store.changes import ChangeHub
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL

__all__ = ["IDLE_LIMIT", "KEEPALIVE", "LISTEN_TIMEOUT", "MailboxListener"]

log = logging.getLogger("poczta.store")

Connect = Callable[[], Awaitable[Any]]  # a new asyncpg connection
ReadStates = Callable[[Collection[MailboxId]], Awaitable[dict[MailboxId, MailboxChange]]]

_GATHER = 0.005  # seconds to let a burst of notifications arrive before reading
_RETRY = 1.0  # seconds between attempts to listen again after the connection was lost
LISTEN_TIMEOUT = 10.0  # seconds to connect and LISTEN (or answer a ping) before trying again
KEEPALIVE = 15.0  # seconds between the questions whether the server is there
IDLE_LIMIT = 4  # keepalives without a question before the server ends the session


class MailboxListener:
    """The LISTEN connection of one store instance and the task that feeds its hub."""

    def __init__(
        self,
        hub: ChangeHub,
        connect: Connect,
        read_states: ReadStates,
        *,
        keepalive: float = KEEPALIVE,
        timeout: float = LISTEN_TIMEOUT,
    ) -> None:
        self._hub = hub
        self._connect = connect
        self._read_states = read_states
        self._keepalive = keepalive
        self._timeout = timeout
        self._pending: set[MailboxId] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._lost = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._pending.add(MailboxId(int(payload)))
            self._wake.set()

    def _connection_lost(self, conn: Any) -> None:
        if conn is self._conn:  # not one dropped before
            self._lost.set()

    async def _listen(self) -> None:
        self._conn = await self._connect()
        self._conn.add_termination_listener(self._connection_lost)
        if self._conn.get_server_version().major >= 14:
            idle = max(1000, round(IDLE_LIMIT * self._keepalive * 1000))  # milliseconds
            await self._conn.execute(f"SET idle_session_timeout = {idle}")
        await self._conn.add_listener(CHANGES_CHANNEL, self._notified)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), _RETRY)
            if not conn.is_closed():
                conn.terminate()

    async def _run(self) -> None:
        while True:
            self._lost.clear()
            try:
                await asyncio.wait_for(self._listen(), self._timeout)
            except Exception as exc:  # unreachable, refused, timed out: try again
                log.warning("cannot listen for mailbox changes: %s", exc)
                await self._drop()
                await asyncio.sleep(_RETRY)
                continue
            self._pending.update(self._hub.watched)  # what changed while nobody listened
            self._wake.set()
            await self._feed()
            await self._drop()

    async def _feed(self) -> None:
        """Report changes until the connection is lost."""
        loop = asyncio.get_running_loop()
        lost = asyncio.ensure_future(self._lost.wait())
        ping_at = loop.time() + self._keepalive
        try:
            while not self._lost.is_set():
                woken = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(
                    {woken, lost},
                    timeout=max(0.0, ping_at - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                woken.cancel()
                if loop.time() >= ping_at:  # also while notifications keep coming
                    await self._ping()
                    ping_at = loop.time() + self._keepalive
                    continue
                if not done:
                    continue
                if not self._wake.is_set():
                    continue
                await asyncio.sleep(_GATHER)
                self._wake.clear()
                await self._report()
        finally:
            lost.cancel()

    async def _ping(self) -> None:
        """Ask the server whether it is still there; no answer in time: the connection is lost."""
        try:
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), self._timeout)
        except Exception as exc:  # timed out, or the connection broke meanwhile
            log.warning("the listening connection does not answer, listening again: %r", exc)
            self._lost.set()

    async def _report(self) -> None:
        watched = set(self._hub.watched)
        changed, self._pending = self._pending & watched, set()
        if not changed:
            return
        try:
            states = await self._read_states(changed)
        except StoreError as exc:  # read again once the database answers
            log.warning("cannot read mailbox changes: %s", exc)
            self._pending |= changed
            self._lost.set()
            return
        self._hub.changed(states)
        self._hub.gone([m for m in changed if m not in states])
