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
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from poczta.message import ParsedMessage
from poczta.routing import RecipientRouting
from poczta.store.base import (
    Accepted,
    AddressEntry,
    CachedStsPolicy,
    ClaimLost,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
    MailboxChange,
    MailboxId,
    MailboxState,
    MessageMeta,
    MessageSummary,
    Outbound,
    QueueEntry,
    QueueId,
    QuotaState,
    RecipientAttempt,
    StoreUnavailable,
    UserId,
    UserRecord,
)
from poczta.store.changes import ChangeHub
from poczta.store.codec import encode_time, message_columns
from poczta.store.sqlite import accounts, blob_refs, imap, messages, mta_sts, queue, quota
from poczta.store.sqlite.backfill import backfill_fetch_text, backfill_structures
from poczta.store.sqlite.blobs import BlobFiles
from poczta.store.sqlite.bodies import SqliteBlobStore
from poczta.store.sqlite.change_poller import ChangePoller
from poczta.store.sqlite.committer import CommitterLink, request_for
from poczta.store.sqlite.inline import LoopReads
from poczta.store.sqlite.migrate import migrate
from poczta.store.sqlite.move import move_message_job
from poczta.store.sqlite.recovery import remove_rows_of_lost_bodies
from poczta.store.sqlite.side import SideStores
from poczta.store.sqlite.writer import Job, Writer, connect, translate_error

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


INLINE_READ_LIMIT = 256 * 1024
INLINE_FETCH = 32  # messages a FETCH reads on the event loop (see `inline`)

T = TypeVar("T")


