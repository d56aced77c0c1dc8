"""The mail store's interfaces: the `MailStore` protocol every backend implements.

Callers (SMTP delivery, IMAP, POP3, the queue runner, the command line) speak only
this module's language: the protocols here and the records and errors of
`poczta.store.records`, exported here too. Nothing of a backend leaks out.

Addresses are compared case-insensitively: the store lower-cases the whole address
(the local part too) before storing or looking it up, and returns it lower-cased.

Mailbox names use "/" as the hierarchy separator; "INBOX" is matched in any case.
A `DeliveryTarget` names its mailbox either by name or by special use ("\\Junk").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from poczta.message import ParsedMessage
from poczta.store.records import (
    DEFAULT_MAILBOXES,
    DELIVERED,
    FAILED,
    MAX_FLAGS_OCTETS,
    NOT_READ,
    PENDING,
    QUOTA_RESOURCES,
    SPECIAL_USES,
    SYSTEM_FLAGS,
    Accepted,
    AddressEntry,
    AlreadyExists,
    CachedStsPolicy,
    ClaimLost,
    Deferred,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
    LimitExceeded,
    MailboxChange,
    MailboxId,
    MailboxState,
    MessageMeta,
    MessageSummary,
    NewsAndFacts,
    NotFound,
    Outbound,
    QueueEntry,
    QueueId,
    QueueRecipient,
    QuotaOverrides,
    QuotaState,
    QuotaUsage,
    RecipientAttempt,
    RecipientDsn,
    Resolution,
    StoreError,
    StoreUnavailable,
    UserId,
    UserRecord,
    flags_fit,
    normalize_address,
    normalize_flags,
)

if TYPE_CHECKING:  # the records of the rules these stores keep state for
    from poczta.accounts import Failures
    from poczta.mailauth.greylist import GreylistStore
    from poczta.sending_limits import SendingState

__all__ = [
    "DEFAULT_MAILBOXES",
    "DELIVERED",
    "FAILED",
    "MAX_FLAGS_OCTETS",
    "NOT_READ",
    "PENDING",
    "QUOTA_RESOURCES",
    "SPECIAL_USES",
    "SYSTEM_FLAGS",
    "Accepted",
    "AddressBook",
    "AddressEntry",
    "AlreadyExists",
    "BlobStore",
    "CachedStsPolicy",
    "ClaimLost",
    "Deferred",
    "Delivered",
    "DeliveryTarget",
    "FlagMode",
    "FlagResult",
    "LeaseStore",
    "LimitExceeded",
    "LoginFailureStore",
    "MailStore",
    "MailboxChange",
    "MailboxId",
    "MailboxState",
    "MessageMeta",
    "MessageSummary",
    "NewsAndFacts",
    "NotFound",
    "Outbound",
    "QueueEntry",
    "QueueId",
    "QueueRecipient",
    "QuotaOverrides",
    "QuotaState",
    "QuotaUsage",
    "RecipientAttempt",
    "RecipientDsn",
    "Resolution",
    "SendingStore",
    "SharedLimits",
    "StoreError",
    "StoreUnavailable",
    "UserId",
    "UserRecord",
    "flags_fit",
    "normalize_address",
    "normalize_flags",
]


class AddressBook(Protocol):
    """The store's answer to "what is this address?", all that recipient routing asks."""

    async def find_addresses(self, addresses: Sequence[str]) -> list[AddressEntry]:
        """The entry of each address (in the store's form, see `normalize_address`), in the
        order given, all read together: one round trip however many. An address that is
        nothing here still has its entry (no user, no targets; `local_domain` False when
        it has no "@"). Which entry wins is `poczta.routing`'s business, not the store's."""
        ...


