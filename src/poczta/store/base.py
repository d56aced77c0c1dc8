"""The mail store interface: records, errors and the `MailStore` protocol every backend implements.

Callers (SMTP delivery, IMAP, POP3, the queue runner, the command line) speak only
this module's language. Nothing of a backend leaks out: ids are opaque integers, a
failure of the disk or the database is `StoreUnavailable` (answer 451 4.3.0 and let
the client retry), and the other errors are `NotFound` and `AlreadyExists`.

Addresses are compared case-insensitively: the store lower-cases the whole address
(the local part too) before storing or looking it up, and returns it lower-cased.

Mailbox names use "/" as the hierarchy separator; "INBOX" is matched in any case.
A `DeliveryTarget` names its mailbox either by name or by special use ("\\Junk").
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, NewType, Protocol, TypeVar

from poczta.message import Envelope, MimePart, ParsedMessage

__all__ = [
    "DEFAULT_MAILBOXES",
    "DELIVERED",
    "FAILED",
    "PENDING",
    "QUOTA_RESOURCES",
    "SPECIAL_USES",
    "SYSTEM_FLAGS",
    "Accepted",
    "AlreadyExists",
    "CachedStsPolicy",
    "Deferred",
    "Delivered",
    "DeliveryTarget",
    "FlagMode",
    "FlagResult",
    "MailStore",
    "MailboxChange",
    "MailboxId",
    "MailboxState",
    "MessageMeta",
    "MessageSummary",
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
    "StoreError",
    "StoreUnavailable",
    "UserId",
    "UserRecord",
    "normalize_address",
    "normalize_flags",
]

UserId = NewType("UserId", int)
MailboxId = NewType("MailboxId", int)
QueueId = NewType("QueueId", int)

SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
SPECIAL_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)


class StoreError(Exception):
    """Base of every error the store raises."""


class StoreUnavailable(StoreError):
    """The disk or the database failed; nothing was changed. Callers answer 451 4.3.0."""


class NotFound(StoreError):
    """The domain, user, alias, mailbox, message or blob named does not exist."""


class AlreadyExists(StoreError):
    """The domain, user, alias or mailbox to create exists already."""


def normalize_address(address: str) -> str:
    """The store's form of an address: stripped and lower-cased (local part too)."""
    return address.strip().lower()


_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}


