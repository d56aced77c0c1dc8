"""Encoding of store values as column text: flags, times, the cached envelope and search headers.

Shared by the SQL backends so that every backend keeps the same cached parse.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from poczta.message import Address, Envelope, ParsedMessage

__all__ = [
    "MessageColumns",
    "decode_envelope",
    "decode_flags",
    "decode_headers",
    "decode_time",
    "encode_envelope",
    "encode_flags",
    "encode_headers",
    "encode_time",
    "message_columns",
    "now_text",
]


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def decode_flags(text: str) -> frozenset[str]:
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
    return [[a.name, a.mailbox, a.host] for a in items]


def encode_envelope(env: Envelope) -> str:
    return json.dumps(
        [
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
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _to_addresses(items: list[list[Any]]) -> tuple[Address, ...]:
    return tuple(Address(name, mailbox, host) for name, mailbox, host in items)


def decode_envelope(text: str) -> Envelope:
    date, subject, frm, sender, reply_to, to, cc, bcc, in_reply_to, message_id = json.loads(text)
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


MessageColumns = tuple[int, int, str | None, str, str | None, str, str]


def message_columns(parsed: ParsedMessage) -> MessageColumns:
    """(size, header_size, sent_date, subject, message_id, envelope, headers) for a row."""
    return (
        parsed.size,
        parsed.header_size,
        encode_time(parsed.date) if parsed.date else None,
        parsed.subject,
        parsed.envelope.message_id,
        encode_envelope(parsed.envelope),
        encode_headers(parsed.search_headers),
    )
