"""IMAP responses as typed values, and their wire form (RFC 9051 section 7).

Every response has `encode(utf8=False) -> bytes`, the whole line(s) with CRLF.
`utf8` is True once the client enabled IMAP4rev2 or UTF8=ACCEPT: strings may then
be quoted with UTF-8 in them, and mailbox names go out in UTF-8 instead of
modified UTF-7. Status responses (`Tagged`, `Untagged`) carry a response `Code`;
untagged data are `Data` lines built by the functions below (`exists`,
`list_data`, `esearch_data`, ...), plus `ThreadData` and `FetchData`.

Values inside responses are the generic nested data of `poczta.message.imap_wire` and
`values` (re-exported here); ENVELOPE and BODYSTRUCTURE are built by the message layer
as such values.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from poczta.imap.sequence import SequenceSet
from poczta.imap.values import MailboxName, date_time, flag_atoms, mailbox_octets
from poczta.imap.values import response_text as _text
from poczta.message.imap_wire import Atom, Binary, Octets, Value, encode_value, write_value

__all__ = [
    "Atom",
    "Binary",
    "MailboxName",
    "Octets",
    "Value",
    "date_time",
    "encode_value",
    "flag_atoms",
    "mailbox_octets",
    "write_value",
]


# --------------------------------------------------------------------------- status responses


@dataclass(frozen=True, slots=True)
class Code:
    """A response code: `[NAME args...]`, e.g. Code("UIDVALIDITY", (3857529045,))."""

    name: str
    args: tuple[Value, ...] = ()

    def write(self, out: list[bytes], utf8: bool) -> None:
        """Append `[NAME args]` to `out`."""
        out += (b"[", self.name.encode("ascii"))
        for arg in self.args:
            out.append(b" ")
            write_value(arg, out, utf8)
        out.append(b"]")

    @classmethod
    def number(cls, name: str, value: int) -> Code:
        """UIDNEXT, UIDVALIDITY, UNSEEN, HIGHESTMODSEQ, APPENDLIMIT... with a number."""
        return cls(name, (value,))

    @classmethod
    def permanent_flags(cls, flags: Sequence[str]) -> Code:
        """PERMANENTFLAGS (flags...); include "\\\\*" when new keywords may be created."""
        return cls("PERMANENTFLAGS", (flag_atoms(flags),))

    @classmethod
    def append_uid(cls, uidvalidity: int, uids: SequenceSet | str) -> Code:
        """APPENDUID uidvalidity uid-set (RFC 4315)."""
        return cls("APPENDUID", (uidvalidity, Atom(str(uids))))

    @classmethod
    def copy_uid(
        cls, uidvalidity: int, source: SequenceSet | str, target: SequenceSet | str
    ) -> Code:
        """COPYUID uidvalidity source-uids target-uids (RFC 4315)."""
        return cls("COPYUID", (uidvalidity, Atom(str(source)), Atom(str(target))))

    @classmethod
    def modified(cls, numbers: SequenceSet | str) -> Code:
        """MODIFIED set (RFC 7162): the messages a conditional STORE left alone."""
        return cls("MODIFIED", (Atom(str(numbers)),))

    @classmethod
    def capability(cls, capabilities: Sequence[str]) -> Code:
        """CAPABILITY cap... in a greeting or after authentication."""
        return cls("CAPABILITY", tuple(Atom(name) for name in capabilities))

    @classmethod
    def bad_charset(cls, charsets: Sequence[str]) -> Code:
        """BADCHARSET (charset...)."""
        return cls("BADCHARSET", ([Atom(name) for name in charsets],))


STATUSES = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})


@functools.lru_cache(maxsize=256)
def _status_text(text: str, utf8: bool) -> bytes:
    """`response_text`, kept: most status texts are the same few ("FETCH completed")."""
    return _text(text, utf8)


def _status_line(
    prefix: bytes, status: str, code: Code | str | None, text: str, utf8: bool
) -> bytes:
    if status not in STATUSES:
        raise ValueError(f"unknown response status {status!r}")
    out = [prefix, b" ", status.encode("ascii")]
    if code is not None:
        out.append(b" ")
        if isinstance(code, str):
            out += (b"[", _text(code, False), b"]")
        else:
            code.write(out, utf8)
    if text:
        out += (b" ", _status_text(text, utf8))
    out.append(b"\r\n")
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Tagged:
    """The command's completion: `tag OK|NO|BAD [code] text`."""

    tag: str
    status: str
    text: str
    code: Code | str | None = None

    def encode(self, utf8: bool = False) -> bytes:
        """The response line."""
        return _status_line(self.tag.encode("ascii"), self.status, self.code, self.text, utf8)