class SqliteStore(RecipientRouting):
    """`MailStore` on one SQLite database file and one blob directory (`resolve_recipient`
    is `RecipientRouting`'s, over `find_addresses`; `blobs` is a `SqliteBlobStore`)."""

    def __init__(
        self,
        db_path: Path,
        files: BlobFiles,
        *,
        readers: int = 4,
        blob_threads: int = 2,  # blobs.put only; deliveries stage on the loop
        max_batch: int = 512,
        committer: str | None = None,
        blob_grace: float = blob_refs.DEFAULT_GRACE,
    ) -> None:
        self.db_path = db_path
        self._files = files
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="poczta-store-read")
        self._blobs = SqliteBlobStore(
            files,
            readers=self._readers,
            read_db=self._read,
            write_db=self._write,
            check_open=self._check_open,
            grace=blob_grace,
            put_threads=blob_threads,
        )
        # The writer fsyncs a batch's files one after another on its own thread: fanning
        # them out to a pool measured 20-25% slower (thread hand-offs and GIL churn per
        # file cost more than the parallel fsyncs save; after the first, each is cheap).
        self._writer = Writer(db_path, files, max_batch=max_batch)
        # Deliveries go to the committer process when one serves this database (several
        # workers; see `poczta.store.sqlite.committer`); it needs bodies flushed by filesystem.
        self._committer = (
            CommitterLink(committer)
            if committer is not None and files.sync_method == "filesystem"
            else None
        )
        self._hub = ChangeHub()
        self._poller: ChangePoller | None = None
        self._sides = SideStores(db_path)
        self._small = LoopReads(db_path, self._read)  # reads known to be small, on the loop
        self._closed = False

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

    # --- plumbing --------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.db_path, readonly=True)
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("mail store is closed")

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()

        def call() -> T:
            try:
                return fn(self._reader())
            except Exception as exc:
                raise translate_error(exc) from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._readers, call)
        except RuntimeError as exc:  # executor shut down under us
            raise StoreUnavailable("mail store is closed") from exc

    async def _write(self, job: Job, sync_dir: Path | None = None) -> Any:
        self._check_open()
        try:
            return await self._writer.submit(job, sync_dir)
        finally:
            self._changed()

    def _changed(self) -> None:
        """This process wrote: let the watchers of changed mailboxes know now."""
        if self._poller is not None:
            self._poller.poke()

    # --- released bodies --------------------------------------------------

    async def _write_releasing(self, job: Job) -> Any:
        """A write that may release bodies: sweep them once their grace period is over."""
        result = await self._write(job)
        self._blobs.sweep_later()
        return result

    # --- domains, users, aliases ----------------------------------------

    async def add_domain(self, domain: str) -> None:
        await self._write(accounts.add_domain_job(domain))

    async def remove_domain(self, domain: str, *, force: bool = False) -> None:
        await self._write_releasing(accounts.remove_domain_job(domain, force))

    async def list_domains(self) -> list[str]:
        return await self._read(accounts.list_domains)

    async def domain_exists(self, domain: str) -> bool:
        return await self._read(lambda c: accounts.domain_exists(c, domain))

    async def add_user(self, address: str, password_hash: str, scram: str) -> UserId:
        result: UserId = await self._write(accounts.add_user_job(address, password_hash, scram))
        return result

    async def set_password(self, address: str, password_hash: str, scram: str) -> None:
        await self._write(accounts.set_password_job(address, password_hash, scram))

    async def remove_user(self, address: str) -> None:
        await self._write_releasing(accounts.remove_user_job(address))

    async def list_users(self, domain: str | None = None) -> list[UserRecord]:
        return await self._read(lambda c: accounts.list_users(c, domain))

    async def get_user(self, address: str) -> UserRecord | None:
        return await self._read(lambda c: accounts.get_user(c, address))

    async def add_alias(self, source: str, target: str) -> None:
        await self._write(accounts.add_alias_job(source, target))

    async def remove_alias(self, source: str, target: str | None = None) -> None:
        await self._write(accounts.remove_alias_job(source, target))

    async def list_aliases(self, domain: str | None = None) -> list[tuple[str, str]]:
        return await self._read(lambda c: accounts.list_aliases(c, domain))

    async def find_addresses(self, addresses: Sequence[str]) -> list[AddressEntry]:
        return await self._read(lambda c: accounts.find_addresses(c, addresses))

    # --- mailboxes ---------------------------------------------------------

    async def list_mailboxes(self, user_id: UserId) -> list[MailboxState]:
        return await self._read(lambda c: messages.list_mailboxes(c, user_id))

    async def get_mailbox(self, user_id: UserId, name: str) -> MailboxState:
        return await self._read(lambda c: messages.get_mailbox(c, user_id, name))

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
        self, mailbox_id: MailboxId, uids: Sequence[int] | None = None
    ) -> list[MessageMeta]:
        if uids is not None and len(uids) <= INLINE_FETCH:
            return await self._small.read(lambda c: messages.fetch_meta(c, mailbox_id, uids))
        return await self._read(lambda c: messages.fetch_meta(c, mailbox_id, uids))

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

    # --- the outbound queue ------------------------------------------------

    async def enqueue(
        self, sender: str, recipients: Sequence[str], digest: str, size: int
    ) -> QueueId:
        job = queue.enqueue_job(Outbound(sender, tuple(recipients)), digest, size, _utcnow())
        queue_id: QueueId = await self._write(job)
        return queue_id

    async def list_queue(self) -> list[QueueEntry]:
        return await self._read(queue.list_queue)

    async def get_queue_entry(self, queue_id: QueueId) -> QueueEntry:
        return await self._read(lambda c: queue.get_entry(c, queue_id))

    async def claim_queue(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[QueueEntry]:
        entries: list[QueueEntry] = await self._write(queue.claim_job(owner, now, until, limit))
        return entries

    async def renew_claims(
        self, owner: str, until: datetime, ids: Sequence[QueueId] | None = None
    ) -> int:
        if ids is not None and not ids:
            return 0
        job = queue.renew_claims_job(owner, until, None if ids is None else tuple(ids))
        count: int = await self._write(job)
        return count

    async def release_claims(self, prefix: str, keep: str) -> int:
        count: int = await self._write(queue.release_claims_job(prefix, keep))
        return count

    async def claim_holders(self) -> list[str]:
        return await self._read(queue.claim_holders)

    async def release_claims_of(self, owners: Sequence[str]) -> int:
        if not owners:
            return 0
        count: int = await self._write(queue.release_claims_of_job(tuple(owners)))
        return count

    async def next_queue_due(self) -> datetime | None:
        return await self._read(queue.next_due)

    async def record_attempt(
        self,
        queue_id: QueueId,
        results: Sequence[RecipientAttempt],
        now: datetime,
        *,
        finish: bool = False,
        owner: str | None = None,
    ) -> bool:
        job = queue.record_attempt_job(queue_id, tuple(results), now, finish, owner)
        done: bool | None = await (self._write_releasing(job) if finish else self._write(job))
        if done is None:
            raise ClaimLost(f"queue entry {queue_id} is not claimed by {owner}")
        return done

    async def reschedule(
        self, queue_id: QueueId, owner: str, next_attempt: datetime, error: str | None
    ) -> None:
        await self._write(queue.reschedule_job(queue_id, owner, next_attempt, error))

    async def mark_reported(
        self, queue_id: QueueId, addresses: Sequence[str], *, delay_warning: bool = False
    ) -> None:
        await self._write(queue.mark_reported_job(queue_id, tuple(addresses), delay_warning))

    async def finish_queue_entry(self, queue_id: QueueId) -> bool:
        done: bool = await self._write_releasing(queue.finish_job(queue_id))
        return done

    async def hold_queue_entry(self, queue_id: QueueId, held: bool) -> None:
        await self._write(queue.hold_job(queue_id, held))

    async def delete_queue_entry(self, queue_id: QueueId) -> None:
        await self._write_releasing(queue.delete_job(queue_id))

    async def bounce_queue_entry(self, queue_id: QueueId, text: str, now: datetime) -> None:
        await self._write(queue.bounce_job(queue_id, text, now))

    async def flush_queue(self, now: datetime, queue_id: QueueId | None = None) -> int:
        count: int = await self._write(queue.flush_job(now, queue_id))
        return count

    async def mta_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        return await self._read(lambda c: mta_sts.get_policy(c, domain))

    async def save_mta_sts_policy(self, policy: CachedStsPolicy, now: datetime) -> None:
        await self._write(mta_sts.save_policy_job(policy, now))


def _utcnow() -> datetime:
    return datetime.now(UTC)
