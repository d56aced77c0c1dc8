"""The typed IMAP commands the parser produces, one frozen value per command.

Every command carries its `tag`. Mailbox names are Unicode, already decoded for
the dialect (modified UTF-7 or UTF-8), with INBOX in any case spelled "INBOX".
Flags keep their case except the system flags, which are normalised
(`\\seen` → `\\Seen`). Keywords, option names and item names are upper-cased.
The UID forms of COPY, MOVE, FETCH, STORE, SEARCH, SORT and THREAD are the same
values with `uid=True`; UID EXPUNGE is `Expunge` with a UID set.

APPEND messages are not held here: their octets reach the session as
`AppendStart` / `AppendData` events while they arrive (see `reader`), and the
`Append` command that follows records each message's flags, date and size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from poczta.imap.fetch import FetchAttribute
from poczta.imap.search import AndKey
from poczta.imap.sequence import SequenceSet


@dataclass(frozen=True, slots=True)
class Command:
    """What every command has: the client's tag."""

    tag: str


@dataclass(frozen=True, slots=True)
class Capability(Command):
    """CAPABILITY."""


@dataclass(frozen=True, slots=True)
class Noop(Command):
    """NOOP."""


@dataclass(frozen=True, slots=True)
class Logout(Command):
    """LOGOUT."""


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    """STARTTLS: the reader pauses; input buffered meanwhile must be dropped."""


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """AUTHENTICATE mechanism [initial-response] (SASL-IR, RFC 4959).

    `initial_response` is the base64 text as sent (b"" for "="; None when absent),
    ready for `sasl.decode_client_response`. The reader pauses after it, so the
    session can read the client's responses with `CommandReader.expect_sasl_response`.
    """

    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True)
class Login(Command):
    """LOGIN user password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Enable(Command):
    """ENABLE capability... (RFC 5161), upper-cased."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Id(Command):
    """ID (field value ...) or ID NIL (RFC 2971); None for NIL."""

    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    """NAMESPACE."""


@dataclass(frozen=True, slots=True)
class Qresync:
    """The QRESYNC select parameter (RFC 7162 section 3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT mailbox, or EXAMINE mailbox when `read_only`; with CONDSTORE / QRESYNC."""

    mailbox: str
    read_only: bool = False
    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Create(Command):
    """CREATE mailbox [(USE (special-use ...))] (RFC 6154)."""

    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Delete(Command):
    """DELETE mailbox."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(Command):
    """RENAME existing new."""

    mailbox: str
    new_name: str


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    """SUBSCRIBE mailbox."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    """UNSUBSCRIBE mailbox."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST [(selection)] reference pattern(s) [RETURN (options)] (RFC 5258, 6154, 5819).

    `selection` holds SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE;
    `return_options` CHILDREN, SUBSCRIBED, SPECIAL-USE (and STATUS, whose items
    are in `return_status`, None when STATUS was not asked for).
    """

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    return_status: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    """LSUB reference pattern (IMAP4rev1)."""

    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status(Command):
    """STATUS mailbox (item ...): MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN, DELETED, ..."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND: its flags, date-time, literal size and literal8-ness."""

    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    size: int = 0
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Append(Command):
    """APPEND mailbox with one or more messages (MULTIAPPEND, RFC 3502).

    Emitted after the last message's octets; the octets themselves went out as
    `AppendData` events before it.
    """

    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True)
class Idle(Command):
    """IDLE: the reader pauses; the session calls `CommandReader.expect_done`."""


@dataclass(frozen=True, slots=True)
class Check(Command):
    """CHECK (IMAP4rev1)."""


@dataclass(frozen=True, slots=True)
class Close(Command):
    """CLOSE."""


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    """UNSELECT."""


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE uid-set when `uids` is set."""

    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Search(Command):
    """[UID] SEARCH [RETURN (...)] [CHARSET c] keys.

    `return_options` is None for a plain SEARCH (answered with `* SEARCH`) and a
    tuple (possibly empty, meaning ALL) for ESEARCH (RFC 4731).
    """

    uid: bool
    criteria: AndKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None


class StoreMode(Enum):
    """FLAGS (replace), +FLAGS (add) or -FLAGS (remove)."""

    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True, slots=True)
class Store(Command):
    """[UID] STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags."""

    uid: bool
    sequence: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """[UID] FETCH set items [(CHANGEDSINCE n [VANISHED])] (RFC 7162)."""

    uid: bool
    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Copy(Command):
    """[UID] COPY set mailbox."""

    uid: bool
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move(Command):
    """[UID] MOVE set mailbox (RFC 6851)."""

    uid: bool
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class SortKey:
    """One sort criterion (RFC 5256, 5957): ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, ..."""

    name: str
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Sort(Command):
    """[UID] SORT [RETURN (...)] (keys) charset criteria (RFC 5256, ESORT RFC 5267)."""

    uid: bool
    keys: tuple[SortKey, ...]
    charset: str
    criteria: AndKey
    return_options: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Thread(Command):
    """[UID] THREAD algorithm charset criteria: REFERENCES or ORDEREDSUBJECT (RFC 5256)."""

    uid: bool
    algorithm: str
    charset: str
    criteria: AndKey


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    """GETQUOTA root (RFC 9208)."""

    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    """GETQUOTAROOT mailbox (RFC 9208)."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    """SETQUOTA root (resource limit ...) (RFC 9208): (resource name, limit) pairs."""

    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Compress(Command):
    """COMPRESS mechanism (RFC 4978): the reader pauses; see `CommandReader.take_buffered`."""

    mechanism: str
