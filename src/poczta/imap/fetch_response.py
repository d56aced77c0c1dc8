"""The items of one FETCH response, from a message's cached facts and, when needed, its bytes.

`needs_body` says whether any attribute needs the stored bytes (sections, RFC822*,
BINARY), and `needs_structure` whether they need the MIME structure too (the whole
message, BODY[], does not); the rest (FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE,
BODYSTRUCTURE, MODSEQ) comes from the parse cached at delivery, so a client's first open of a large
mailbox reads no message file. ENVELOPE and BODYSTRUCTURE are sent as the wire text
the message keeps (`poczta.message.fetch_text`) where that suits the client, and the MIME
structure is decoded only for the items that need it (`needs_structure`). Sections are
slices of the stored bytes at the offsets of the cached MIME structure
(`poczta.message.imap_body`); HEADER.FIELDS[.NOT] filters the fields of that header.
A section naming no part is an empty string, as Dovecot answers; BINARY of an unknown
transfer encoding is `UnknownEncoding` for the session to answer NO [UNKNOWN-CTE].
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from poczta.imap.fetch import BinarySize, BodySection, FetchAttribute, FetchItem
from poczta.imap.fetch_cache import cached_item
from poczta.imap.values import date_time
from poczta.message.envelope import Envelope
from poczta.message.header import split_header
from poczta.message.imap_body import (
    UnknownEncoding,
    binary_section,
    body,
    bodystructure,
    envelope_value,
    section_range,
)
from poczta.message.imap_wire import Binary, Octets, Value
from poczta.message.mime import MimePart

__all__ = [
    "BODY_FREE",
    "MessageFacts",
    "UnknownEncoding",
    "fetch_items",
    "is_whole_message",
    "needs_body",
    "needs_structure",
    "sets_seen",
]

#: Items answered from the cached facts alone.
BODY_FREE = frozenset(
    {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "MODSEQ"}
)
#: Items answered without the MIME structure (BODYSTRUCTURE too, from its kept text).
_STRUCTURE_FREE = frozenset(
    {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "MODSEQ", "RFC822"}
)


class MessageFacts(Protocol):
    """What FETCH reads of a message besides its bytes (the store's `MessageMeta`)."""

    @property
    def uid(self) -> int: ...
    @property
    def internal_date(self) -> datetime: ...
    @property
    def size(self) -> int: ...
    @property
    def envelope(self) -> Envelope: ...
    @property
    def structure(self) -> MimePart | None: ...
    @property
    def imap_envelope(self) -> str | None: ...
    @property
    def imap_bodystructure(self) -> str | None: ...


def asks_item(attributes: Sequence[FetchAttribute], name: str) -> bool:
    """Whether the plain item `name` (FLAGS, MODSEQ, UID...) is among `attributes`."""
    return any(isinstance(a, FetchItem) and a.name == name for a in attributes)


def needs_body(attributes: Sequence[FetchAttribute]) -> bool:
    return any(not (isinstance(a, FetchItem) and a.name in BODY_FREE) for a in attributes)


def needs_structure(
    attributes: Sequence[FetchAttribute], facts: MessageFacts, utf8: bool = False
) -> bool:
    """Whether answering these for this message needs its MIME structure."""
    for attribute in attributes:
        if not isinstance(attribute, FetchItem):
            if is_whole_message(attribute):
                continue
            return True
        name = attribute.name
        if name not in _STRUCTURE_FREE and not (
            name == "BODYSTRUCTURE" and cached_item(facts.imap_bodystructure, utf8) is not None
        ):
            return True
    return False


def is_whole_message(attribute: FetchAttribute) -> bool:
    """BODY[] or BODY.PEEK[] (partial or not): the stored bytes, no MIME structure needed."""
    return (
        isinstance(attribute, BodySection)
        and not attribute.binary
        and not attribute.part
        and attribute.text is None
    )


def sets_seen(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether fetching these marks the message \\Seen (a non-PEEK body, RFC822, RFC822.TEXT)."""
    for attribute in attributes:
        if isinstance(attribute, BodySection) and not attribute.peek:
            return True
        if isinstance(attribute, FetchItem) and attribute.name in ("RFC822", "RFC822.TEXT"):
            return True
    return False


def _filtered_header(raw: bytes, names: Sequence[str], keep: bool) -> bytes:
    wanted = {name.lower() for name in names}
    header = split_header(raw)
    out = [raw[f.start : f.end] for f in header if (f.key in wanted) == keep]
    return b"".join(out) + b"\r\n"


def _section(data: bytes, root: MimePart, section: BodySection) -> bytes:
    text = section.text or ""
    found = section_range(root, section.part, text)
    if found is None:
        return b""
    raw = data[found[0] : found[1]]
    if text.startswith("HEADER.FIELDS"):
        return _filtered_header(raw, section.fields, keep=text == "HEADER.FIELDS")
    return raw


def _partial(content: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return content
    origin, length = partial
    return content[origin : origin + length]


def fetch_items(
    attributes: Sequence[FetchAttribute],
    facts: MessageFacts,
    root: MimePart | None,
    data: bytes | None,
    flag_items: list[tuple[str, Value]],
    *,
    with_uid: bool,
    utf8: bool = False,
) -> list[tuple[str, Value]] | UnknownEncoding:
    """The items, in the order asked (UID first when `with_uid`); `flag_items` are the
    FLAGS (and MODSEQ) as the session's view has them. `root` is the MIME structure,
    which may be None when `needs_structure` says it is not needed; `utf8` says the
    client enabled UTF-8."""
    items: list[tuple[str, Value]] = [("UID", facts.uid)] if with_uid else []
    given = {"UID"} if with_uid else set()  # the simple items, each given once
    named = dict(flag_items)
    for attribute in attributes:
        if isinstance(attribute, FetchItem):
            item = _simple(attribute.name, facts, root, data, named, utf8)
            if item is not None and item[0] not in given:
                given.add(item[0])
                items.append(item)
        elif isinstance(attribute, BinarySize):
            assert data is not None and root is not None
            decoded = binary_section(data, root, attribute.part)
            if isinstance(decoded, UnknownEncoding):
                return decoded
            size = len(decoded) if decoded is not None else 0
            items.append((f"BINARY.SIZE[{'.'.join(map(str, attribute.part))}]", size))
        elif is_whole_message(attribute):
            assert data is not None
            items.append((attribute.response_name(), Octets(_partial(data, attribute.partial))))
        else:
            assert data is not None and root is not None
            if attribute.binary:
                decoded = binary_section(data, root, attribute.part)
                if isinstance(decoded, UnknownEncoding):
                    return decoded
                content: bytes = Binary(_partial(decoded or b"", attribute.partial))
            else:
                content = Octets(_partial(_section(data, root, attribute), attribute.partial))
            items.append((attribute.response_name(), content))
    return items


def _simple(
    name: str,
    facts: MessageFacts,
    root: MimePart | None,
    data: bytes | None,
    named: dict[str, Value],
    utf8: bool,
) -> tuple[str, Value] | None:
    if name in ("FLAGS", "MODSEQ"):
        return (name, named[name]) if name in named else None
    if name == "UID":
        return "UID", facts.uid
    if name == "INTERNALDATE":
        return "INTERNALDATE", date_time(facts.internal_date)
    if name == "RFC822.SIZE":
        return "RFC822.SIZE", facts.size
    if name == "ENVELOPE":
        cached = cached_item(facts.imap_envelope, utf8)
        return "ENVELOPE", cached if cached is not None else envelope_value(facts.envelope)
    if name == "BODYSTRUCTURE":
        cached = cached_item(facts.imap_bodystructure, utf8)
        if cached is not None:
            return "BODYSTRUCTURE", cached
    if name == "RFC822":
        assert data is not None
        return "RFC822", Octets(data)
    assert root is not None
    if name == "BODYSTRUCTURE":
        return "BODYSTRUCTURE", bodystructure(root)
    if name == "BODY":
        return "BODY", body(root)
    assert data is not None
    if name == "RFC822.HEADER":
        return "RFC822.HEADER", Octets(data[: root.body_start])
    if name == "RFC822.TEXT":
        return "RFC822.TEXT", Octets(data[root.body_start : root.body_end])
    return None  # EMAILID, THREADID, SAVEDATE: not kept
