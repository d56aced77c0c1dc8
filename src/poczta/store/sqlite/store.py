"""The embedded mail store: SQLite (WAL, synchronous=FULL) for metadata, files for bodies.

`SqliteStore` implements `MailStore`. Writes go to one writer thread that commits
waiting jobs together (group commit, see `writer`); reads run on a small pool
of reader threads, each with its own connection, so the event loop never blocks on
the database. A message body is staged on the event loop (written to a temp file, not
yet synced: only fast page-cache syscalls) and made durable by the writer thread
together with the rest of its batch (fsync, rename, directory fsync) right before the
COMMIT, so a delivery costs one thread hand-off. Measured alternatives: a pool of blob
threads syncing each body on arrival (two hand-offs per delivery, and far more GIL
contention), and running the batch's statements on the event loop with only the
fsyncs and COMMIT on a thread (cheaper for the store alone, slower with the SMTP
sessions sharing the loop).

`deliver`/`accept` return only when the body and the rows are durable. `accept`
stores local copies and the outbound queue entry for remote recipients in the same
commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poczta.message import ParsedMessage
from poczta.routing import RecipientRouting
from poczta.store.base import (
    Accepted,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
    MailboxChange,
    MailboxId,
    MailboxState,
    MessageMeta,
    MessageSummary,
    NewsAndFacts,
    Outbound,
    QuotaState,
    UserId,
)
from poczta.store.codec import encode_time, message_columns
from poczta.store.sqlite import imap, messages, quota
from poczta.store.sqlite.backfill import backfill_fetch_text, backfill_structures
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.bodies import SqliteBlobStore
from poczta.store.sqlite.change_poller import ChangePoller
from poczta.store.sqlite.committer import request_for
from poczta.store.sqlite.migrate import migrate
from poczta.store.sqlite.move import move_message_job
from poczta.store.sqlite.recovery import remove_rows_of_lost_bodies
from poczta.store.sqlite.store_accounts import SqliteAccountMethods
from poczta.store.sqlite.store_queue import SqliteQueueMethods
from poczta.store.sqlite.writer import connect, translate_error

if TYPE_CHECKING:
    from poczta.store.sqlite.greylist import SqliteGreylistStore
    from poczta.store.sqlite.limits import SqliteSharedLimits
    from poczta.store.sqlite.sending import SqliteSendingStore

__all__ = ["SqliteStore", "prepare_files"]

_SWEEP_AFTER_OPEN = 60.0  # seconds; a short-lived store (the command line) never sweeps


def prepare_files(path: Path, blob_dir: Path, blob_sync: str) -> BlobFiles:
    """Create or migrate the database, open the blob directory and clean up after a crash
    (blocking: run it in a thread)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path)
        try:
            migrate(conn)
            blobs = BlobFiles(blob_dir, sync=blob_sync)
            conn.execute("PRAGMA busy_timeout = 0")  # begin_immediate polls
            remove_rows_of_lost_bodies(conn, blobs)
            backfill_structures(conn, blobs)
            backfill_fetch_text(conn)
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        raise translate_error(exc) from exc
    return blobs


INLINE_FETCH = 32  # messages a FETCH reads on the event loop (see `inline`)


