"""Messages for the SEARCH, SORT and THREAD tests: `MessageMeta`s made from message text.

`message(...)` writes a small RFC 5322 message from keyword arguments and parses it the
way delivery does (`parse_message`), so the tests see what the store would keep.
`metas` is a Hypothesis strategy of arbitrary, possibly odd, messages.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from poczta.message import parse_message
from poczta.store.base import MessageMeta

BASE_DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def meta_of(raw: bytes, *, uid: int = 1, flags: frozenset[str] = frozenset(),
            internal_date: datetime = BASE_DATE, modseq: int = 1) -> MessageMeta:
    parsed = parse_message(raw)
    return MessageMeta(
        uid=uid, modseq=modseq, flags=flags, internal_date=internal_date, size=parsed.size,
        digest=hashlib.sha256(raw).hexdigest(), header_size=parsed.header_size,
        sent_date=parsed.date, subject=parsed.subject, envelope=parsed.envelope,
        search_headers=parsed.search_headers,
    )


def raw_message(body: str = "hello\r\n", **fields: str) -> bytes:
    """A message with header `fields` (`message_id` is written Message-ID) and `body`."""
    lines = [f"{name.replace('_', '-').title()}: {value}" for name, value in fields.items()]
    lines = [line.replace("Message-Id", "Message-ID") for line in lines]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def message(body: str = "hello\r\n", *, uid: int = 1, flags: frozenset[str] = frozenset(),
            internal_date: datetime = BASE_DATE, modseq: int = 1, **fields: str) -> MessageMeta:
    return meta_of(raw_message(body, **fields), uid=uid, flags=flags,
                   internal_date=internal_date, modseq=modseq)


_zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-11))])
_dates = st.builds(
    lambda day, zone: day.replace(tzinfo=zone),
    st.datetimes(datetime(1970, 1, 2), datetime(2100, 1, 1)), _zones,
)
_flags = st.frozensets(st.sampled_from(
    ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Junk", "work", "WORK"]))
_header_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                       max_size=30)
_ids = st.sampled_from(["<a@x>", "<b@x>", "<c@x>", "<d@x>"])
_raw = st.builds(
    lambda subject, sender, to, date, own, refs, body: raw_message(
        body, subject=subject, **{"from": sender}, to=to, date=date, message_id=own,
        references=refs),
    st.one_of(st.sampled_from(["Re: x", "x", "[l] x", "Fwd: y"]), _header_text),
    _header_text, _header_text,
    st.one_of(st.just("Wed, 1 May 2024 10:00:00 +0200"), _header_text),
    st.one_of(_ids, _header_text),
    st.one_of(st.lists(_ids, max_size=3).map(" ".join), _header_text), _header_text,
)


@st.composite
def mailboxes(draw: st.DrawFn, max_size: int = 8) -> list[MessageMeta]:
    """A mailbox of arbitrary messages in UID order."""
    count = draw(st.integers(0, max_size))
    uids = sorted(draw(st.sets(st.integers(1, 50), min_size=count, max_size=count)))
    return [
        meta_of(draw(_raw), uid=uid, flags=draw(_flags), internal_date=draw(_dates),
                modseq=draw(st.integers(1, 100)))
        for uid in uids
    ]
