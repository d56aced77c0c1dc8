"""FETCH responses written straight to octets by a plan made once per command.

`fetch_items` and `FetchData.encode` look at every attribute of every message and build
a value tree to encode; for the FETCHes clients send most (a first look at a mailbox:
UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE over thousands of messages;
a message read: `UID FETCH n BODY.PEEK[]`) that walk is most of the cost. A `FetchPlan`
settles once which items are sent and in what order, and then writes each message's
response directly: cached facts with the kept wire text of ENVELOPE and BODYSTRUCTURE
(`poczta.message.fetch_text`), and the whole message (BODY[], BODY.PEEK[], RFC822,
with or without a partial range) as a literal of the stored bytes, which needs no MIME
structure.

The octets are exactly those of the general path (a property test compares them). A
FETCH asking for anything else (a part, a header, BINARY, BODY) has no plan, and a
message whose kept text does not suit the client (none kept, or non-ASCII for a UTF-8
client) gets None from `encode`, for the caller to answer through the general path. A
plan of UID, FLAGS and MODSEQ alone needs nothing from the store (`needs_facts`): the
session's view has them. Plans are kept by their attributes (`plan_for`): a client
sends the same few FETCHes over and over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from poczta.imap.fetch import BodySection, FetchAttribute, FetchItem
from poczta.imap.fetch_response import MessageFacts, is_whole_message
from poczta.imap.values import date_time
from poczta.message.imap_wire import Atom, Value, write_value

__all__ = ["FetchPlan", "plan_for"]

_FROM_VIEW = frozenset({"UID", "FLAGS", "MODSEQ"})
_PLANNED = _FROM_VIEW | {"RFC822.SIZE", "INTERNALDATE", "ENVELOPE", "BODYSTRUCTURE", "RFC822"}
_KEPT_PLANS = 64  # distinct FETCH forms kept; a client uses a handful

# An item of a plan: a simple item's name, or (response name, partial) for the message
# content (BODY[]<origin>, RFC822) taken whole or as a slice.
_Content = tuple[bytes, tuple[int, int] | None]
_Item = str | _Content
FlagItems = Sequence[tuple[str, Value]]
# Writes one item of one message: its octets, b"" to leave it out (a view item the view
# does not have), None when the kept text cannot be used.
_Writer = Callable[[int, "MessageFacts | None", FlagItems, "bytes | None"], "bytes | None"]


def _uid(uid: int, facts: MessageFacts | None, flags: FlagItems, data: bytes | None) -> bytes:
    return b"UID %d" % uid


def _size(uid: int, facts: MessageFacts | None, flags: FlagItems, data: bytes | None) -> bytes:
    return b"RFC822.SIZE %d" % _facts(facts).size


def _date(uid: int, facts: MessageFacts | None, flags: FlagItems, data: bytes | None) -> bytes:
    return b'INTERNALDATE "%s"' % date_time(_facts(facts).internal_date).encode("ascii")


def _facts(facts: MessageFacts | None) -> MessageFacts:
    if facts is None:
        raise ValueError("the plan needs the message's facts")
    return facts


_flag_texts: dict[tuple[str, ...], bytes] = {}  # FLAGS (...) of the flag sets seen
_KEPT_FLAG_TEXTS = 1024


def _view_item(name: str, utf8: bool) -> _Writer:
    """FLAGS or MODSEQ as the session's view gives them (left out when it does not)."""
    prefix = name.encode("ascii") + b" "

    def write(uid: int, facts: MessageFacts | None, flags: FlagItems, data: bytes | None) -> bytes:
        for item, value in flags:
            if item == name:
                return _flags_text(value) if name == "FLAGS" else _view_text(prefix, value)
        return b""

    def _view_text(prefix: bytes, value: Value) -> bytes:
        out = [prefix]
        write_value(value, out, utf8)
        return b"".join(out)

    def _flags_text(value: Value) -> bytes:
        """A mailbox has few distinct flag sets: their text is written once each."""
        if type(value) is not list:
            return _view_text(prefix, value)
        key = tuple(value)
        text = _flag_texts.get(key)
        if text is None:
            text = _view_text(prefix, value)
            if all(type(flag) is Atom for flag in value):
                if len(_flag_texts) >= _KEPT_FLAG_TEXTS:
                    _flag_texts.clear()
                _flag_texts[key] = text
        return text

    return write


def _kept_text(name: str, utf8: bool) -> _Writer:
    """ENVELOPE or BODYSTRUCTURE from the wire text the message keeps."""
    prefix = name.encode("ascii") + b" "
    envelope = name == "ENVELOPE"

    def write(
        uid: int, facts: MessageFacts | None, flags: FlagItems, data: bytes | None
    ) -> bytes | None:
        found = _facts(facts)
        kept = found.imap_envelope if envelope else found.imap_bodystructure
        if kept is None or (utf8 and not kept.isascii()):  # as `cached_item`
            return None
        return prefix + kept.encode("utf-8")

    return write