@dataclass(frozen=True, slots=True)
class Untagged:
    """An untagged status: `* OK|NO|BAD|PREAUTH|BYE [code] text`."""

    status: str
    text: str
    code: Code | str | None = None

    def encode(self, utf8: bool = False) -> bytes:
        """The response line."""
        return _status_line(b"*", self.status, self.code, self.text, utf8)


def bye(text: str, code: Code | str | None = None) -> Untagged:
    """`* BYE text`: the server is closing the connection."""
    return Untagged("BYE", text, code)


@dataclass(frozen=True, slots=True)
class Continuation:
    """A command continuation request: `+ text`, or `+ base64` for a SASL challenge."""

    text: str = ""
    data: bytes | None = None

    @classmethod
    def challenge(cls, data: bytes) -> Continuation:
        """A SASL challenge carrying `data` (base64-encoded on the wire)."""
        return cls(data=data)

    def encode(self, utf8: bool = False) -> bytes:
        """The continuation line."""
        if self.data is not None:
            return b"+ " + base64.b64encode(self.data) + b"\r\n"
        return b"+ " + _text(self.text, utf8) + b"\r\n" if self.text else b"+ \r\n"


# --------------------------------------------------------------------------- untagged data


@dataclass(frozen=True, slots=True)
class Data:
    """Any untagged data line: `* ` followed by `values` separated by spaces.

    The typed responses below build one of these; it also serves extensions
    that have no class of their own.
    """

    values: tuple[Value, ...]

    def encode(self, utf8: bool = False) -> bytes:
        """The response line(s), literals included."""
        out = [b"*"]
        for value in self.values:
            out.append(b" ")
            write_value(value, out, utf8)
        out.append(b"\r\n")
        return b"".join(out)


def exists(count: int) -> Data:
    """`* n EXISTS`."""
    return Data((count, Atom("EXISTS")))


def recent(count: int) -> Data:
    """`* n RECENT` (IMAP4rev1)."""
    return Data((count, Atom("RECENT")))


def expunge(number: int) -> Data:
    """`* n EXPUNGE`."""
    return Data((number, Atom("EXPUNGE")))


def flags(names: Sequence[str]) -> Data:
    """`* FLAGS (\\Answered ...)`."""
    return Data((Atom("FLAGS"), flag_atoms(names)))


def capability(names: Sequence[str]) -> Data:
    """`* CAPABILITY IMAP4rev2 ...`."""
    return Data((Atom("CAPABILITY"), *(Atom(name) for name in names)))


def enabled(names: Sequence[str]) -> Data:
    """`* ENABLED cap...` (RFC 5161); an empty list is allowed."""
    return Data((Atom("ENABLED"), *(Atom(name) for name in names)))


def id_data(parameters: Sequence[tuple[str, str | None]] | None) -> Data:
    """`* ID ("name" "poczta" ...)` or `* ID NIL`."""
    listed: Value = None if parameters is None else [v for pair in parameters for v in pair]
    return Data((Atom("ID"), listed))


def list_data(
    attributes: Sequence[str],
    delimiter: str | None,
    mailbox: str,
    *,
    childinfo: Sequence[str] = (),
    oldname: str | None = None,
    lsub: bool = False,
) -> Data:
    """`* LIST (\\HasNoChildren) "/" name` with CHILDINFO / OLDNAME extended data."""
    values: list[Value] = [
        Atom("LSUB" if lsub else "LIST"),
        flag_atoms(attributes),
        delimiter,
        MailboxName(mailbox),
    ]
    extended: list[Value] = []
    if childinfo:
        extended += ["CHILDINFO", list(childinfo)]
    if oldname is not None:
        extended += ["OLDNAME", [MailboxName(oldname)]]
    if extended:
        values.append(extended)
    return Data(tuple(values))


def status_data(mailbox: str, items: Sequence[tuple[str, int]]) -> Data:
    """`* STATUS name (MESSAGES 3 UIDNEXT 7)`."""
    listed: list[Value] = []
    for name, number in items:
        listed += (Atom(name), number)
    return Data((Atom("STATUS"), MailboxName(mailbox), listed))


def _numbers(name: str, numbers: Sequence[int], modseq: int | None) -> Data:
    values: list[Value] = [Atom(name), *numbers]
    if modseq is not None:
        values.append([Atom("MODSEQ"), modseq])
    return Data(tuple(values))


def search_data(numbers: Sequence[int], modseq: int | None = None) -> Data:
    """`* SEARCH 2 84 882`, with `(MODSEQ n)` after a CONDSTORE search."""
    return _numbers("SEARCH", numbers, modseq)


