"""Change notification for selected mailboxes: who watches which mailbox, and waking them.

An IMAP session with a mailbox selected (IDLE above all) must learn of every change to
it, whichever process made it: a delivery committed by the committer or another worker,
an APPEND, STORE or EXPUNGE in any session. `ChangeHub` keeps the watchers of one store
instance and wakes those whose mailbox has changed; it knows nothing of how a backend
finds out. The SQLite store probes it (`poczta.store.sqlite.change_poller`: a cheap check of
the database's version a few times a second while anyone watches, then one query for
the watched mailboxes); a backend with push notification (PostgreSQL's LISTEN/NOTIFY)
calls `changed` directly. A change is reported as the mailbox's new state; the watcher
then asks the store what exactly changed (new UIDs, flags by MODSEQ, VANISHED).

Wake-ups coalesce: a watcher that was busy sees only the latest state, never a queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection

from poczta.store.base import MailboxChange, MailboxId

__all__ = ["ChangeHub"]


class _Watch:
    __slots__ = ("event", "latest")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.latest: MailboxChange | None = None


class ChangeHub:
    """The watchers of one store instance, by mailbox."""

    def __init__(self) -> None:
        self._watches: dict[MailboxId, set[_Watch]] = {}
        self._known: dict[MailboxId, int] = {}  # the last HIGHESTMODSEQ reported

    @property
    def watched(self) -> Collection[MailboxId]:
        return self._watches.keys()

    def __bool__(self) -> bool:
        return bool(self._watches)

    async def changes(
        self, mailbox_id: MailboxId, since: MailboxChange | None = None
    ) -> AsyncIterator[MailboxChange]:
        """Each new state of the mailbox from now on, until the caller stops iterating.

        `since` is the state the caller knows: a later one already reported is yielded at
        once (nothing that happened between the caller's read and its watch is missed
        as long as the caller passes what it read).
        """
        watch = _Watch()
        self._watches.setdefault(mailbox_id, set()).add(watch)
        known = self._known.get(mailbox_id)
        if since is not None:
            if known is None:
                self._known[mailbox_id] = since.highestmodseq
            elif known > since.highestmodseq:
                watch.latest = MailboxChange(mailbox_id, known, 0, 0)
                watch.event.set()
        try:
            while True:
                await watch.event.wait()
                watch.event.clear()
                latest = watch.latest
                if latest is not None:
                    yield latest
                    if not latest.exists:
                        return
        finally:
            watchers = self._watches.get(mailbox_id)
            if watchers is not None:
                watchers.discard(watch)
                if not watchers:
                    del self._watches[mailbox_id]
                    self._known.pop(mailbox_id, None)

    def changed(self, states: dict[MailboxId, MailboxChange]) -> None:
        """Report the current states of watched mailboxes; wake the watchers of those
        that changed since the last report."""
        for mailbox_id, state in states.items():
            watchers = self._watches.get(mailbox_id)
            if not watchers:
                continue
            previous = self._known.get(mailbox_id)
            if state.exists and previous is not None and state.highestmodseq <= previous:
                continue
            self._known[mailbox_id] = state.highestmodseq
            for watch in watchers:
                watch.latest = state
                watch.event.set()

    def gone(self, missing: Collection[MailboxId]) -> None:
        """Watched mailboxes that no longer exist."""
        self.changed({m: MailboxChange(m, 0, 0, 0, exists=False) for m in missing})
