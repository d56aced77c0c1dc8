"""Encoding of store values as column text: flags, times, the cached envelope, search
headers and MIME structure.

Shared by the SQL backends so that every backend keeps the same cached parse. With the
parse a message keeps the wire text of FETCH ENVELOPE and BODYSTRUCTURE, made by
`poczta.message.fetch_text` (text the store keeps for IMAP without reading it).

The MIME structure is read for every FETCH of BODYSTRUCTURE or a body section, so its
text is compact JSON decoded by the C parser, one list per part: type, subtype,
parameters (a flat list), the three offsets, size and lines, then the rarely present
fields as one list (or 0), the parts (or 0), and the encapsulated message (or 0) as
[envelope, root].
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from poczta.message import Address, Envelope, MimePart, ParsedMessage
from poczta.message.fetch_text import bodystructure_text, envelope_text
from poczta.message.mime import Encapsulated
from poczta.store.records import NOT_READ, Deferred

__all__ = [
    "MessageColumns",
    "decode_envelope",
    "decode_flags",
    "decode_headers",
    "decode_structure",
    "decode_time",
    "encode_envelope",
    "encode_flags",
    "encode_headers",
    "encode_structure",
    "encode_time",
    "message_columns",
    "now_text",
]


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


@lru_cache(maxsize=4096)
def decode_flags(text: str) -> frozenset[str]:
    """The flags of a row; the same set for the same text (a mailbox has few distinct)."""
    return frozenset(text.split()) if text else frozenset()


def encode_time(moment: datetime) -> str:
    """ISO 8601 text; a naive time is taken as UTC. The offset is kept as given."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def decode_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def now_text() -> str:
    return datetime.now(UTC).isoformat()


def _addresses(items: tuple[Address, ...]) -> list[list[str | None]]:
    return [
        [a.name, a.mailbox, a.host, a.route] if a.route else [a.name, a.mailbox, a.host]
        for a in items
    ]


def encode_envelope(env: Envelope) -> str:
    return json.dumps(_envelope_list(env), ensure_ascii=False, separators=(",", ":"))


def _envelope_list(env: Envelope) -> list[Any]:
    return [
        env.date,
        env.subject,
        _addresses(env.from_),
        _addresses(env.sender),
        _addresses(env.reply_to),
        _addresses(env.to),
        _addresses(env.cc),
        _addresses(env.bcc),
        env.in_reply_to,
        env.message_id,
    ]


def _to_addresses(items: list[list[Any]]) -> tuple[Address, ...]:
    return tuple(Address(*item) for item in items)


def decode_envelope(text: str) -> Envelope:
    return _list_envelope(json.loads(text))


def _list_envelope(items: list[Any]) -> Envelope:
    date, subject, frm, sender, reply_to, to, cc, bcc, in_reply_to, message_id = items
    return Envelope(
        date=date,
        subject=subject,
        from_=_to_addresses(frm),
        sender=_to_addresses(sender),
        reply_to=_to_addresses(reply_to),
        to=_to_addresses(to),
        cc=_to_addresses(cc),
        bcc=_to_addresses(bcc),
        in_reply_to=in_reply_to,
        message_id=message_id,
    )


def encode_headers(headers: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(headers, ensure_ascii=False, separators=(",", ":"))


def decode_headers(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in json.loads(text))


def _part_list(part: MimePart) -> list[Any]:
    params: list[str] = []
    for name, value in part.params:
        params += [name, value]
    rare: Any = 0
    if (
        part.encoding is not None
        or part.id is not None
        or part.description is not None
        or part.md5 is not None
        or part.disposition is not None
        or part.language
        or part.location is not None
    ):
        disposition = part.disposition
        rare = [
            part.encoding,
            part.id,
            part.description,
            part.md5,
            None
            if disposition is None
            else [disposition[0], [x for kv in disposition[1] for x in kv]],
            list(part.language),
            part.location,
        ]
    message = part.message
    return [
        part.type,
        part.subtype,
        params,
        part.header_start,
        part.body_start,
        part.body_end,
        part.size,
        part.lines,
        rare,
        [_part_list(child) for child in part.parts] if part.parts else 0,
        [_envelope_list(message.envelope), _part_list(message.root)] if message else 0,
    ]


def encode_structure(root: MimePart | None) -> str | None:
    if root is None:
        return None
    return json.dumps(_part_list(root), ensure_ascii=False, separators=(",", ":"))


def _pairs(flat: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(zip(flat[::2], flat[1::2], strict=True)) if flat else ()


def _list_part(items: list[Any]) -> MimePart:
    kind, subtype, params, header_start, body_start, body_end, size, lines, rare, parts, msg = items
    children = tuple(_list_part(child) for child in parts) if parts else ()
    message = Encapsulated(_list_envelope(msg[0]), _list_part(msg[1])) if msg else None
    if not rare:
        return MimePart(
            kind,
            subtype,
            _pairs(params),
            header_start,
            body_start,
            body_end,
            size,
            lines,
            parts=children,
            message=message,
        )
    encoding, content_id, description, md5, disposition, language, location = rare
    return MimePart(
        kind,
        subtype,
        _pairs(params),
        header_start,
        body_start,
        body_end,
        size,
        lines,
        encoding,
        content_id,
        description,
        md5,
        None if disposition is None else (disposition[0], _pairs(disposition[1])),
        tuple(language),
        location,
        children,
        message,
    )


def decode_structure(text: str | None) -> MimePart | None:
    """The structure of a row; None for a row written before structures were kept."""
    return _list_part(json.loads(text)) if text else None


StoredParse = tuple[
    Deferred[Envelope], Deferred[tuple[tuple[str, str], ...]], Deferred[MimePart | None] | None
]


#: The parse of a row read without it (`fetch_meta`'s kept_only): using a part raises.
PARSE_NOT_READ: StoredParse = (NOT_READ, NOT_READ, NOT_READ)


def stored_parse(envelope: str, headers: str, structure: str | None) -> StoredParse:
    """A row's envelope, headers and structure as `MessageMeta` takes them: each decoded
    at its first use (no structure: a row written before structures were kept)."""
    return (
        Deferred(envelope, decode_envelope),
        Deferred(headers, decode_headers),
        Deferred(structure, decode_structure) if structure else None,
    )


MessageColumns = tuple[
    int, int, str | None, str, str | None, str, str, str | None, str, str | None
]


def message_columns(parsed: ParsedMessage) -> MessageColumns:
    """(size, header_size, sent_date, subject, message_id, envelope, headers, structure,
    imap_envelope, imap_bodystructure) for a row."""
    return (
        parsed.size,
        parsed.header_size,
        encode_time(parsed.date) if parsed.date else None,
        parsed.subject,
        parsed.envelope.message_id,
        encode_envelope(parsed.envelope),
        encode_headers(parsed.search_headers),
        encode_structure(parsed.structure),
        envelope_text(parsed.envelope),
        bodystructure_text(parsed.structure),
    )
