"""The shared mail store: PostgreSQL for accounts, mailboxes, messages, bodies and the queue.

`PostgresStore` implements `MailStore` over an asyncpg pool (`access.Database`). Each
method is one transaction (a delivery: one read that locks nothing, then its write, see
`deliveries`), a read of one statement without BEGIN and COMMIT; a write returns after
its COMMIT, with the server's synchronous_commit on, so what it acknowledges is on
disk. Bodies are rows too (`bodies`), so a delivery's body, its messages and its queue
entry commit together. Several processes and nodes may use one database at once: UIDs
and MODSEQs are taken under the mailbox's row lock (`mailboxes.bump`), queue claims
skip locked rows.

A database that cannot be reached makes every call fail with `StoreUnavailable` within
the pool's and the statements' timeouts; the pool reconnects by itself when it is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from poczta.config_schema import StoreSettings
from poczta.message import ParsedMessage
from poczta.routing import RecipientRouting
from poczta.store.base import (
    Accepted,
    AddressEntry,
    CachedStsPolicy,
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
    QueueEntry,
    QueueId,
    QuotaState,
    RecipientAttempt,
    StoreError,
    UserId,
    UserRecord,
)
from poczta.store.changes import ChangeHub
from poczta.store.postgres import accounts, imap, mailboxes, messages, queue, quota
from poczta.store.postgres.access import COMMAND_TIMEOUT, Connection, Database, translated
from poczta.store.postgres.bodies import DEFAULT_GRACE, read_blob
from poczta.store.postgres.body_reads import PostgresBodies
from poczta.store.postgres.connect import connect, create_pool
from poczta.store.postgres.deliveries import Deliveries
from poczta.store.postgres.flags import FlagBatches
from poczta.store.postgres.limits import PostgresSharedLimits, open_limits_pool
from poczta.store.postgres.listener import KEEPALIVE, LISTEN_TIMEOUT, MailboxListener
from poczta.store.postgres.migrate import migrate
from poczta.store.postgres.side import (
    PostgresGreylistStore,
    PostgresSendingStore,
    get_policy,
    save_policy,
)

if TYPE_CHECKING:
    from poczta.quota import Room

__all__ = ["PostgresStore"]

T = TypeVar("T")

_SWEEP_AFTER_OPEN = 60.0  # seconds; a short-lived store (the command line) never sweeps


class PostgresStore(RecipientRouting):
    """`MailStore` on one PostgreSQL database (`resolve_recipient` is `RecipientRouting`'s,
    over `find_addresses`; `blobs` is a `PostgresBodies`)."""

    def __init__(
        self,
        pool: Any,
        *,
        listen: Callable[[], Awaitable[Any]] | None = None,
        limits_pool: Callable[[], Awaitable[Any]] | None = None,
        blob_grace: float = DEFAULT_GRACE,
        listen_keepalive: float = KEEPALIVE,
        listen_timeout: float = LISTEN_TIMEOUT,
    ) -> None:
        """`listen` opens the connection the change feed listens on; `listen_keepalive` is
        how long that connection may stay silent before the server is asked whether it is
        there, `listen_timeout` how long it has to answer (see `listener`)."""
        self._db = Database(pool)
        self._deliveries = Deliveries(self._db)
        self._blobs = PostgresBodies(self._db, grace=blob_grace)
        self._greylist: PostgresGreylistStore | None = None
        self._sending: PostgresSendingStore | None = None
        self._limits: PostgresSharedLimits | None = None
        self._limits_pool = limits_pool  # None: the shared limits use the store's pool
        self._limits_lock = asyncio.Lock()
        self._hub = ChangeHub()
        self._flag_batches = FlagBatches(self._db)
        self._listen = listen
        self._listener: MailboxListener | None = None
        self._listener_options = {"keepalive": listen_keepalive, "timeout": listen_timeout}

    @classmethod
    async def open(
        cls,
        settings: StoreSettings,
        data_dir: Path,
        *,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = COMMAND_TIMEOUT,
        **options: Any,
    ) -> PostgresStore:
        """Connect, migrate the schema (PostgresUnavailable, in one line, for a schema newer
        than this poczta's or a database that cannot be used) and open the store."""
        pool = await create_pool(
            settings,
            data_dir,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
        )
        try:
            with translated():
                async with pool.acquire() as conn:
                    await migrate(conn)
        except BaseException:
            pool.terminate()
            raise

        async def listen() -> Any:
            return await connect(settings, data_dir)

        async def limits_pool() -> Any:
            return await open_limits_pool(settings, data_dir, command_timeout)

        store = cls(pool, listen=listen, limits_pool=limits_pool, **options)
        store._blobs.sweep_later(_SWEEP_AFTER_OPEN)  # what a store that died left released
        return store

    async def close(self) -> None:
        """Finish what is under way, then close the pool. Idempotent."""
        await self._blobs.stop_sweeping()
        if self._listener is not None:
            await self._listener.close()
        if self._limits is not None:
            await self._limits.close()
        await self._db.close()

    @property
    def blobs(self) -> PostgresBodies:
        return self._blobs

    async def greylist_store(self) -> PostgresGreylistStore:
        self._db.check_open()
        if self._greylist is None:
            self._greylist = PostgresGreylistStore(self._db)
        return self._greylist

    async def sending_store(self) -> PostgresSendingStore:
        self._db.check_open()
        if self._sending is None:
            self._sending = PostgresSendingStore(self._db)
        return self._sending

    async def shared_limits(self) -> PostgresSharedLimits:
        self._db.check_open()
        async with self._limits_lock:
            if self._limits is None:
                if self._limits_pool is None:
                    self._limits = PostgresSharedLimits(self._db)
                else:
                    with translated():
                        pool = await self._limits_pool()
                    self._limits = PostgresSharedLimits(Database(pool), own=True)
        return self._limits

    # --- plumbing --------------------------------------------------------

    async def _read(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        return await self._db.read(fn)

    async def _write(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        return await self._db.write(fn)

    async def _statement(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """A call of one statement, its own transaction without BEGIN and COMMIT around
        it: one round trip (what IMAP asks on every command)."""
        return await self._db.statement(fn)

    async def _write_releasing(self, fn: Callable[[Connection, float], Awaitable[T]]) -> T:
        """A write that may release bodies: sweep them once their grace period is over."""
        now = time.time()
        result = await self._db.write(lambda conn: fn(conn, now))
        self._blobs.sweep_later()
        return result

    # --- domains, users, aliases ----------------------------------------

    async def add_domain(self, domain: str) -> None:
        await self._write(lambda c: accounts.add_domain(c, domain))

    async def remove_domain(self, domain: str, *, force: bool = False) -> None:
        await self._write_releasing(lambda c, now: accounts.remove_domain(c, domain, force, now))

    async def list_domains(self) -> list[str]:
        return await self._statement(accounts.list_domains)

    async def domain_exists(self, domain: str) -> bool:
        return await self._statement(lambda c: accounts.domain_exists(c, domain))

    async def add_user(self, address: str, password_hash: str, scram: str) -> UserId:
        return await self._write(lambda c: accounts.add_user(c, address, password_hash, scram))

    async def set_password(self, address: str, password_hash: str, scram: str) -> None:
        await self._write(lambda c: accounts.set_password(c, address, password_hash, scram))

    async def remove_user(self, address: str) -> None:
        await self._write_releasing(lambda c, now: accounts.remove_user(c, address, now))

    async def list_users(self, domain: str | None = None) -> list[UserRecord]:
        return await self._statement(lambda c: accounts.list_users(c, domain))

    async def get_user(self, address: str) -> UserRecord | None:
        return await self._statement(lambda c: accounts.get_user(c, address))

    async def add_alias(self, source: str, target: str) -> None:
        await self._write(lambda c: accounts.add_alias(c, source, target))

    async def remove_alias(self, source: str, target: str | None = None) -> None:
        await self._write(lambda c: accounts.remove_alias(c, source, target))

    async def list_aliases(self, domain: str | None = None) -> list[tuple[str, str]]:
        return await self._statement(lambda c: accounts.list_aliases(c, domain))

    async def find_addresses(self, addresses: Sequence[str]) -> list[AddressEntry]:
        return await self._statement(lambda c: accounts.find_addresses(c, addresses))

    # --- mailboxes ---------------------------------------------------------

    async def list_mailboxes(self, user_id: UserId) -> list[MailboxState]:
        return await self._statement(lambda c: mailboxes.list_mailboxes(c, user_id))

    async def get_mailbox(self, user_id: UserId, name: str) -> MailboxState:
        return await self._statement(lambda c: mailboxes.get_mailbox(c, user_id, name))

    async def create_mailbox(
        self, user_id: UserId, name: str, special_use: str | None = None
    ) -> MailboxState:
        return await self._write(lambda c: mailboxes.create_mailbox(c, user_id, name, special_use))

    async def delete_mailbox(self, user_id: UserId, name: str) -> None:
        await self._write_releasing(lambda c, now: mailboxes.delete_mailbox(c, user_id, name, now))

    async def rename_mailbox(self, user_id: UserId, old: str, new: str) -> None:
        await self._write(lambda c: mailboxes.rename_mailbox(c, user_id, old, new))

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
        """Store the body, the local copies and the queue entry, committed together."""
        accepted, _ = await self._deliveries.accept(
            data, parsed, internal_date, targets, outbound, None
        )
        return accepted

    async def accept_within_quota(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
        room: Room,
    ) -> tuple[Accepted, dict[UserId, QuotaState]]:
        """`accept` for the targets of the users `room` finds room for (see
        `poczta.quota.QuotaCheckingStore`): what was stored, and the quota state of each
        user left out."""
        return await self._deliveries.accept(data, parsed, internal_date, targets, None, room)

    async def fetch_meta(
        self, mailbox_id: MailboxId, uids: Sequence[int] | None = None, *, kept_only: bool = False
    ) -> list[MessageMeta]:
        return await self._statement(lambda c: imap.fetch_meta(c, mailbox_id, uids, kept_only))

    async def fetch_meta_with_bodies(
        self, mailbox_id: MailboxId, uids: Sequence[int], *, kept_only: bool = False
    ) -> tuple[list[MessageMeta], dict[str, bytes]]:
        if len(uids) > imap.FEW_WITH_BODIES:  # their bodies are read apart, in batches
            return await self.fetch_meta(mailbox_id, uids, kept_only=kept_only), {}
        return await self._statement(
            lambda c: imap.fetch_meta_with_bodies(c, mailbox_id, uids, kept_only)
        )

    async def fetch_summaries(self, mailbox_id: MailboxId) -> list[MessageSummary]:
        return await self._read(lambda c: messages.fetch_summaries(c, mailbox_id))

    async def read_message(self, mailbox_id: MailboxId, uid: int) -> bytes:
        async def read(conn: Connection) -> bytes:
            return await read_blob(conn, await messages.message_digest(conn, mailbox_id, uid))

        return await self._read(read)

    async def set_flags(
        self,
        mailbox_id: MailboxId,
        uids: Sequence[int],
        flags: Sequence[str] | frozenset[str],
        mode: FlagMode,
        unchangedsince: int | None = None,
    ) -> FlagResult:
        self._db.check_open()
        return await self._flag_batches.set_flags(
            mailbox_id, uids, frozenset(flags), mode, unchangedsince
        )

    async def expunge(self, mailbox_id: MailboxId, uids: Sequence[int] | None = None) -> list[int]:
        """Remove the given messages (all flagged \\Deleted when `uids` is None)."""
        return await self._write_releasing(
            lambda c, now: messages.expunge(c, mailbox_id, uids, now)
        )

    async def vanished(self, mailbox_id: MailboxId, since_modseq: int) -> list[int]:
        return await self._statement(lambda c: imap.vanished(c, mailbox_id, since_modseq))

    async def mailbox_version(self, mailbox_id: MailboxId) -> MailboxChange:
        return await self._statement(lambda c: imap.mailbox_version(c, mailbox_id))

    async def changed_since(
        self, mailbox_id: MailboxId, modseq: int
    ) -> list[tuple[int, frozenset[str], int]]:
        return await self._statement(lambda c: imap.changed_since(c, mailbox_id, modseq))

    async def news_since(
        self, mailbox_id: MailboxId, modseq: int
    ) -> tuple[MailboxChange, list[tuple[int, frozenset[str], int]]]:
        return await self._statement(lambda c: imap.news_since(c, mailbox_id, modseq))

    async def news_and_facts(
        self, mailbox_id: MailboxId, modseq: int, uids: Sequence[int], *, kept_only: bool = False
    ) -> NewsAndFacts:
        if len(uids) > imap.FEW_WITH_BODIES:
            version, changes = await self.news_since(mailbox_id, modseq)
            metas, bodies = await self.fetch_meta_with_bodies(mailbox_id, uids, kept_only=kept_only)
            return NewsAndFacts(version, changes, metas, bodies)
        return await self._statement(
            lambda c: imap.news_and_facts(c, mailbox_id, modseq, uids, kept_only)
        )

    async def mailbox_counts(self, mailbox_id: MailboxId) -> tuple[int, int, int, int]:
        return await self._statement(lambda c: imap.mailbox_counts(c, mailbox_id))

    async def deleted_storage(self, mailbox_id: MailboxId) -> int:
        return await self._statement(lambda c: imap.deleted_storage(c, mailbox_id))

    async def copy_messages(
        self,
        user_id: UserId,
        source: MailboxId,
        uids: Sequence[int],
        target: str,
        *,
        move: bool = False,
    ) -> tuple[int, list[tuple[int, int]]]:
        return await self._write(
            lambda c: imap.copy_messages(c, user_id, source, uids, target, move)
        )

    async def move_message(
        self, user_id: UserId, source_mailbox: str, uid: int, target_mailbox: str
    ) -> int:
        return await self._write(
            lambda c: imap.move_message(c, user_id, source_mailbox, uid, target_mailbox)
        )

    async def claim_recent(self, mailbox_id: MailboxId, up_to: int | None = None) -> int:
        return await self._statement(lambda c: imap.claim_recent(c, mailbox_id, up_to))

    async def recent_mark(self, mailbox_id: MailboxId) -> int:
        return await self._statement(lambda c: imap.recent_mark(c, mailbox_id))

    async def subscriptions(self, user_id: UserId) -> list[str]:
        return await self._statement(lambda c: imap.subscriptions(c, user_id))

    async def subscribe(self, user_id: UserId, name: str) -> None:
        await self._write(lambda c: imap.subscribe(c, user_id, name))

    async def unsubscribe(self, user_id: UserId, name: str) -> bool:
        return await self._write(lambda c: imap.unsubscribe(c, user_id, name))

    def changes(
        self, mailbox_id: MailboxId, since: MailboxChange | None = None
    ) -> AsyncIterator[MailboxChange]:
        """Each new state of the mailbox, from the NOTIFY of every write that changes it
        (see `listener`)."""
        self._db.check_open()
        if self._listener is None:
            if self._listen is None:
                raise StoreError("this store was opened without a way to listen for changes")
            self._listener = MailboxListener(
                self._hub, self._listen, self._mailbox_states, **self._listener_options
            )
            self._listener.start()
        return self._hub.changes(mailbox_id, since)

    async def _mailbox_states(self, ids: Collection[MailboxId]) -> dict[MailboxId, MailboxChange]:
        return await self._statement(lambda c: imap.mailbox_changes(c, ids))

    async def messages_size(self, mailbox_id: MailboxId, uids: Sequence[int]) -> tuple[int, int]:
        return await self._statement(lambda c: quota.messages_size(c, mailbox_id, uids))

    async def quota_states(self, user_ids: Sequence[UserId]) -> dict[UserId, QuotaState]:
        return await self._statement(lambda c: quota.quota_states(c, user_ids))

    async def set_quota(self, user_id: UserId, changes: Mapping[str, int | None]) -> None:
        quota.check_quota_changes(changes)
        await self._write(lambda c: quota.set_quota(c, user_id, changes))

    # --- the outbound queue ------------------------------------------------

    async def enqueue(
        self, sender: str, recipients: Sequence[str], digest: str, size: int
    ) -> QueueId:
        outbound = Outbound(sender, tuple(recipients))
        return await self._write(lambda c: queue.enqueue(c, outbound, digest, size, _utcnow()))

    async def list_queue(self) -> list[QueueEntry]:
        return await self._read(queue.list_queue)

    async def get_queue_entry(self, queue_id: QueueId) -> QueueEntry:
        return await self._read(lambda c: queue.get_entry(c, queue_id))

    async def claim_queue(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[QueueEntry]:
        return await self._write(lambda c: queue.claim(c, owner, now, until, limit))

    async def renew_claims(
        self, owner: str, until: datetime, ids: Sequence[QueueId] | None = None
    ) -> int:
        if ids is not None and not ids:
            return 0
        return await self._write(lambda c: queue.renew_claims(c, owner, until, ids))

    async def release_claims(self, prefix: str, keep: str) -> int:
        return await self._write(lambda c: queue.release_claims(c, prefix, keep))

    async def next_queue_due(self) -> datetime | None:
        return await self._statement(queue.next_due)

    async def claim_holders(self) -> list[str]:
        return await self._statement(queue.claim_holders)

    async def release_claims_of(self, owners: Sequence[str]) -> int:
        if not owners:
            return 0
        return await self._write(lambda c: queue.release_claims_of(c, owners))

    async def record_attempt(
        self,
        queue_id: QueueId,
        results: Sequence[RecipientAttempt],
        now: datetime,
        *,
        finish: bool = False,
        owner: str | None = None,
    ) -> bool:
        async def attempt(conn: Connection, released: float) -> bool:
            await queue.record_attempt(conn, queue_id, results, now, owner)
            return finish and await queue.finish(conn, queue_id, released)

        return await self._write_releasing(attempt)

    async def reschedule(
        self, queue_id: QueueId, owner: str, next_attempt: datetime, error: str | None
    ) -> None:
        await self._write(lambda c: queue.reschedule(c, queue_id, owner, next_attempt, error))

    async def mark_reported(
        self, queue_id: QueueId, addresses: Sequence[str], *, delay_warning: bool = False
    ) -> None:
        await self._write(lambda c: queue.mark_reported(c, queue_id, addresses, delay_warning))

    async def finish_queue_entry(self, queue_id: QueueId) -> bool:
        return await self._write_releasing(lambda c, now: queue.finish(c, queue_id, now))

    async def hold_queue_entry(self, queue_id: QueueId, held: bool) -> None:
        await self._write(lambda c: queue.hold(c, queue_id, held))

    async def delete_queue_entry(self, queue_id: QueueId) -> None:
        await self._write_releasing(lambda c, now: queue.delete(c, queue_id, now))

    async def bounce_queue_entry(self, queue_id: QueueId, text: str, now: datetime) -> None:
        await self._write(lambda c: queue.bounce(c, queue_id, text, now))

    async def flush_queue(self, now: datetime, queue_id: QueueId | None = None) -> int:
        return await self._write(lambda c: queue.flush(c, now, queue_id))

    # --- MTA-STS policies of destination domains ----------------------------

    async def mta_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        return await self._statement(lambda c: get_policy(c, domain))

    async def save_mta_sts_policy(self, policy: CachedStsPolicy, now: datetime) -> None:
        await self._write(lambda c: save_policy(c, policy, now))


def _utcnow() -> datetime:
    return datetime.now(UTC)