class BlobStore(Protocol):
    """Message bodies, each named by its digest (the SHA-256 of its content, lower-case hex)
    and stored once however many messages and queue entries use it.

    Whether a body is still used is not asked here: the mail store counts its users in
    the transactions that add and drop them (a delivery, a copy, an expunge, a queue
    entry), which is why bodies have no delete of their own, only a sweep of those the
    mail store has released. A delivery's body goes in with the delivery (`accept`).
    """

    async def put(self, data: bytes) -> str:
        """Store a body durably on its own (for `MailStore.enqueue`); return its digest."""
        ...

    async def read(self, digest: str, *, size_hint: int | None = None) -> bytes:
        """A body by digest (NotFound when there is none); `size_hint`, its size if known,
        lets a small one be read without a thread hand-off."""
        ...

    async def read_many(self, bodies: Sequence[tuple[str, int | None]]) -> list[bytes]:
        """The bodies of (digest, size hint) pairs, in that order (NotFound when one is
        missing): for a command that needs many at once (FETCH), in as few reads of the
        store as it can. The caller bounds how many octets it asks for at once."""
        ...

    async def sweep(self, now: float | None = None) -> int:
        """Delete the bodies nothing has referred to for the grace period (an expunged
        body stays that long, so that a delivery of the same content can still use it);
        return how many went. The store also does this by itself after releasing some."""
        ...


class SendingStore(Protocol):
    """Submitted mail's sending limits: each user's own limits and what each user sent,
    counted across every process (and node) of the server (see `poczta.sending_limits`)."""

    async def sending_state(self, user: str, now: float) -> SendingState:
        """The overrides and usage of `user` at `now` (seconds since the epoch); defaults
        and zero usage for an unknown user."""
        ...

    async def record_sent(self, user: str, recipients: int, now: float) -> None:
        """Count one accepted message of `user` with `recipients` recipients at `now`."""
        ...

    async def set_overrides(self, user: str, changes: Mapping[str, int | None]) -> None:
        """Set some of `user`'s own limits (None: back to the default); NotFound when there
        is no such user, ValueError for a name that is no limit."""
        ...


class LoginFailureStore(Protocol):
    """Failed logins, counted across every process (and node) of the server: only the
    state; the rules (keys, limits, delays) are `poczta.accounts.LoginThrottle`'s. Times
    are seconds since the epoch; each count stops at its cap, the most the rules need."""

    async def login_failures(
        self, network: str, account: str, since: float, caps: Failures
    ) -> Failures:
        """The failures after `since`: from `network` for any account, from `network` for
        `account` (those not forgiven), and for `account` from anywhere. One read."""
        ...

    async def add_login_failure(
        self, network: str, account: str, now: float, since: float, caps: Failures
    ) -> Failures:
        """Count one failure at `now` and forget those at or before `since`; the counts
        after `since`, this one included."""
        ...

    async def forgive_login_failures(self, network: str, account: str) -> None:
        """A login from `network` to `account` succeeded: their failures stop counting
        for the pair (they still count for the network and for the account)."""
        ...


class LeaseStore(Protocol):
    """What one session or connection holds while it lasts, seen by every process (and
    node): POP3 maildrop locks and per-IP connection counts. Each is held by one process,
    named like a queue runner (`poczta.queue.claims`), for a lease it keeps renewing; a
    holder whose lease ran out counts as gone, and so does one the caller found gone
    (`drop_holders`). Times are seconds since the epoch."""

    async def take_maildrop(self, user: str, holder: str, now: float, until: float) -> str:
        """Lock `user`'s maildrop for `holder` until `until`, unless another holder's lease
        on it lasts past `now`; the holder of the lock afterwards (`holder` when taken)."""
        ...

    async def take_maildrop_from(self, user: str, holder: str, gone: str, until: float) -> bool:
        """Take the lock on `user`'s maildrop from `gone` (certainly not running) if it
        still holds it; True when `holder` has it now."""
        ...

    async def release_maildrop(self, user: str, holder: str) -> None:
        """Unlock `user`'s maildrop if `holder` holds it."""
        ...

    async def count_connections(
        self,
        holder: str,
        closed: Mapping[str, int],
        opened: Sequence[str],
        limit: int,
        now: float,
        until: float,
    ) -> list[bool]:
        """In one transaction: count off `closed` (connections of each IP at `holder` that
        ended), then count each of `opened` as one more connection at `holder` (lease
        until `until`) unless the connections of that IP at holders whose leases last
        past `now` number `limit` or more. One answer per `opened`, True when counted."""
        ...

    async def connection_holders(self, ip: str) -> list[str]:
        """The holders counting connections of `ip` now."""
        ...

    async def renew_leases(self, holder: str, until: float, stale: float) -> None:
        """Extend every lock and count of `holder` to `until`, drop its counts at zero, and
        drop whatever any holder let run out before `stale`."""
        ...

    async def lease_holders(self) -> list[str]:
        """Every holder of a lock or count there is now (the caller looks for gone ones)."""
        ...

    async def drop_holders(self, holders: Sequence[str]) -> int:
        """Drop every lock and count these holders have (they are gone); return how many."""
        ...


