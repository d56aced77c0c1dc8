"""SEARCH evaluation: which messages of a mailbox a search-key tree matches (RFC 9051 6.4.4).

`evaluate(criteria, messages, context, body)` takes the selected mailbox's messages in
message-sequence-number order and returns the matching sequence numbers, ascending;
`uids_of` turns them into UIDs for UID SEARCH. The messages need only the facts of
`SearchableMessage`, which the store's `MessageMeta` has.

The tree is compiled once into predicates before the mailbox is walked: needles are
folded once (`basesubject.search_fold`), sets resolved once, and the keys of every group
ordered so that cheap ones (flags, sets, sizes, dates) decide before header keys, and
header keys before BODY and TEXT. Only those two need the message text; `needs_body`
says whether a search does, and `body(msn)` is then called lazily, at most once per
message, for messages the cheaper keys did not already decide (see `search_text`). It
gives the decoded text, or an object that looks into the text itself (`body_search`,
which decides on a part's octets where it can, without decoding them).

Choices where the RFCs leave room, or poczta differs:

- poczta keeps no \\Recent flag (RFC 9051 dropped it). RECENT matches the messages whose
  UIDs the session puts in `SearchContext.recent_uids` (normally none), NEW is RECENT and
  UNSEEN, OLD is NOT RECENT: with no recent set, RECENT and NEW match nothing and OLD all.
- BEFORE/ON/SINCE compare the calendar date of the internal date in its own time zone;
  SENTBEFORE/SENTON/SENTSINCE the date of the Date: field as written (in its own zone),
  or the internal date's when the message has no valid Date: field.
- Substrings match case-insensitively after case folding and NFC normalisation of both
  sides; header values are the decoded ones. HEADER with an empty string asks whether
  the field is present. FROM/TO/CC/BCC look into the address list as text
  (`Name <mailbox@host>, ...`, group names included) and into the decoded field
  as written (so a name given as a comment, `user@host (Name)`, is found). TEXT
  looks into the header fields (names and decoded values) and the body text.
- MODSEQ compares the message's mod-sequence (poczta keeps no per-flag ones, which
  RFC 7162 allows); OLDER n is an internal date more than n seconds before `now`,
  YOUNGER n one at most n seconds before.
- `*` is the mailbox's largest sequence number, or largest UID in a UID set; numbers
  beyond it match nothing. `$` matches the UIDs in `SearchContext.saved_uids`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from poczta.imap.basesubject import search_fold
from poczta.imap.search import (
    AgeKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    KeywordKey,
    ModSeqKey,
    NotKey,
    OrKey,
    SearchKey,
    SetKey,
    SizeKey,
    TextKey,
)
from poczta.message import Address, Envelope, decode_words

__all__ = [
    "BodyText",
    "SearchContext",
    "SearchableMessage",
    "SearchableText",
    "address_text",
    "evaluate",
    "flags_test",
    "highest_modseq",
    "needs_body",
    "uids_of",
    "uses_modseq",
]


class SearchableMessage(Protocol):
    """The facts of one message that SEARCH, SORT and THREAD look at."""

    @property
    def uid(self) -> int: ...
    @property
    def modseq(self) -> int: ...
    @property
    def flags(self) -> frozenset[str]: ...
    @property
    def internal_date(self) -> datetime: ...
    @property
    def size(self) -> int: ...
    @property
    def sent_date(self) -> datetime | None: ...
    @property
    def subject(self) -> str: ...
    @property
    def envelope(self) -> Envelope: ...
    @property
    def search_headers(self) -> Sequence[tuple[str, str]]: ...


class SearchableText(Protocol):
    """A message's body text as BODY and TEXT look into it (`search_text.MessageText`)."""

    def contains(self, needle: str) -> bool:
        """Whether `needle`, folded by `search_fold`, is in the folded text."""
        ...


BodyText = Callable[[int], "str | SearchableText"]
"""The body text of the message with the given sequence number: the decoded text, or
an object that searches it."""