def normalize_flags(flags: Sequence[str] | frozenset[str]) -> frozenset[str]:
    """Flags with system flags in their canonical case; keywords kept as given."""
    return frozenset(_SYSTEM_BY_LOWER.get(flag.lower(), flag) for flag in flags)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: UserId
    address: str
    password_hash: str
    scram: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for one recipient goes: local users and remote addresses (via aliases)."""

    local_users: tuple[UserRecord, ...] = ()
    remote_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MailboxState:
    id: MailboxId
    user_id: UserId
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None
    messages: int


@dataclass(frozen=True, slots=True)
class MailboxChange:
    """A mailbox's state after a change (see `MailStore.changes`); `exists` is False once
    the mailbox was deleted."""

    mailbox_id: MailboxId
    highestmodseq: int
    uidnext: int
    messages: int
    exists: bool = True


T = TypeVar("T")


class Deferred(Generic[T]):
    """A value kept as the text it is stored as until it is first used (`MessageMeta`)."""

    __slots__ = ("decode", "text")

    def __init__(self, text: str, decode: Callable[[str], T]) -> None:
        self.text = text
        self.decode = decode


class MessageMeta:
    """One message as FETCH and SEARCH see it, without its bytes.

    A backend may hand over `envelope`, `search_headers` and `structure` as `Deferred`
    (its stored text and the decoder): each is decoded at its first use and kept, so a
    FETCH of a few items or a search of flags never pays for decoding the others.
    `imap_envelope` and `imap_bodystructure` are the wire text of FETCH's ENVELOPE and
    BODYSTRUCTURE as kept with the message (see `poczta.imap.fetch_cache`), None when
    not kept. Treat an instance as immutable.
    """

    __slots__ = (
        "_envelope",
        "_search_headers",
        "_structure",
        "digest",
        "flags",
        "header_size",
        "imap_bodystructure",
        "imap_envelope",
        "internal_date",
        "modseq",
        "sent_date",
        "size",
        "subject",
        "uid",
    )

    def __init__(
        self,
        uid: int,
        modseq: int,
        flags: frozenset[str],
        internal_date: datetime,
        size: int,
        digest: str,
        header_size: int,
        sent_date: datetime | None,
        subject: str,
        envelope: Envelope | Deferred[Envelope],
        search_headers: tuple[tuple[str, str], ...] | Deferred[tuple[tuple[str, str], ...]],
        # The MIME structure, with the byte offsets of every part (BODYSTRUCTURE, sections).
        structure: MimePart | Deferred[MimePart | None] | None = None,
        imap_envelope: str | None = None,
        imap_bodystructure: str | None = None,
    ) -> None:
        self.uid = uid
        self.modseq = modseq
        self.flags = flags
        self.internal_date = internal_date
        self.size = size
        self.digest = digest
        self.header_size = header_size
        self.sent_date = sent_date
        self.subject = subject
        self._envelope = envelope
        self._search_headers = search_headers
        self._structure = structure
        self.imap_envelope = imap_envelope
        self.imap_bodystructure = imap_bodystructure

    @property
    def envelope(self) -> Envelope:
        value = self._envelope
        if isinstance(value, Deferred):
            value = self._envelope = value.decode(value.text)
        return value

    @property
    def search_headers(self) -> tuple[tuple[str, str], ...]:
        value = self._search_headers
        if isinstance(value, Deferred):
            value = self._search_headers = value.decode(value.text)
        return value

    @property
    def structure(self) -> MimePart | None:
        value = self._structure
        if isinstance(value, Deferred):
            value = self._structure = value.decode(value.text)
        return value

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.uid, self.modseq, self.flags, self.internal_date, self.size, self.digest,
            self.header_size, self.sent_date, self.subject, self.envelope, self.search_headers,
            self.structure, self.imap_envelope, self.imap_bodystructure,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageMeta):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"MessageMeta(uid={self.uid}, modseq={self.modseq}, digest={self.digest!r})"


class MessageSummary(NamedTuple):
    """What a download needs of one message (POP3's numbers, sizes and unique ids)."""

    uid: int
    size: int
    digest: str


class FlagMode(enum.Enum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class FlagResult:
    """Outcome of `set_flags`: the messages changed and those refused by UNCHANGEDSINCE."""

    changed: tuple[tuple[int, frozenset[str], int], ...]  # (uid, new flags, new modseq)
    modified: tuple[int, ...]  # UIDs whose modseq was above unchangedsince
    highestmodseq: int


#: What a quota limits: "storage" (octets, the sum of RFC822.SIZE) and "messages".
QUOTA_RESOURCES = ("storage", "messages")


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """What a user's messages take, over all of the user's mailboxes."""

    storage: int = 0  # octets
    messages: int = 0


@dataclass(frozen=True, slots=True)
class QuotaOverrides:
    """A user's own quota limits; None keeps the configured default (0: no limit)."""

    storage: int | None = None
    messages: int | None = None


@dataclass(frozen=True, slots=True)
class QuotaState:
    """A user's usage and own limits, read together (see `poczta.quota`)."""

    usage: QuotaUsage
    overrides: QuotaOverrides


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """One local destination: a user's mailbox by name, or by special use ("\\Junk")."""

    user_id: UserId
    mailbox: str = "INBOX"
    flags: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Delivered:
    mailbox_id: MailboxId
    uid: int


@dataclass(frozen=True, slots=True)
class RecipientDsn:
    """A recipient's DSN parameters (RFC 3461): NOTIFY and ORCPT ("rfc822;addr" form)."""

    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """Remote recipients of a message, to be queued in the same commit as local delivery,
    with the DSN parameters of the transaction (ENVID, RET) and of each recipient (by
    address, as given in `recipients`)."""

    sender: str
    recipients: tuple[str, ...]
    envid: str | None = None
    ret: str | None = None
    dsn: Mapping[str, RecipientDsn] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Result of `accept`: the local copies and the queue entry (None when nothing is remote)."""

    delivered: tuple[Delivered, ...]
    queue_id: QueueId | None


#: A queued recipient's states: PENDING is tried again; DELIVERED and FAILED are final.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    """One recipient of a queue entry: its state and what its last attempt gave."""

    address: str
    status: str  # PENDING, DELIVERED or FAILED
    last_error: str | None  # the text of the last attempt's outcome
    attempts: int = 0
    reply_code: int | None = None  # the remote reply that decided the last attempt
    reply_enhanced: str | None = None
    remote_mta: str | None = None
    tls: str | None = None  # the last attempt's TLS outcome, e.g. "opportunistic TLSv1.3 ..."
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    reported: bool = False  # a DSN about its final state was sent (or is not wanted)
    last_attempt: datetime | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One queued message; `created` is its arrival time."""

    id: QueueId
    sender: str
    recipients: tuple[QueueRecipient, ...]
    digest: str
    size: int
    created: datetime
    next_attempt: datetime
    attempts: int
    last_error: str | None
    envid: str | None = None
    ret: str | None = None
    held: bool = False
    delay_warned: bool = False
    claimed_by: str | None = None
    claimed_until: datetime | None = None

    def pending(self) -> tuple[QueueRecipient, ...]:
        return tuple(r for r in self.recipients if r.status == PENDING)


@dataclass(frozen=True, slots=True)
class RecipientAttempt:
    """What one attempt gave for one recipient, to record in the queue."""

    address: str
    status: str  # PENDING (a temporary failure), DELIVERED or FAILED
    text: str
    reply_code: int | None = None
    reply_enhanced: str | None = None
    remote_mta: str | None = None
    tls: str | None = None


@dataclass(frozen=True, slots=True)
class CachedStsPolicy:
    """A destination domain's MTA-STS policy as last fetched (RFC 8461 5.1): the id its
    TXT record gave, the policy text, when it was fetched, and when it expires (the
    fetch plus its max_age)."""

    domain: str
    policy_id: str
    text: str
    fetched: datetime
    expires: datetime


class MailStore(Protocol):
    """Accounts, mailboxes, messages, blobs and the outbound queue, behind one interface."""

    async def close(self) -> None: ...

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
    async def resolve_recipient(self, address: str) -> Resolution | None: ...

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
        self, mailbox_id: MailboxId, uids: Sequence[int] | None = None
    ) -> list[MessageMeta]: ...
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

    # blobs and the outbound queue
    async def store_blob(self, data: bytes) -> str: ...
    async def read_blob(self, digest: str, *, size_hint: int | None = None) -> bytes:
        """A body by digest; `size_hint` (its size, if known) lets small ones be read inline."""
        ...

    async def sweep_blobs(self, now: float | None = None) -> int:
        """Delete the bodies nothing has referred to for the grace period (an expunged
        body stays that long, so that a delivery of the same content can still use it);
        return how many went. The store also does this by itself after releasing some."""
        ...

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

    async def renew_claims(self, owner: str, until: datetime) -> int:
        """Extend every claim `owner` holds to `until`; return how many."""
        ...

    async def release_claims(self, prefix: str, keep: str) -> int:
        """Drop the claims of owners named `prefix`... other than `keep` (the runners of
        this node that died); return how many."""
        ...

    async def next_queue_due(self) -> datetime | None:
        """When the earliest entry not held may be claimed (a claimed one: once its
        claim runs out), if there is any."""
        ...

    async def record_attempt(
        self, queue_id: QueueId, results: Sequence[RecipientAttempt], now: datetime
    ) -> None:
        """Record each recipient's result durably before returning (a DELIVERED one only
        after the remote 250). Recipients already final are left as they are."""
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