class SqliteStore(SqliteAccountMethods, SqliteQueueMethods, RecipientRouting):
    """`MailStore` on one SQLite database file and one blob directory (`resolve_recipient`
    is `RecipientRouting`'s, over `find_addresses`; `blobs` is a `SqliteBlobStore`).

    The plumbing is `SqliteStoreCore`'s; the account and queue calls are
    `SqliteAccountMethods`' and `SqliteQueueMethods`'; mailboxes, messages and what IMAP
    asks of them are here."""

    @classmethod
    async def open(
        cls,
        db_path: Path | str,
        blob_dir: Path | str,
        *,
        blob_sync: str = "filesystem",
        **options: Any,
    ) -> SqliteStore:
        """Open (creating if needed) the database and blob directory; apply migrations.

        `blob_sync` is how batches of bodies are flushed (see `BlobFiles`).
        """
        path = Path(db_path)
        files = await asyncio.to_thread(prepare_files, path, Path(blob_dir), blob_sync)
        store = cls(path, files, **options)
        store._blobs.sweep_later(_SWEEP_AFTER_OPEN)  # what a store that died left released
        return store

    async def close(self) -> None:
        """Finish queued writes, then release threads and connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._sides.close()
        await self._blobs.stop_sweeping()
        if self._poller is not None:
            await self._poller.close()
        self._small.close()
        if self._committer is not None:
            self._committer.close()
        await asyncio.to_thread(self._writer.close)
        self._blobs.close()
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    @property
    def blobs(self) -> SqliteBlobStore:
        return self._blobs

    async def greylist_store(self) -> SqliteGreylistStore:
        from poczta.store.sqlite.greylist import SqliteGreylistStore  # the rules import DKIM, DNS

        self._check_open()
        return await self._sides.get(SqliteGreylistStore)

    async def sending_store(self) -> SqliteSendingStore:
        from poczta.store.sqlite.sending import SqliteSendingStore

        self._check_open()
        return await self._sides.get(SqliteSendingStore)

    async def shared_limits(self) -> SqliteSharedLimits:
        from poczta.store.sqlite.limits import SqliteSharedLimits

        self._check_open()
        return await self._sides.get(SqliteSharedLimits)

    @property
    def stats(self) -> tuple[int, int]:
        """(batches committed, jobs run) by the writer since opening."""
        return self._writer.batches, self._writer.jobs

    # --- mailboxes ---------------------------------------------------------

    async def list_mailboxes(self, user_id: UserId) -> list[MailboxState]:
        return await self._read(lambda c: messages.list_mailboxes(c, user_id))

    async def get_mailbox(self, user_id: UserId, name: str) -> MailboxState:
        self._check_open()  # one row by its key: on the loop (SELECT, STATUS, APPEND)
        return await self._small.read(lambda c: messages.get_mailbox(c, user_id, name))

    async def create_mailbox(
        self, user_id: UserId, name: str, special_use: str | None = None
    ) -> MailboxState:
        state: MailboxState = await self._write(
            messages.create_mailbox_job(user_id, name, special_use)
        )
        return state

    async def delete_mailbox(self, user_id: UserId, name: str) -> None:
        await self._write_releasing(messages.delete_mailbox_job(user_id, name))

    async def rename_mailbox(self, user_id: UserId, old: str, new: str) -> None:
        await self._write(messages.rename_mailbox_job(user_id, old, new))

    # --- messages ------------------------------------------------------------

    async def deliver(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
    ) -> list[Delivered]:
        accepted = await self.accept(data, parsed, internal_date, targets)
        return list(accepted.delivered)

    async def accept(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
        outbound: Outbound | None = None,
    ) -> Accepted:
        """Store the body, then the local copies and the queue entry in one commit.

        The body is staged here (written, not yet fsync'd) and made durable by the writer
        thread together with the rest of its group commit, so a delivery costs one thread
        hand-off.
        """
        self._check_open()
        staged = self._files.stage(data)
        columns, date = message_columns(parsed), encode_time(internal_date)
        client = await self._committer.client() if self._committer is not None else None
        if client is not None:
            try:
                return await client.deliver(
                    request_for(staged, data, columns, date, targets, outbound)
                )
            finally:
                self._changed()
        job = messages.deliver_job(
            staged.digest,
            len(data),
            data,
            columns,
            date,
            tuple(targets),
            outbound,
        )
        try:
            accepted: Accepted = await self._writer.submit(job, blob=staged)
        finally:
            self._changed()
        return accepted

    async def fetch_meta(
        self, mailbox_id: MailboxId, uids: Sequence[int] | None = None, *, kept_only: bool = False
    ) -> list[MessageMeta]:
        def read(conn: sqlite3.Connection) -> list[MessageMeta]:
            return messages.fetch_meta(conn, mailbox_id, uids, kept_only)

        if uids is not None and len(uids) <= INLINE_FETCH:
            return await self._small.read(read)
        return await self._read(read)

    async def fetch_meta_with_bodies(
        self, mailbox_id: MailboxId, uids: Sequence[int], *, kept_only: bool = False
    ) -> tuple[list[MessageMeta], dict[str, bytes]]:
        # bodies are files: read apart
        return await self.fetch_meta(mailbox_id, uids, kept_only=kept_only), {}

    async def fetch_summaries(self, mailbox_id: MailboxId) -> list[MessageSummary]:
        return await self._read(lambda c: messages.fetch_summaries(c, mailbox_id))

    async def read_message(self, mailbox_id: MailboxId, uid: int) -> bytes:
        digest = await self._read(lambda c: messages.message_digest(c, mailbox_id, uid))
        return await self._blobs.read(digest)

    async def set_flags(
        self,
        mailbox_id: MailboxId,
        uids: Sequence[int],
        flags: Sequence[str] | frozenset[str],
        mode: FlagMode,
        unchangedsince: int | None = None,
    ) -> FlagResult:
        job = messages.set_flags_job(mailbox_id, uids, frozenset(flags), mode, unchangedsince)
        result: FlagResult = await self._write(job)
        return result

    async def expunge(self, mailbox_id: MailboxId, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the given messages (all flagged \\Deleted when `uids` is None)."""
        gone: list[int] = await self._write_releasing(messages.expunge_job(mailbox_id, uids))
        return gone

    async def vanished(self, mailbox_id: MailboxId, since_modseq: int) -> list[int]:
        return await self._small.bounded(
            lambda c, limit: messages.vanished(c, mailbox_id, since_modseq, limit)
        )

    async def mailbox_version(self, mailbox_id: MailboxId) -> MailboxChange:
        self._check_open()
        return await self._small.mailbox_version(
            mailbox_id, lambda c: imap.mailbox_version(c, mailbox_id)
        )

    async def changed_since(
        self, mailbox_id: MailboxId, modseq: int
    ) -> list[tuple[int, frozenset[str], int]]:
        if modseq == 0:  # every message: a read for a thread
            return await self._read(lambda c: imap.changed_since(c, mailbox_id, modseq))
        return await self._small.bounded(
            lambda c, limit: imap.changed_since(c, mailbox_id, modseq, limit)
        )

    async def news_since(
        self, mailbox_id: MailboxId, modseq: int
    ) -> tuple[MailboxChange, list[tuple[int, frozenset[str], int]]]:
        version = await self.mailbox_version(mailbox_id)  # from memory when nothing moved
        if version.highestmodseq <= modseq:
            return version, []
        return version, await self.changed_since(mailbox_id, modseq)

    async def news_and_facts(
        self, mailbox_id: MailboxId, modseq: int, uids: Sequence[int], *, kept_only: bool = False
    ) -> NewsAndFacts:
        # two local reads: nothing to gain by joining them
        version, changes = await self.news_since(mailbox_id, modseq)
        metas = await self.fetch_meta(mailbox_id, uids, kept_only=kept_only)
        return NewsAndFacts(version, changes, metas, {})

    async def mailbox_counts(self, mailbox_id: MailboxId) -> tuple[int, int, int, int]:
        return await self._read(lambda c: imap.mailbox_counts(c, mailbox_id))

    async def deleted_storage(self, mailbox_id: MailboxId) -> int:
        return await self._read(lambda c: imap.deleted_storage(c, mailbox_id))

    async def copy_messages(
        self,
        user_id: UserId,
        source: MailboxId,
        uids: Sequence[int],
        target: str,
        *,
        move: bool = False,
    ) -> tuple[int, list[tuple[int, int]]]:
        result: tuple[int, list[tuple[int, int]]] = await self._write(
            imap.copy_job(user_id, source, uids, target, move)
        )
        return result

    async def claim_recent(self, mailbox_id: MailboxId, up_to: int | None = None) -> int:
        # The mark only moves up: when it is already at the target, nothing is claimed
        # and a read answers what the write would have (no commit for a plain SELECT).
        mark, uidnext = await self._small.read(lambda c: imap.recent_state(c, mailbox_id))
        if mark >= (uidnext if up_to is None else up_to):
            return mark
        first: int = await self._write(imap.claim_recent_job(mailbox_id, up_to))
        return first

    async def recent_mark(self, mailbox_id: MailboxId) -> int:
        mark, _ = await self._small.read(lambda c: imap.recent_state(c, mailbox_id))
        return mark

    async def subscriptions(self, user_id: UserId) -> list[str]:
        return await self._read(lambda c: imap.subscriptions(c, user_id))

    async def subscribe(self, user_id: UserId, name: str) -> None:
        await self._write(imap.subscribe_job(user_id, name))

    async def unsubscribe(self, user_id: UserId, name: str) -> bool:
        removed: bool = await self._write(imap.unsubscribe_job(user_id, name))
        return removed

    async def messages_size(self, mailbox_id: MailboxId, uids: Sequence[int]) -> tuple[int, int]:
        return await self._read(lambda c: quota.messages_size(c, mailbox_id, uids))

    async def quota_states(self, user_ids: Sequence[UserId]) -> dict[UserId, QuotaState]:
        return await self._read(lambda c: quota.quota_states(c, user_ids))

    async def set_quota(self, user_id: UserId, changes: Mapping[str, int | None]) -> None:
        await self._write(quota.set_quota_job(user_id, dict(changes)))

    def changes(
        self, mailbox_id: MailboxId, since: MailboxChange | None = None
    ) -> AsyncIterator[MailboxChange]:
        self._check_open()
        if self._poller is None:
            self._poller = ChangePoller(self.db_path, self._hub, self._read)
            self._poller.start()
        return self._hub.changes(mailbox_id, since)

    async def move_message(
        self, user_id: UserId, source_mailbox: str, uid: int, target_mailbox: str
    ) -> int:
        job = move_message_job(user_id, source_mailbox, uid, target_mailbox)
        new_uid: int = await self._write(job)
        return new_uid