@dataclass(frozen=True, slots=True)
class SearchContext:
    """What a search needs beyond the messages: the clock, `$` and the recent set."""

    now: datetime
    saved_uids: frozenset[int] = frozenset()
    recent_uids: frozenset[int] = frozenset()


Test = Callable[[int, SearchableMessage], bool]

_FLAG_NAMES = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
    "SEEN": "\\Seen",
}
_ADDRESS_FIELDS = {"FROM": "from_", "TO": "to", "CC": "cc", "BCC": "bcc"}
_NO_ENVELOPE = Envelope()


def needs_body(criteria: SearchKey) -> bool:
    """Whether evaluating `criteria` may need message text (BODY or TEXT)."""
    match criteria:
        case TextKey(field=field):
            return field in ("BODY", "TEXT")
        case NotKey(key=key):
            return needs_body(key)
        case OrKey(left=left, right=right):
            return needs_body(left) or needs_body(right)
        case AndKey(keys=keys):
            return any(needs_body(key) for key in keys)
    return False


def uses_modseq(criteria: SearchKey) -> bool:
    """Whether `criteria` has a MODSEQ key (the response then carries a MODSEQ)."""
    match criteria:
        case ModSeqKey():
            return True
        case NotKey(key=key):
            return uses_modseq(key)
        case OrKey(left=left, right=right):
            return uses_modseq(left) or uses_modseq(right)
        case AndKey(keys=keys):
            return any(uses_modseq(key) for key in keys)
    return False


def uids_of(numbers: Sequence[int], messages: Sequence[SearchableMessage]) -> list[int]:
    """The UIDs of the messages with sequence numbers `numbers`."""
    return [messages[number - 1].uid for number in numbers]


def highest_modseq(numbers: Sequence[int], messages: Sequence[SearchableMessage]) -> int | None:
    """The highest mod-sequence among the matched messages (None when there are none)."""
    return max((messages[number - 1].modseq for number in numbers), default=None)


def evaluate(
    criteria: SearchKey,
    messages: Sequence[SearchableMessage],
    context: SearchContext,
    body: BodyText | None = None,
) -> list[int]:
    """The sequence numbers (ascending) of the `messages` that match `criteria`.

    `body` must be given when `needs_body(criteria)`; it is called only for messages
    that the other keys leave undecided.
    """
    if body is None and needs_body(criteria):
        raise ValueError("BODY and TEXT need the message text: pass body")
    largest_uid = messages[-1].uid if messages else 0
    compiler = _Compiler(context, len(messages), largest_uid, body)
    test = compiler.compile(criteria)
    if not _on_flags(criteria):
        return [number for number, message in enumerate(messages, 1) if test(number, message)]
    # The answer depends on the flags alone: one test per distinct set of flags.
    verdicts: dict[frozenset[str], bool] = {}
    found: list[int] = []
    for number, message in enumerate(messages, 1):
        verdict = verdicts.get(message.flags)
        if verdict is None:
            verdict = verdicts[message.flags] = test(number, message)
        if verdict:
            found.append(number)
    return found


def flags_test(
    criteria: SearchKey, context: SearchContext
) -> Callable[[frozenset[str]], bool] | None:
    """When `criteria` looks at flags alone: the test of a set of flags (else None), so
    that a caller holding the mailbox's messages grouped by flags tests each set once."""
    if not _on_flags(criteria):
        return None
    test = _Compiler(context, 0, 0, None).compile(criteria)
    return lambda flags: test(0, _Flagged(flags))


@dataclass(frozen=True, slots=True)
class _Flagged:
    """A message as a test of flags alone sees it."""

    flags: frozenset[str]
    uid: int = 0
    modseq: int = 0
    internal_date: datetime = datetime.min
    size: int = 0
    sent_date: datetime | None = None
    subject: str = ""
    envelope: Envelope = _NO_ENVELOPE
    search_headers: tuple[tuple[str, str], ...] = ()


