"""SEARCH criteria: the typed search-key tree and its parser (RFC 9051 section 6.4.4).

Covers every RFC 9051 and RFC 3501 key, MODSEQ (RFC 7162), OLDER/YOUNGER
(RFC 5032), `$` (RFC 5182), OR/NOT and parenthesised groups, the CHARSET prefix
and the ESEARCH `RETURN (...)` options (RFC 4731). The tree is bounded by the
scanner's limits: nesting depth and the number of keys.

Strings are decoded to Unicode: with the CHARSET the client named (one of
`SEARCH_CHARSETS`; another is refused with NO [BADCHARSET]) or else as UTF-8.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from datetime import date

from poczta.imap.lexer import ParseError, Scanner
from poczta.imap.sequence import SequenceSet

SEARCH_CHARSETS = ("US-ASCII", "UTF-8", "ISO-8859-1", "ISO-8859-2", "ISO-8859-15", "WINDOWS-1252")
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "COUNT", "ALL", "SAVE"})

FLAG_KEYS = frozenset(
    {
        "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
        "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
    }
)  # fmt: skip
TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
DATE_KEYS = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
ARGUMENT_KEYS = TEXT_KEYS | DATE_KEYS | {
    "KEYWORD", "UNKEYWORD", "HEADER", "LARGER", "SMALLER", "OLDER", "YOUNGER", "UID", "MODSEQ",
    "NOT", "OR",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FlagKey:
    """A key without argument: ALL, SEEN, UNSEEN, NEW, RECENT, ... (`name` upper-case)."""

    name: str


@dataclass(frozen=True, slots=True)
class KeywordKey:
    """KEYWORD flag (`present`) or UNKEYWORD flag."""

    keyword: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class TextKey:
    """BCC, BODY, CC, FROM, SUBJECT, TEXT or TO containing `value`."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """HEADER field-name string: the field contains `value` ("" means: is present)."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class DateKey:
    """BEFORE/ON/SINCE (internal date) or SENTBEFORE/SENTON/SENTSINCE (Date: field)."""

    name: str
    date: date


@dataclass(frozen=True, slots=True)
class SizeKey:
    """LARGER n (`larger`) or SMALLER n, in octets."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class AgeKey:
    """OLDER n (`older`) or YOUNGER n seconds, against the internal date (RFC 5032)."""

    older: bool
    seconds: int


@dataclass(frozen=True, slots=True)
class SetKey:
    """A message set: UID set (`uid`) or sequence set; `$` when the set is `saved`."""

    set: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """MODSEQ [entry-name entry-type] n: a mod-sequence of at least `modseq`.

    `entry_type` is "priv", "shared" or "all" when an entry is named.
    """

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class NotKey:
    """NOT key."""

    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    """OR key key."""

    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    """All of `keys`: a parenthesised group, and the top of every search program."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    FlagKey
    | KeywordKey
    | TextKey
    | HeaderKey
    | DateKey
    | SizeKey
    | AgeKey
    | SetKey
    | ModSeqKey
    | NotKey
    | OrKey
    | AndKey
)


def parse_charset(scanner: Scanner) -> str:
    """A CHARSET argument, upper-cased; NO [BADCHARSET (...)] when not supported."""
    name = scanner.text(scanner.astring("a charset")).upper()
    if name not in SEARCH_CHARSETS:
        listed = " ".join(SEARCH_CHARSETS)
        raise ParseError("charset not supported", code=f"BADCHARSET ({listed})", status="NO")
    return name


def parse_return_options(scanner: Scanner) -> tuple[str, ...]:
    """`RETURN (MIN MAX ...)` after the keyword RETURN: the options, upper-cased."""
    scanner.sp()
    options = scanner.paren_list(scanner.keyword, empty=True)
    for option in options:
        if option not in SEARCH_RETURN_OPTIONS:
            raise ParseError(f"unknown search return option {option}")
    return tuple(dict.fromkeys(options))


