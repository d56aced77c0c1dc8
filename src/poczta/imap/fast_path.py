"""The fast path for the commands clients pipeline: one simple line → its `Command`.

`parse_simple(line, limits)` recognises a whole command line without literals:
a tag, optionally UID, and FETCH, STORE, SEARCH or a command without arguments,
written in ASCII atoms. `append_head(line, limits)` does the same for the first
line of an APPEND, up to its message literal. One pattern per command finds the
parts; the parts clients repeat (a FETCH attribute list, a flag list, a SEARCH
program, a mailbox name) are parsed by the general grammar once and kept, with
the limits they were checked against, up to `CACHE_SIZE` entries of each kind.

Both give exactly what the general parser (`parser.parse_command`) gives for the
line, or None whenever they are not sure: for every malformed line, so that the
general parser reports the error, and for what they do not know (literals, quoted
strings other than an APPEND date-time, CHARSET, RETURN, modifiers other than
CHANGEDSINCE and UNCHANGEDSINCE, mailbox names with "&"). The lines they take hold
no 8-bit octets, so the dialect cannot change their meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from poczta.imap import commands as c
from poczta.imap.fetch import FetchAttribute, parse_attributes
from poczta.imap.lexer import MAX_NUMBER64, AppendHead, ParseError, Scanner
from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.parser import NO_ARGUMENTS
from poczta.imap.search import AndKey, parse_program
from poczta.imap.sequence import SequenceSet, SequenceSyntaxError, parse_sequence_set

T = TypeVar("T")

CACHE_SIZE = 256

_DIALECT = Dialect()
_ATOM = rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+'
_HEAD = re.compile(rb'([^\x00-\x20\x7f-\xff(){%*"\\+]+) (?:([Uu][Ii][Dd]) )?([A-Za-z]+)(?= |\Z)')
_SET = rb"([0-9:*,$]+)"
_FLAG_LIST = rb"(\((?:\\?" + _ATOM + rb"(?: \\?" + _ATOM + rb")*)?\))"
_FETCH = re.compile(
    _SET + rb" (\((?:[A-Za-z0-9.\[\]<> -]|\([A-Za-z0-9 -]*\))*\)|[A-Za-z0-9.\[\]<>]+)"
    rb"(?: \((?i:CHANGEDSINCE) ([0-9]{1,19})\))?"
)
_STORE = re.compile(
    _SET
    + rb" (?:\((?i:UNCHANGEDSINCE) ([0-9]{1,19})\) )?([+-]?)(?i:FLAGS)((?i:\.SILENT)?) "
    + _FLAG_LIST
)
_APPEND = re.compile(
    rb'([^\x00-\x20\x7f-\xff(){%*"\\&]+)(?: ' + _FLAG_LIST + rb')?( "[^"]*")? ~?\{[0-9]{1,20}\+?\}'
)
_MODES = {b"": c.StoreMode.REPLACE, b"+": c.StoreMode.ADD, b"-": c.StoreMode.REMOVE}
_PROGRAM = re.compile(rb'[^\x00-\x1f\x7f-\xff"{]+')
_NOT_PROGRAMS = (b"RETURN", b"CHARSET")

Cache = dict[bytes, tuple[T, ImapLimits]]
_attributes: Cache[tuple[FetchAttribute, ...]] = {}
_flag_lists: Cache[tuple[str, ...]] = {}
_programs: Cache[AndKey] = {}
_mailboxes: Cache[str] = {}


def parse_simple(line: bytes, limits: ImapLimits) -> c.Command | None:
    """The command on `line` (one whole command without CRLF), or None: use the parser."""
    head = _HEAD.match(line)
    if head is None:
        return None
    tag, uid, name = head.groups()
    end = head.end()
    if end == len(line):
        kind = None if uid else NO_ARGUMENTS.get(name.upper().decode("ascii"))
        return None if kind is None else kind(tag.decode("ascii"))
    parse = _PARSERS.get(name.upper())
    if parse is None:
        return None
    return parse(tag.decode("ascii"), uid is not None, line, end + 1, limits)


def append_head(line: bytes, limits: ImapLimits) -> AppendHead | None:
    """What the first line of an APPEND, ending with its message literal, says; or None."""
    head = _HEAD.match(line)
    if head is None or head.group(2) is not None or head.group(3).upper() != b"APPEND":
        return None
    found = _APPEND.fullmatch(line, head.end() + 1)
    if found is None:
        return None
    name, listed, moment = found.groups()
    mailbox = _cached(_mailboxes, name, limits, Scanner.mailbox)
    flags = () if listed is None else _cached(_flag_lists, listed, limits, Scanner.flag_list)
    if mailbox is None or flags is None:
        return None
    if moment is None:
        return AppendHead(mailbox, flags, None, 0)
    scanner = Scanner((moment[1:],), (), _DIALECT, limits)
    try:
        internal_date = scanner.date_time()
        scanner.end()
    except ParseError:
        return None
    return AppendHead(mailbox, flags, internal_date, 0)


def _fetch(tag: str, uid: bool, line: bytes, pos: int, limits: ImapLimits) -> c.Command | None:
    found = _FETCH.fullmatch(line, pos)
    if found is None:
        return None
    numbers, items, changed = found.groups()
    sequence = _sequence_set(numbers, limits)
    attributes = _cached(_attributes, items, limits, parse_attributes)
    if sequence is None or attributes is None:
        return None
    if changed is None:
        return c.Fetch(tag, uid, sequence, attributes)
    modseq = int(changed)
    if modseq > MAX_NUMBER64:
        return None
    return c.Fetch(tag, uid, sequence, attributes, modseq)


def _store(tag: str, uid: bool, line: bytes, pos: int, limits: ImapLimits) -> c.Command | None:
    found = _STORE.fullmatch(line, pos)
    if found is None:
        return None
    numbers, unchanged, sign, silent, listed = found.groups()
    sequence = _sequence_set(numbers, limits)
    flags = _cached(_flag_lists, listed, limits, Scanner.flag_list)
    if sequence is None or flags is None:
        return None
    modseq = None if unchanged is None else int(unchanged)
    if modseq is not None and modseq > MAX_NUMBER64:
        return None
    return c.Store(tag, uid, sequence, _MODES[sign], flags, bool(silent), modseq)


def _search(tag: str, uid: bool, line: bytes, pos: int, limits: ImapLimits) -> c.Command | None:
    found = _PROGRAM.fullmatch(line, pos)
    if found is None or line[pos:].split(b" ", 1)[0].upper() in _NOT_PROGRAMS:
        return None
    program = _cached(_programs, found.group(), limits, _program)
    return None if program is None else c.Search(tag, uid, program)


def _program(scanner: Scanner) -> AndKey:
    return parse_program(scanner, None)


Parser = Callable[[str, bool, bytes, int, ImapLimits], c.Command | None]
_PARSERS: dict[bytes, Parser] = {b"FETCH": _fetch, b"STORE": _store, b"SEARCH": _search}


def _sequence_set(text: bytes, limits: ImapLimits) -> SequenceSet | None:
    if len(text) > limits.max_sequence_set:
        return None
    try:
        return parse_sequence_set(text.decode("ascii"))
    except SequenceSyntaxError:
        return None


def _cached(
    cache: Cache[T], text: bytes, limits: ImapLimits, parse: Callable[[Scanner], T]
) -> T | None:
    """`parse` of `text` alone under `limits`, kept for the next time; None when malformed."""
    entry = cache.get(text)
    if entry is not None and (entry[1] is limits or entry[1] == limits):
        return entry[0]
    scanner = Scanner((text,), (), _DIALECT, limits)
    try:
        value = parse(scanner)
        scanner.end()
    except ParseError:
        return None
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[text] = (value, limits)
    return value