def sort_data(numbers: Sequence[int], modseq: int | None = None) -> Data:
    """`* SORT 2 3 6`."""
    return _numbers("SORT", numbers, modseq)


def esearch_data(
    tag: str | None,
    *,
    uid: bool,
    minimum: int | None = None,
    maximum: int | None = None,
    count: int | None = None,
    all: SequenceSet | str | None = None,
    modseq: int | None = None,
) -> Data:
    """`* ESEARCH (TAG "a1") UID MIN 2 COUNT 3 ALL 2:4 MODSEQ 9` (RFC 4731)."""
    values: list[Value] = [Atom("ESEARCH")]
    if tag is not None:
        values.append([Atom("TAG"), tag])
    if uid:
        values.append(Atom("UID"))
    for name, number in (("MIN", minimum), ("MAX", maximum), ("COUNT", count)):
        if number is not None:
            values += (Atom(name), number)
    if all is not None and str(all):
        values += (Atom("ALL"), Atom(str(all)))
    if modseq is not None:
        values += (Atom("MODSEQ"), modseq)
    return Data(tuple(values))


def vanished(uids: SequenceSet | str, *, earlier: bool = False) -> Data:
    """`* VANISHED (EARLIER) 300:310,405` (RFC 7162)."""
    values: list[Value] = [Atom("VANISHED")]
    if earlier:
        values.append([Atom("EARLIER")])
    values.append(Atom(str(uids)))
    return Data(tuple(values))


Namespaces = Sequence[tuple[str, str | None]] | None


def namespace_data(personal: Namespaces, other: Namespaces, shared: Namespaces) -> Data:
    """`* NAMESPACE (("" "/")) NIL NIL`: (prefix, delimiter) pairs per class."""

    def listed(spaces: Namespaces) -> Value:
        if spaces is None:
            return None
        return [[MailboxName(prefix), delimiter] for prefix, delimiter in spaces]

    return Data((Atom("NAMESPACE"), listed(personal), listed(other), listed(shared)))


def quota_data(root: str, resources: Sequence[tuple[str, int, int]]) -> Data:
    """`* QUOTA "" (STORAGE 10 512)`: (resource, usage, limit) triples (RFC 9208)."""
    listed: list[Value] = []
    for name, usage, limit in resources:
        listed += (Atom(name), usage, limit)
    return Data((Atom("QUOTA"), MailboxName(root), listed))


def quota_root_data(mailbox: str, roots: Sequence[str]) -> Data:
    """`* QUOTAROOT INBOX ""`."""
    return Data((Atom("QUOTAROOT"), MailboxName(mailbox), *(MailboxName(r) for r in roots)))


Thread = Sequence["int | Thread"]


def _thread(node: Thread, out: list[bytes]) -> None:
    out.append(b"(")
    numbers = [item for item in node if isinstance(item, int)]
    out.append(b" ".join(b"%d" % number for number in numbers))
    branches = [item for item in node if not isinstance(item, int)]
    if numbers and branches:
        out.append(b" ")
    for branch in branches:
        _thread(branch, out)
    out.append(b")")


@dataclass(frozen=True, slots=True)
class ThreadData:
    """`* THREAD (2)(3 6 (4 23)(44 7 96))` (RFC 5256).

    A thread is a sequence of message numbers (a chain, parent first) optionally
    followed by sub-threads (the branches below the last number); a thread that
    starts with sub-threads has a missing common parent.
    """

    threads: Sequence[Thread]

    def encode(self, utf8: bool = False) -> bytes:
        """The response line."""
        out = [b"* THREAD"]
        if self.threads:
            out.append(b" ")
        for thread in self.threads:
            _thread(thread, out)
        out.append(b"\r\n")
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class FetchData:
    """`* n FETCH (NAME value ...)`: items as (name, value) in the order to send.

    Names are item names as sent (`FLAGS`, `UID`, `BODY[HEADER]<0>`, see
    `BodySection.response_name`); values are generic values: `flag_atoms(...)`
    for FLAGS, `date_time(...)` for INTERNALDATE, `Octets` for BODY[...] and
    RFC822*, `Binary` for BINARY[...], nested values for ENVELOPE and BODYSTRUCTURE.
    """

    number: int
    items: Sequence[tuple[str, Value]]

    def encode(self, utf8: bool = False) -> bytes:
        """The response, message literals included."""
        out = [b"* %d FETCH (" % self.number]
        for index, (name, value) in enumerate(self.items):
            if index:
                out.append(b" ")
            out += (name.encode("ascii"), b" ")
            write_value(value, out, utf8)
        out.append(b")\r\n")
        return b"".join(out)


Response = Tagged | Untagged | Continuation | Data | ThreadData | FetchData