class SharedLimits(LoginFailureStore, LeaseStore, Protocol):
    """The state of the limits that must hold across processes and nodes."""


class MailStore(AddressBook, Protocol):
    """Accounts, mailboxes, messages and the outbound queue, behind one interface; the
    message bodies behind their own (`blobs`)."""

    @property
    def blobs(self) -> BlobStore:
        """The bodies of this store's messages and queue entries."""
        ...

    async def greylist_store(self) -> GreylistStore:
        """The greylisting state kept beside this store: opened on the first call (the
        same one after), closed with the store."""
        ...

    async def sending_store(self) -> SendingStore:
        """The sending limits and counts kept beside this store: opened on the first call
        (the same one after), closed with the store."""
        ...

    async def shared_limits(self) -> SharedLimits:
        """The login failures, POP3 locks and connection counts every process (and node)
        sharing this store sees: opened on the first call (the same one after), closed
        with the store."""
        ...

    async def close(self) -> None:
        """Finish what is under way and close the store, with what it opened beside it."""
        ...

    # domains
    async def add_domain(self, domain: str) -> None: ...
    async def remove_domain(self, domain: str, *, force: bool = False) -> None: ...
    async def list_domains(self) -> list[str]: ...
    async def domain_exists(self, domain: str) -> bool: ...

    # users
    async def add_user(self, address: str, password_hash: str, scram: str) -> UserId: ...
    async def set_password(self, address: str, password_hash: str, scram: str) -> None: ...
    async def remove_user(self, address: str) -> None: ...
    async def list_users(self, domain: str | None = None) -> list[UserRecord]: ...
    async def get_user(self, address: str) -> UserRecord | None: ...

    # aliases
    async def add_alias(self, source: str, target: str) -> None: ...
    async def remove_alias(self, source: str, target: str | None = None) -> None: ...
    async def list_aliases(self, domain: str | None = None) -> list[tuple[str, str]]: ...
    async def resolve_recipient(self, address: str) -> Resolution | None:
        """Where mail for `address` goes, by the routing rules over `find_addresses`; a
        backend inherits it from `poczta.routing.RecipientRouting`."""
        ...

    # mailboxes
    async def list_mailboxes(self, user_id: UserId) -> list[MailboxState]: ...
    async def get_mailbox(self, user_id: UserId, name: str) -> MailboxState: ...
    async def create_mailbox(
        self, user_id: UserId, name: str, special_use: str | None = None
    ) -> MailboxState: ...
    async def delete_mailbox(self, user_id: UserId, name: str) -> None: ...
    async def rename_mailbox(self, user_id: UserId, old: str, new: str) -> None: ...

    # messages
    async def deliver(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
    ) -> list[Delivered]: ...
    async def accept(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
        outbound: Outbound | None = None,
    ) -> Accepted: ...
    async def fetch_meta(
        self, mailbox_id: MailboxId, uids: Sequence[int] | None = None, *, kept_only: bool = False
    ) -> list[MessageMeta]:
        """The facts of the mailbox's messages of `uids` (all when None), in UID order.
        With `kept_only` the caller needs only the dates, size, digest and the kept
        ENVELOPE and BODYSTRUCTURE text: the store may leave out the rest (NOT_READ,
        `MessageMeta.complete` False)."""
        ...

    async def fetch_meta_with_bodies(
        self, mailbox_id: MailboxId, uids: Sequence[int], *, kept_only: bool = False
    ) -> tuple[list[MessageMeta], dict[str, bytes]]:
        """`fetch_meta` of `uids` (`kept_only` as there) and, by digest, the bodies of
        those among them the store reads as cheaply with their facts as alone (maybe
        none: the others are for `blobs.read_many`)."""
        ...

    async def fetch_summaries(self, mailbox_id: MailboxId) -> list[MessageSummary]:
        """Every message of the mailbox by UID: uid, size and digest only (cheap)."""
        ...

    async def read_message(self, mailbox_id: MailboxId, uid: int) -> bytes: ...
    async def set_flags(
        self,
        mailbox_id: MailboxId,
        uids: Sequence[int],
        flags: Sequence[str] | frozenset[str],
        mode: FlagMode,
        unchangedsince: int | None = None,
    ) -> FlagResult: ...
    async def expunge(
        self, mailbox_id: MailboxId, uids: Sequence[int] | None = None
    ) -> list[int]: ...
    async def vanished(self, mailbox_id: MailboxId, since_modseq: int) -> list[int]: ...
    async def mailbox_version(self, mailbox_id: MailboxId) -> MailboxChange:
        """The mailbox's HIGHESTMODSEQ, UIDNEXT and message count now (NotFound: gone)."""
        ...

    async def changed_since(
        self, mailbox_id: MailboxId, modseq: int
    ) -> list[tuple[int, frozenset[str], int]]:
        """(uid, flags, modseq) of every message changed or added after `modseq`, by UID."""
        ...

    async def news_since(
        self, mailbox_id: MailboxId, modseq: int
    ) -> tuple[MailboxChange, list[tuple[int, frozenset[str], int]]]:
        """`mailbox_version` and, when its HIGHESTMODSEQ is above `modseq`, `changed_since`
        of `modseq` (else none), read together: what a session asks before each command."""
        ...

    async def news_and_facts(
        self, mailbox_id: MailboxId, modseq: int, uids: Sequence[int], *, kept_only: bool = False
    ) -> NewsAndFacts:
        """`news_since` of `modseq` and `fetch_meta_with_bodies` of a few `uids`, as of one
        moment: a FETCH of messages named by UID, which needs both, in one look."""
        ...

    async def mailbox_counts(self, mailbox_id: MailboxId) -> tuple[int, int, int, int]:
        """(messages, unseen, deleted, size in octets) of a mailbox (IMAP STATUS)."""
        ...

    async def deleted_storage(self, mailbox_id: MailboxId) -> int:
        """Octets an EXPUNGE would free: the sum of the sizes of the mailbox's messages
        flagged \\Deleted (IMAP STATUS DELETED-STORAGE, RFC 9208)."""
        ...

    async def copy_messages(
        self,
        user_id: UserId,
        source: MailboxId,
        uids: Sequence[int],
        target: str,
        *,
        move: bool = False,
    ) -> tuple[int, list[tuple[int, int]]]:
        """COPY (or MOVE) messages to the user's mailbox `target` in one transaction:
        (target UIDVALIDITY, [(source uid, new uid)]) in UID order, messages already gone
        skipped. NotFound when `target` does not exist."""
        ...

    async def claim_recent(self, mailbox_id: MailboxId, up_to: int | None = None) -> int:
        """IMAP4rev1 \\Recent: the first UID that is recent for the calling session, the
        mailbox's mark moved on to `up_to` (its UIDNEXT when None), so that each message
        is recent in one session only."""
        ...

    async def recent_mark(self, mailbox_id: MailboxId) -> int:
        """The first UID no session has taken as recent (EXAMINE and STATUS RECENT)."""
        ...

    async def subscriptions(self, user_id: UserId) -> list[str]: ...
    async def subscribe(self, user_id: UserId, name: str) -> None: ...
    async def unsubscribe(self, user_id: UserId, name: str) -> bool: ...

    async def messages_size(self, mailbox_id: MailboxId, uids: Sequence[int]) -> tuple[int, int]:
        """(messages, octets) of those of `uids` the mailbox has: what a COPY of them adds."""
        ...

    # quota: the usage is kept up to date by every change of messages, in its transaction
    async def quota_states(self, user_ids: Sequence[UserId]) -> dict[UserId, QuotaState]:
        """The usage and own limits of each user (one unknown is left out), in one read."""
        ...

    async def set_quota(self, user_id: UserId, changes: Mapping[str, int | None]) -> None:
        """Set some of a user's own limits (keys from `QUOTA_RESOURCES`; None: back to the
        default). NotFound when there is no such user."""
        ...

    def changes(
        self, mailbox_id: MailboxId, since: MailboxChange | None = None
    ) -> AsyncIterator[MailboxChange]:
        """Each new state of the mailbox, whichever process changed it, until the caller
        stops iterating (IMAP's IDLE and its untagged updates). Changes are coalesced: a
        caller that was busy gets only the latest state. `since` is the state the caller
        last read (see `MailboxChange`), so a change between that read and the first wait
        is reported too. Ends after reporting the mailbox deleted."""
        ...

    async def move_message(
        self, user_id: UserId, source_mailbox: str, uid: int, target_mailbox: str
    ) -> int:
        """Move one message to another mailbox of the same user in one transaction; return
        its UID there. It keeps its flags, internal date and body; in the source it counts
        as expunged. NotFound when either mailbox or the message does not exist."""
        ...

    # the outbound queue (its bodies are stored on their own: `blobs.put`)
    async def enqueue(
        self, sender: str, recipients: Sequence[str], digest: str, size: int
    ) -> QueueId: ...
    async def list_queue(self) -> list[QueueEntry]: ...
    async def get_queue_entry(self, queue_id: QueueId) -> QueueEntry:
        """One entry with its recipients; NotFound when it is gone."""
        ...

    # the queue runner (see `poczta.queue.runner`); `owner` names one runner
    async def claim_queue(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[QueueEntry]:
        """Claim up to `limit` entries due at `now` (not held, not claimed by a runner
        whose claim lasts past `now`) for `owner` until `until`, the earliest due first."""
        ...

    async def renew_claims(
        self, owner: str, until: datetime, ids: Sequence[QueueId] | None = None
    ) -> int:
        """Extend the claims `owner` holds (of the entries `ids` only, if given) to
        `until`; return how many."""
        ...

    async def release_claims(self, prefix: str, keep: str) -> int:
        """Drop the claims of owners named `prefix`... other than `keep` (what an
        administrator or a benchmark held back); return how many."""
        ...

    async def claim_holders(self) -> list[str]:
        """The owners of the claims there are now (the runner looks for those gone)."""
        ...

    async def release_claims_of(self, owners: Sequence[str]) -> int:
        """Drop every claim these owners hold (runners that are gone); return how many."""
        ...

    async def next_queue_due(self) -> datetime | None:
        """When the earliest entry not held may be claimed (a claimed one: once its
        claim runs out), if there is any."""
        ...

    async def record_attempt(
        self,
        queue_id: QueueId,
        results: Sequence[RecipientAttempt],
        now: datetime,
        *,
        finish: bool = False,
        owner: str | None = None,
    ) -> bool:
        """Record each recipient's result durably before returning (a DELIVERED one only
        after the remote 250). Recipients already final are left as they are. With
        `finish`, the entry is finished in the same commit when none is left pending (as
        `finish_queue_entry`); True if it was. With `owner`, nothing is written unless
        the entry is claimed by `owner` (ClaimLost; NotFound when it is gone)."""
        ...

    async def reschedule(
        self, queue_id: QueueId, owner: str, next_attempt: datetime, error: str | None
    ) -> None:
        """Count an attempt of the entry, set its next one and drop `owner`'s claim."""
        ...

    async def mark_reported(
        self, queue_id: QueueId, addresses: Sequence[str], *, delay_warning: bool = False
    ) -> None:
        """Note that a DSN about these recipients went out (or the entry's delay warning)."""
        ...

    async def finish_queue_entry(self, queue_id: QueueId) -> bool:
        """Delete the entry and release its body if every recipient is final; True if so."""
        ...

    async def hold_queue_entry(self, queue_id: QueueId, held: bool) -> None: ...
    async def delete_queue_entry(self, queue_id: QueueId) -> None:
        """Remove the entry without any DSN (the administrator's decision)."""
        ...

    async def bounce_queue_entry(self, queue_id: QueueId, text: str, now: datetime) -> None:
        """Fail every pending recipient with `text` and make the entry due now, so the
        runner sends the bounce and finishes it."""
        ...

    async def flush_queue(self, now: datetime, queue_id: QueueId | None = None) -> int:
        """Make the entry (or every entry not held) due at `now`; return how many."""
        ...

    # MTA-STS policies of destination domains (see `poczta.queue.mta_sts_cache`)
    async def mta_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        """The policy kept for `domain` (lower-cased), expired or not, if any."""
        ...

    async def save_mta_sts_policy(self, policy: CachedStsPolicy, now: datetime) -> None:
        """Keep `policy` as its domain's, replacing the one before; drop the policies of
        other domains that expired before `now`."""
        ...