def _on_flags(key: SearchKey) -> bool:
    """Whether `key` looks at a message's flags and nothing else (not \\Recent)."""
    match key:
        case FlagKey(name=name):
            return name not in ("RECENT", "OLD", "NEW")
        case KeywordKey():
            return True
        case NotKey(key=inner):
            return _on_flags(inner)
        case OrKey(left=left, right=right):
            return _on_flags(left) and _on_flags(right)
        case AndKey(keys=keys):
            return all(_on_flags(inner) for inner in keys)
    return False


def _cost(key: SearchKey) -> int:
    """0: facts at hand; 1: header text; 2: the message body."""
    match key:
        case TextKey(field=field):
            return 2 if field in ("BODY", "TEXT") else 1
        case HeaderKey():
            return 1
        case NotKey(key=inner):
            return _cost(inner)
        case OrKey(left=left, right=right):
            return max(_cost(left), _cost(right))
        case AndKey(keys=keys):
            return max((_cost(inner) for inner in keys), default=0)
    return 0


def address_text(addresses: Sequence[Address]) -> str:
    """An address list as text: `Name <mailbox@host>, ...`, groups as `name: ...;`."""
    parts: list[str] = []
    for address in addresses:
        if address.is_group_end:
            parts.append(";")
        elif address.is_group_start:
            parts.append(f"{address.mailbox}:")
        else:
            name = decode_words(address.name) if address.name else ""
            mailbox = address.address or ""
            parts.append(f"{name} <{mailbox}>" if name else mailbox)
    return ", ".join(parts)


def _all(number: int, message: SearchableMessage) -> bool:
    return True