def parse_program(scanner: Scanner, charset: str | None) -> AndKey:
    """One or more search keys separated by spaces, to the end of the command."""
    keys = [parse_key(scanner, charset)]
    while not scanner.at_end():
        scanner.sp()
        keys.append(parse_key(scanner, charset))
    return AndKey(tuple(keys))


def _string(scanner: Scanner, charset: str | None) -> str:
    raw = scanner.astring("a search string")
    if charset is None or charset == "UTF-8" or scanner.dialect.utf8:
        return scanner.text(raw, "search string")
    try:
        return codecs.decode(raw, charset)
    except UnicodeDecodeError:
        raise ParseError(f"search string is not valid {charset}") from None


def parse_key(scanner: Scanner, charset: str | None) -> SearchKey:
    """One search key (a group, NOT and OR recursing, bounded by depth and count)."""
    scanner.search_keys += 1
    if scanner.search_keys > scanner.limits.max_search_keys:
        raise ParseError("too many search keys", code="LIMIT")
    char = scanner.peek()
    if char == 0x28:  # "("
        return _group(scanner, charset)
    if 0x30 <= char <= 0x39 or char in (0x2A, 0x24):  # digit, "*", "$"
        return SetKey(scanner.sequence_set(), uid=False)
    name = scanner.keyword("a search key")
    if name in FLAG_KEYS:
        return FlagKey(name)
    if name not in ARGUMENT_KEYS:
        raise ParseError(f"unknown search key {name[:32]}")
    scanner.sp()
    if name in TEXT_KEYS:
        return TextKey(name, _string(scanner, charset))
    if name in DATE_KEYS:
        return DateKey(name, scanner.date())
    return _key_with_argument(scanner, name, charset)


def _key_with_argument(scanner: Scanner, name: str, charset: str | None) -> SearchKey:
    if name in ("KEYWORD", "UNKEYWORD"):
        return KeywordKey(scanner.atom("a keyword"), present=name == "KEYWORD")
    if name == "HEADER":
        field = scanner.text(scanner.astring("a header field name"), "header field name")
        scanner.sp()
        return HeaderKey(field, _string(scanner, charset))
    if name in ("LARGER", "SMALLER"):
        return SizeKey(name == "LARGER", scanner.number("a size", wide=True))
    if name in ("OLDER", "YOUNGER"):
        return AgeKey(name == "OLDER", scanner.number("an interval", nonzero=True))
    if name == "UID":
        return SetKey(scanner.sequence_set(), uid=True)
    if name == "MODSEQ":
        return _modseq(scanner)
    if name in ("NOT", "OR"):
        scanner.enter()
        first = parse_key(scanner, charset)
        if name == "NOT":
            scanner.leave()
            return NotKey(first)
        scanner.sp()
        second = parse_key(scanner, charset)
        scanner.leave()
        return OrKey(first, second)
    raise AssertionError(name)  # pragma: no cover - ARGUMENT_KEYS lists the names above


def _group(scanner: Scanner, charset: str | None) -> AndKey:
    scanner.enter()
    scanner.expect(b"(", "(")
    keys = [parse_key(scanner, charset)]
    while not scanner.take(b")"):
        scanner.sp()
        keys.append(parse_key(scanner, charset))
    scanner.leave()
    return AndKey(tuple(keys))


def _modseq(scanner: Scanner) -> ModSeqKey:
    if scanner.peek() == 0x22:
        entry = scanner.text(scanner.quoted(), "entry name")
        scanner.sp()
        entry_type = scanner.atom("an entry type").lower()
        if entry_type not in ("priv", "shared", "all"):
            raise ParseError("MODSEQ entry type must be priv, shared or all")
        scanner.sp()
        modseq = scanner.number("a mod-sequence", wide=True)
        return ModSeqKey(modseq, entry, entry_type)
    return ModSeqKey(scanner.number("a mod-sequence", wide=True))
