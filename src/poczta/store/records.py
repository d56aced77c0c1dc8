"""The mail store's records and errors: what every backend takes and returns.

Nothing of a backend leaks out: ids are opaque integers, a failure of the disk or the
database is `StoreUnavailable` (answer 451 4.3.0 and let the client retry), and the
other errors are `NotFound` and `AlreadyExists`. The interfaces that speak in these
records are in `poczta.store.base`, which also exports them.

Addresses are compared case-insensitively: the store lower-cases the whole address
(the local part too) before storing or looking it up, and returns it lower-cased.

Mailbox names use "/" as the hierarchy separator; "INBOX" is matched in any case.
A `DeliveryTarget` names its mailbox either by name or by special use ("\\Junk").
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, NewType, TypeVar

from poczta.message import Envelope, MimePart

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
    "AddressEntry",
    "AlreadyExists",
    "CachedStsPolicy",
    "ClaimLost",
    "Deferred",
    "Delivered",
    "DeliveryTarget",
    "FlagMode",
    "FlagResult",
    "LimitExceeded",
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
    "StoreError",
    "StoreUnavailable",
    "UserId",
    "UserRecord",
    "flags_fit",
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


class LimitExceeded(StoreError):
    """A value is larger than the store can hold (see `MAX_FLAGS_OCTETS`); nothing was
    changed. IMAP answers NO [LIMIT]."""


class NotFound(StoreError):
    """The domain, user, alias, mailbox, message or blob named does not exist."""


class ClaimLost(StoreError):
    """The queue entry is no longer claimed by the runner writing for it; nothing was
    written (another runner took it after the lease ran out)."""


class AlreadyExists(StoreError):
    """The domain, user, alias or mailbox to create exists already."""


def normalize_address(address: str) -> str:
    """The store's form of an address: stripped and lower-cased (local part too)."""
    return address.strip().lower()


_SYSTEM_BY_LOWER = {flag.lower(): flag for flag in SYSTEM_FLAGS}


# The most octets a message's flags may take, written as IMAP lists them (separated by
# spaces). The PostgreSQL store keeps them in the index SELECT reads, whose entries must
# fit in a page. IMAP refuses more on either backend (STORE, APPEND: NO [LIMIT]), so a
# mailbox moves between them whole; should more reach the PostgreSQL store anyway (two
# sessions adding keywords at once), it refuses the change with `LimitExceeded`.
MAX_FLAGS_OCTETS = 4000


def flags_fit(flags: Iterable[str]) -> bool:
    """Whether a message may carry `flags`: written as IMAP lists them, at most
    `MAX_FLAGS_OCTETS`."""
    return sum(len(flag.encode()) + 1 for flag in flags) - 1 <= MAX_FLAGS_OCTETS


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
class AddressEntry:
    """What the store holds under one address (see `MailStore.find_addresses`): whether
    its domain is one of ours, the user of that address, and the targets of the alias of
    that address, in address order (a domain's catch-all is the alias `@domain`)."""

    address: str
    local_domain: bool
    user: UserRecord | None = None
    alias_targets: tuple[str, ...] = ()


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


def _not_read(text: str) -> Any:
    raise LookupError("the message's facts were read without this one (kept_only)")


#: What a message's facts hold in place of the parts a `kept_only` read left out: using
#: one raises LookupError.
NOT_READ: Deferred[Any] = Deferred("", _not_read)


class MessageMeta:
    """One message as FETCH and SEARCH see it, without its bytes.

    A backend may hand over `envelope`, `search_headers` and `structure` as `Deferred`
    (its stored text and the decoder): each is decoded at its first use and kept, so a
    FETCH of a few items or a search of flags never pays for decoding the others.
    `imap_envelope` and `imap_bodystructure` are the wire text of FETCH's ENVELOPE and
    BODYSTRUCTURE as kept with the message (see `poczta.message.fetch_text`), None when
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

    def with_flags(self, flags: frozenset[str], modseq: int) -> MessageMeta:
        """The same message after a flag change: these flags, at this MODSEQ."""
        other = copy.copy(self)
        other.flags, other.modseq = flags, modseq
        return other

    @property
    def complete(self) -> bool:
        """Whether every fact was read (not a `kept_only` read's)."""
        return self._envelope is not NOT_READ

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


class NewsAndFacts(NamedTuple):
    """What `MailStore.news_and_facts` read as of one moment: the mailbox's version, the
    (uid, flags, modseq) of the messages changed since the MODSEQ asked, the facts of
    the UIDs asked that the mailbox holds, and such of their bodies as came along."""

    version: MailboxChange
    changes: list[tuple[int, frozenset[str], int]]
    metas: list[MessageMeta]
    bodies: dict[str, bytes]


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