class _Compiler:
    """Turns a search-key tree into one predicate over (sequence number, message)."""

    def __init__(
        self, context: SearchContext, count: int, largest_uid: int, body: BodyText | None
    ) -> None:
        self.context = context
        self.count = count
        self.largest_uid = largest_uid
        self.body = body
        self.now = context.now if context.now.tzinfo else context.now.replace(tzinfo=UTC)
        self._body_number = 0
        self._body_text: SearchableText = _FoldedText("")

    def compile(self, key: SearchKey) -> Test:
        match key:
            case AndKey(keys=keys):
                return self._and(keys)
            case OrKey(left=left, right=right):
                return self._or(left, right)
            case NotKey(key=inner):
                test = self.compile(inner)
                return lambda number, message: not test(number, message)
            case FlagKey(name=name):
                return self._flag(name)
            case KeywordKey(keyword=keyword, present=present):
                return _keyword(keyword, present)
            case SetKey():
                return self._set(key)
            case SizeKey(larger=larger, size=size):
                if larger:
                    return lambda number, message: message.size > size
                return lambda number, message: message.size < size
            case DateKey(name=name, date=day):
                return _date(name, day)
            case AgeKey(older=older, seconds=seconds):
                return self._age(older, seconds)
            case ModSeqKey(modseq=modseq):
                return lambda number, message: message.modseq >= modseq
            case HeaderKey(field=field, value=value):
                return _header(field.lower(), search_fold(value))
            case TextKey(field=field, value=value):
                return self._text(field, search_fold(value))
        raise AssertionError(key)  # pragma: no cover - SearchKey lists the cases above

    def _and(self, keys: Sequence[SearchKey]) -> Test:
        ordered = sorted(keys, key=_cost)
        tests = [self.compile(key) for key in ordered]
        if not tests:
            return _all
        if len(tests) == 1:
            return tests[0]
        if len(tests) == 2:
            first, second = tests
            return lambda number, message: first(number, message) and second(number, message)

        def every(number: int, message: SearchableMessage) -> bool:
            return all(test(number, message) for test in tests)

        return every

    def _or(self, left: SearchKey, right: SearchKey) -> Test:
        if _cost(right) < _cost(left):
            left, right = right, left
        first, second = self.compile(left), self.compile(right)
        return lambda number, message: first(number, message) or second(number, message)

    def _flag(self, name: str) -> Test:
        if name == "ALL":
            return _all
        if name in _FLAG_NAMES:
            flag = _FLAG_NAMES[name]
            return lambda number, message: flag in message.flags
        if name.startswith("UN") and name[2:] in _FLAG_NAMES:
            flag = _FLAG_NAMES[name[2:]]
            return lambda number, message: flag not in message.flags
        recent = self.context.recent_uids
        if name == "RECENT":
            return lambda number, message: message.uid in recent
        if name == "OLD":
            return lambda number, message: message.uid not in recent
        if name == "NEW":
            return lambda number, message: message.uid in recent and "\\Seen" not in message.flags
        raise AssertionError(name)  # pragma: no cover - FLAG_KEYS lists the names above

    def _set(self, key: SetKey) -> Test:
        if key.set.saved:
            saved = self.context.saved_uids
            return lambda number, message: message.uid in saved
        ranges = key.set.resolve(self.largest_uid if key.uid else self.count)
        lows = [low for low, _ in ranges]
        highs = [high for _, high in ranges]

        def within(value: int) -> bool:
            index = bisect_right(lows, value) - 1
            return index >= 0 and value <= highs[index]

        if key.uid:
            return lambda number, message: within(message.uid)
        return lambda number, message: within(number)

    def _age(self, older: bool, seconds: int) -> Test:
        try:
            threshold = self.now - timedelta(seconds=seconds)
        except OverflowError:
            threshold = datetime.min.replace(tzinfo=UTC)

        def age_test(number: int, message: SearchableMessage) -> bool:
            internal = message.internal_date
            if internal.tzinfo is None:
                internal = internal.replace(tzinfo=UTC)
            return internal < threshold if older else internal >= threshold

        return age_test

    def _text(self, field: str, needle: str) -> Test:
        if field == "SUBJECT":
            return lambda number, message: needle in search_fold(message.subject)
        if field in _ADDRESS_FIELDS:
            attribute, header = _ADDRESS_FIELDS[field], field.lower()

            def address_test(number: int, message: SearchableMessage) -> bool:
                addresses = getattr(message.envelope, attribute)
                if addresses and needle in search_fold(address_text(addresses)):
                    return True
                # The field as written too: comments, and every field of the name.
                return any(
                    name == header and needle in search_fold(value)
                    for name, value in message.search_headers
                )

            return address_test
        if field == "BODY":
            return lambda number, message: self._body(number).contains(needle)

        def text_test(number: int, message: SearchableMessage) -> bool:
            for name, value in message.search_headers:
                if needle in name or needle in search_fold(value):
                    return True
            return self._body(number).contains(needle)

        return text_test

    def _body(self, number: int) -> SearchableText:
        if number != self._body_number:
            assert self.body is not None  # evaluate checked needs_body
            text = self.body(number)
            self._body_text = _FoldedText(text) if isinstance(text, str) else text
            self._body_number = number
        return self._body_text


class _FoldedText:
    """Decoded text, folded at its first search."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._folded: str | None = None

    def contains(self, needle: str) -> bool:
        if self._folded is None:
            self._folded = search_fold(self._text)
        return needle in self._folded


def _keyword(keyword: str, present: bool) -> Test:
    wanted = keyword.lower()

    def has_keyword(message: SearchableMessage) -> bool:
        return keyword in message.flags or any(flag.lower() == wanted for flag in message.flags)

    if present:
        return lambda number, message: has_keyword(message)
    return lambda number, message: not has_keyword(message)


def _date(name: str, day: date) -> Test:
    sent = name.startswith("SENT")
    relation = name.removeprefix("SENT")

    def message_day(message: SearchableMessage) -> date:
        when = message.sent_date if sent and message.sent_date is not None else None
        return (when or message.internal_date).date()

    if relation == "BEFORE":
        return lambda number, message: message_day(message) < day
    if relation == "ON":
        return lambda number, message: message_day(message) == day
    return lambda number, message: message_day(message) >= day


def _header(field: str, needle: str) -> Test:
    if not needle:
        return lambda number, message: any(name == field for name, _ in message.search_headers)

    def header_test(number: int, message: SearchableMessage) -> bool:
        return any(
            name == field and needle in search_fold(value) for name, value in message.search_headers
        )

    return header_test