def _content(name: bytes, partial: tuple[int, int] | None) -> _Writer:
    """The message's bytes (or a slice) as a literal: BODY[]<origin>, RFC822."""

    def write(uid: int, facts: MessageFacts | None, flags: FlagItems, data: bytes | None) -> bytes:
        if data is None:
            raise ValueError("the plan needs the message's bytes")
        if partial is not None:
            data = data[partial[0] : partial[0] + partial[1]]
        return b"%s {%d}\r\n%s" % (name, len(data), data)

    return write


def _writer(item: _Item, utf8: bool) -> _Writer:
    if not isinstance(item, str):
        return _content(*item)
    if item == "UID":
        return _uid
    if item in _FROM_VIEW:
        return _view_item(item, utf8)
    if item in ("ENVELOPE", "BODYSTRUCTURE"):
        return _kept_text(item, utf8)
    return _size if item == "RFC822.SIZE" else _date


class FetchPlan:
    """The items of one FETCH command whose attributes the plan can write."""

    __slots__ = ("_omits", "_view_items", "_writers", "needs_body", "needs_facts", "needs_flags")

    def __init__(self, items: Sequence[_Item], utf8: bool) -> None:
        self._writers = tuple(_writer(item, utf8) for item in items)
        names = {item if isinstance(item, str) else "" for item in items}
        self.needs_facts = not _FROM_VIEW.issuperset(names)
        self._view_items = () if self.needs_facts else tuple(str(item) for item in items)
        self.needs_flags = bool(names & {"FLAGS", "MODSEQ"})
        self._omits = self.needs_flags  # a view item may be missing: b"" to drop
        self.needs_body = any(not isinstance(item, str) for item in items)

    @classmethod
    def make(
        cls,
        attributes: Sequence[FetchAttribute],
        *,
        with_uid: bool,
        utf8: bool,
        seen_set: bool = False,
    ) -> FetchPlan | None:
        """The plan for these attributes, or None when some item is not one a plan
        writes. `seen_set`: the FETCH sets \\Seen, so FLAGS is sent whether asked or not."""
        items: list[_Item] = ["UID"] if with_uid else []
        for attribute in attributes:
            if isinstance(attribute, BodySection) and is_whole_message(attribute):
                name = attribute.response_name().encode("ascii")
                items.append((name, attribute.partial))
            elif not isinstance(attribute, FetchItem) or attribute.name not in _PLANNED:
                return None
            elif attribute.name == "RFC822":
                if (b"RFC822", None) not in items:  # a simple item too: sent once
                    items.append((b"RFC822", None))
            elif attribute.name not in items:  # as `fetch_items`: each simple item once
                items.append(attribute.name)
        if seen_set and "FLAGS" not in items:
            items.append("FLAGS")
        return cls(items, utf8)

    def encode(
        self,
        number: int,
        uid: int,
        facts: MessageFacts | None,
        flag_items: FlagItems,
        data: bytes | None = None,
    ) -> bytes | None:
        """`* number FETCH (...)` for one message, or None when its kept text cannot be
        used; `flag_items` are the FLAGS (and MODSEQ) as the session's view has them
        (may be empty unless `needs_flags`), `data` the message's bytes (given when
        `needs_body`). `facts` may be None when the plan does not `needs_facts`."""
        pieces = [write(uid, facts, flag_items, data) for write in self._writers]
        if None in pieces:
            return None
        if self._omits:
            pieces = [piece for piece in pieces if piece]
        return b"* %d FETCH (%s)\r\n" % (number, b" ".join(cast("list[bytes]", pieces)))

    def encode_view(self, number: int, uid: int, flags: bytes, modseq: int | None) -> bytes:
        """`encode` of a plan that needs no facts (UID, FLAGS and MODSEQ only), from the
        wire text of the message's FLAGS list and its MODSEQ (None: not told, as when
        the view has no MODSEQ item); a resync writes hundreds of these."""
        parts: list[bytes] = []
        for name in self._view_items:
            if name == "UID":
                parts.append(b"UID %d" % uid)
            elif name == "FLAGS":
                parts.append(b"FLAGS " + flags)
            elif modseq is not None:
                parts.append(b"MODSEQ (%d)" % modseq)
        return b"* %d FETCH (%s)\r\n" % (number, b" ".join(parts))


_plans: dict[tuple[tuple[FetchAttribute, ...], bool, bool, bool], FetchPlan | None] = {}


def plan_for(
    attributes: Sequence[FetchAttribute], *, with_uid: bool, utf8: bool, seen_set: bool
) -> FetchPlan | None:
    """`FetchPlan.make` of these, made once and kept (a plan holds no message state)."""
    key = (tuple(attributes), with_uid, utf8, seen_set)
    try:
        return _plans[key]
    except KeyError:
        pass
    if len(_plans) >= _KEPT_PLANS:
        _plans.clear()
    plan = _plans[key] = FetchPlan.make(attributes, with_uid=with_uid, utf8=utf8, seen_set=seen_set)
    return plan
