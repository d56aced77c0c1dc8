"""The grammar of the message commands: [UID] FETCH, STORE, SEARCH, COPY, MOVE, SORT,
THREAD and EXPUNGE, each a `CommandParser` for `parser.COMMANDS`.

A parser gets the scanner after the command name and the tag, and reads the
arguments up to the end of the command (which `parser.parse_command` checks).
"""

from __future__ import annotations

from collections.abc import Callable

from poczta.imap import commands as c
from poczta.imap.fetch import parse_attributes
from poczta.imap.lexer import ParseError, Scanner
from poczta.imap.search import parse_charset, parse_program, parse_return_options

CommandParser = Callable[[Scanner, str], c.Command]

SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


def expunge(scanner: Scanner, tag: str) -> c.Expunge:
    """EXPUNGE, without arguments."""
    if not scanner.at_end():
        raise ParseError("EXPUNGE takes no arguments")
    return c.Expunge(tag)


def uid_expunge(scanner: Scanner, tag: str) -> c.Expunge:
    """UID EXPUNGE uid-set."""
    scanner.sp()
    return c.Expunge(tag, scanner.sequence_set())


def search(uid: bool) -> CommandParser:
    """[UID] SEARCH [RETURN (...)] [CHARSET c] keys."""

    def parse(scanner: Scanner, tag: str) -> c.Search:
        scanner.sp()
        returns = None
        charset = None
        word = _peek_word(scanner)
        if word == "RETURN":
            scanner.pos += 6
            returns = parse_return_options(scanner)
            scanner.sp()
            word = _peek_word(scanner)
        if word == "CHARSET":
            scanner.pos += 7
            scanner.sp()
            charset = parse_charset(scanner)
            scanner.sp()
        return c.Search(tag, uid, parse_program(scanner, charset), charset, returns)

    return parse


def _peek_word(scanner: Scanner) -> str:
    end = scanner.line.find(b" ", scanner.pos)
    return scanner.line[scanner.pos : end if end >= 0 else None].decode("latin-1").upper()


def store(uid: bool) -> CommandParser:
    """[UID] STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] flags."""

    def parse(scanner: Scanner, tag: str) -> c.Store:
        scanner.sp()
        sequence = scanner.sequence_set()
        scanner.sp()
        unchanged = None
        if scanner.take(b"("):
            if scanner.keyword("a STORE modifier") != "UNCHANGEDSINCE":
                raise ParseError("unknown STORE modifier")
            scanner.sp()
            unchanged = scanner.number("a mod-sequence", wide=True)
            scanner.expect(b")", ") after the STORE modifier")
            scanner.sp()
        mode = c.StoreMode.REPLACE
        if scanner.peek() in (0x2B, 0x2D):  # "+" or "-"
            mode = c.StoreMode(chr(scanner.peek()))
            scanner.pos += 1
        item = scanner.keyword("FLAGS, +FLAGS or -FLAGS")
        if item not in ("FLAGS", "FLAGS.SILENT"):
            raise ParseError(f"unknown STORE item {item[:32]}")
        scanner.sp()
        flags = scanner.flag_list() if scanner.peek() == 0x28 else tuple(_flags_to_end(scanner))
        return c.Store(tag, uid, sequence, mode, flags, item.endswith(".SILENT"), unchanged)

    return parse


def _flags_to_end(scanner: Scanner) -> list[str]:
    flags = [scanner.flag()]
    while not scanner.at_end():
        scanner.sp()
        flags.append(scanner.flag())
        if len(flags) > scanner.limits.max_items:
            raise ParseError("too many flags", code="LIMIT")
    return flags


def fetch(uid: bool) -> CommandParser:
    """[UID] FETCH set items [(CHANGEDSINCE n [VANISHED])]."""

    def parse(scanner: Scanner, tag: str) -> c.Fetch:
        scanner.sp()
        sequence = scanner.sequence_set()
        scanner.sp()
        attributes = parse_attributes(scanner)
        changed, vanished = None, False
        if scanner.skip_sp():
            for name, value in scanner.paren_list(lambda: _fetch_modifier(scanner)):
                if name == "VANISHED":
                    vanished = True
                else:
                    changed = value
        if vanished and (not uid or changed is None):
            raise ParseError("VANISHED needs UID FETCH with CHANGEDSINCE")
        return c.Fetch(tag, uid, sequence, attributes, changed, vanished)

    return parse


def _fetch_modifier(scanner: Scanner) -> tuple[str, int | None]:
    name = scanner.keyword("a FETCH modifier")
    if name == "VANISHED":
        return name, None
    if name != "CHANGEDSINCE":
        raise ParseError(f"unknown FETCH modifier {name[:32]}")
    scanner.sp()
    return name, scanner.number("a mod-sequence", wide=True)


def copy_or_move(kind: type[c.Copy] | type[c.Move], uid: bool) -> CommandParser:
    """[UID] COPY or MOVE set mailbox."""

    def parse(scanner: Scanner, tag: str) -> c.Command:
        scanner.sp()
        sequence = scanner.sequence_set()
        scanner.sp()
        return kind(tag, uid, sequence, scanner.mailbox())

    return parse


def sort(uid: bool) -> CommandParser:
    """[UID] SORT [RETURN (...)] (keys) charset program."""

    def parse(scanner: Scanner, tag: str) -> c.Sort:
        scanner.sp()
        returns = None
        if _peek_word(scanner) == "RETURN":
            scanner.pos += 6
            returns = parse_return_options(scanner)
            scanner.sp()
        keys = tuple(scanner.paren_list(lambda: _sort_key(scanner)))
        scanner.sp()
        charset = parse_charset(scanner)
        scanner.sp()
        return c.Sort(tag, uid, keys, charset, parse_program(scanner, charset), returns)

    return parse


def _sort_key(scanner: Scanner) -> c.SortKey:
    name = scanner.keyword("a sort key")
    reverse = name == "REVERSE"
    if reverse:
        scanner.sp()
        name = scanner.keyword("a sort key")
    if name not in SORT_KEYS:
        raise ParseError(f"unknown sort key {name[:32]}")
    return c.SortKey(name, reverse)


def thread(uid: bool) -> CommandParser:
    """[UID] THREAD algorithm charset program."""

    def parse(scanner: Scanner, tag: str) -> c.Thread:
        scanner.sp()
        algorithm = scanner.keyword("a threading algorithm")
        if algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
            raise ParseError(f"unknown threading algorithm {algorithm[:32]}")
        scanner.sp()
        charset = parse_charset(scanner)
        scanner.sp()
        return c.Thread(tag, uid, algorithm, charset, parse_program(scanner, charset))

    return parse
