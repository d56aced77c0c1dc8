"""The IMAP command grammar: one command's lines and literals → a typed `Command`.

`parse_command` reads the tag and the command name and hands the scanner to the
command's own parser. The grammar is RFC 9051 section 9 with the IMAP4rev1
(RFC 3501) commands and the extensions poczta speaks: SASL-IR, ENABLE, ID,
LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CREATE-SPECIAL-USE, CONDSTORE, QRESYNC,
ESEARCH, SEARCHRES, MULTIAPPEND, BINARY, MOVE, UIDPLUS, QUOTA, SORT, THREAD,
IDLE, UNSELECT, COMPRESS and WITHIN.

Hand-written: the Python IMAP libraries are clients; none parses commands as a
server must, incrementally, with literals and bounded cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from poczta.imap import commands as c
from poczta.imap.lexer import AppendHead, Literal, MessageSlot, ParseError, Scanner
from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.message_commands import (
    CommandParser,
    copy_or_move,
    expunge,
    fetch,
    search,
    sort,
    store,
    thread,
    uid_expunge,
)

_DIALECT = Dialect()
_LIMITS = ImapLimits()

STATUS_ITEMS = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "DELETED-STORAGE", "SIZE",
     "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID"}
)  # fmt: skip
LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def parse_command(
    lines: Sequence[bytes],
    literals: Sequence[Literal],
    dialect: Dialect | None = None,
    limits: ImapLimits | None = None,
) -> c.Command:
    """Parse one whole command; raise ParseError (with `.tag` set when read)."""
    scanner = Scanner(lines, literals, dialect or _DIALECT, limits or _LIMITS)
    tag: str | None = None
    try:
        tag = scanner.tag()
        scanner.sp()
        name = scanner.keyword("a command name")
        if name == "UID":
            scanner.sp()
            name = "UID " + scanner.keyword("a command name after UID")
        parser = COMMANDS.get(name)
        if parser is None:
            raise ParseError("unknown command")
        command = parser(scanner, tag)
        scanner.end()
        return command
    except ParseError as error:
        error.tag = tag
        raise


def _no_arguments(kind: Callable[[str], c.Command]) -> CommandParser:
    def parse(scanner: Scanner, tag: str) -> c.Command:
        if not scanner.at_end():
            raise ParseError("this command takes no arguments")
        return kind(tag)

    return parse


def _one_mailbox(kind: Callable[[str, str], c.Command]) -> CommandParser:
    def parse(scanner: Scanner, tag: str) -> c.Command:
        scanner.sp()
        return kind(tag, scanner.mailbox())

    return parse


# ------------------------------------------------------------------ session commands


def _authenticate(scanner: Scanner, tag: str) -> c.Authenticate:
    scanner.sp()
    mechanism = scanner.keyword("a SASL mechanism")
    if not scanner.skip_sp():
        return c.Authenticate(tag, mechanism)
    if scanner.take(b"="):
        return c.Authenticate(tag, mechanism, b"")
    found = _BASE64.match(scanner.line, scanner.pos)
    if found is None or found.end() == scanner.pos:
        raise ParseError("initial response is not base64")
    scanner.pos = found.end()
    return c.Authenticate(tag, mechanism, found.group())


def _login(scanner: Scanner, tag: str) -> c.Login:
    scanner.sp()
    user = scanner.astring_text("a user name")
    scanner.sp()
    return c.Login(tag, user, scanner.astring_text("a password"))


def _enable(scanner: Scanner, tag: str) -> c.Enable:
    names = []
    while not scanner.at_end():
        scanner.sp()
        names.append(scanner.keyword("a capability"))
        if len(names) > scanner.limits.max_items:
            raise ParseError("too many capabilities", code="LIMIT")
    if not names:
        raise ParseError("ENABLE needs at least one capability")
    return c.Enable(tag, tuple(names))


def _id(scanner: Scanner, tag: str) -> c.Id:
    scanner.sp()
    if scanner.nil():
        return c.Id(tag, None)
    scanner.expect(b"(", "( or NIL")
    pairs: list[tuple[str, str | None]] = []
    while not scanner.take(b")"):
        if pairs:
            scanner.sp()
        name = scanner.text(scanner.string(), "ID field")
        scanner.sp()
        value = scanner.nstring()
        if len(name) > 30 or (value is not None and len(value) > 1024) or len(pairs) >= 30:
            raise ParseError("ID parameters exceed RFC 2971 limits")
        pairs.append((name, None if value is None else scanner.text(value, "ID value")))
    return c.Id(tag, tuple(pairs))


def _compress(scanner: Scanner, tag: str) -> c.Compress:
    scanner.sp()
    return c.Compress(tag, scanner.keyword("a compression mechanism"))


# ------------------------------------------------------------------ mailbox commands


def _select(read_only: bool) -> CommandParser:
    def parse(scanner: Scanner, tag: str) -> c.Select:
        scanner.sp()
        mailbox = scanner.mailbox()
        condstore, qresync = False, None
        if scanner.skip_sp():
            for name, value in scanner.paren_list(lambda: _select_param(scanner)):
                if name == "CONDSTORE":
                    condstore = True
                else:
                    qresync = value
        return c.Select(tag, mailbox, read_only, condstore, qresync)

    return parse


def _select_param(scanner: Scanner) -> tuple[str, c.Qresync | None]:
    name = scanner.keyword("a select parameter")
    if name == "CONDSTORE":
        return name, None
    if name != "QRESYNC":
        raise ParseError(f"unknown select parameter {name[:32]}")
    scanner.sp()
    scanner.expect(b"(", "( after QRESYNC")
    uidvalidity = scanner.number("a UIDVALIDITY", nonzero=True)
    scanner.sp()
    modseq = scanner.number("a mod-sequence", wide=True)
    known, match = None, None
    if scanner.skip_sp() and scanner.peek() != 0x28:
        known = scanner.sequence_set(allow_saved=False)
        scanner.skip_sp()
    if scanner.take(b"("):
        sequences = scanner.sequence_set(allow_saved=False)
        scanner.sp()
        match = (sequences, scanner.sequence_set(allow_saved=False))
        scanner.expect(b")", ") after the sequence match data")
    scanner.expect(b")", ") after the QRESYNC parameters")
    return name, c.Qresync(uidvalidity, modseq, known, match)


def _create(scanner: Scanner, tag: str) -> c.Create:
    scanner.sp()
    mailbox = scanner.mailbox()
    uses: list[str] = []
    if scanner.skip_sp():
        scanner.expect(b"(", "( before the CREATE parameters")
        if scanner.keyword("a CREATE parameter") != "USE":
            raise ParseError("unknown CREATE parameter")
        scanner.sp()
        uses = scanner.paren_list(scanner.flag, empty=True)
        scanner.expect(b")", ") after the CREATE parameters")
    return c.Create(tag, mailbox, tuple(uses))


def _rename(scanner: Scanner, tag: str) -> c.Rename:
    scanner.sp()
    old = scanner.mailbox()
    scanner.sp()
    return c.Rename(tag, old, scanner.mailbox())


def _options(scanner: Scanner, allowed: frozenset[str], what: str) -> tuple[str, ...]:
    options = scanner.paren_list(scanner.keyword, empty=True)
    for option in options:
        if option not in allowed:
            raise ParseError(f"unknown {what} {option[:32]}")
    return tuple(dict.fromkeys(options))


def _list(scanner: Scanner, tag: str) -> c.List:
    scanner.sp()
    selection: tuple[str, ...] = ()
    if scanner.peek() == 0x28:
        selection = _options(scanner, LIST_SELECTION, "LIST selection option")
        scanner.sp()
    reference = scanner.mailbox_text(scanner.astring("a reference name"))
    scanner.sp()
    if scanner.peek() == 0x28:
        patterns = tuple(scanner.paren_list(scanner.list_mailbox))
    else:
        patterns = (scanner.list_mailbox(),)
    returns: list[str] = []
    status = None
    if scanner.skip_sp():
        if scanner.keyword("RETURN") != "RETURN":
            raise ParseError("expected RETURN")
        scanner.sp()
        for option, items in scanner.paren_list(lambda: _list_return(scanner), empty=True):
            if items is None:
                returns.append(option)
            else:
                status = items
    return c.List(tag, reference, patterns, selection, tuple(dict.fromkeys(returns)), status)


def _list_return(scanner: Scanner) -> tuple[str, tuple[str, ...] | None]:
    option = scanner.keyword("a LIST return option")
    if option == "STATUS":
        scanner.sp()
        return option, _status_items(scanner)
    if option not in LIST_RETURN:
        raise ParseError(f"unknown LIST return option {option[:32]}")
    return option, None


def _lsub(scanner: Scanner, tag: str) -> c.Lsub:
    scanner.sp()
    reference = scanner.mailbox_text(scanner.astring("a reference name"))
    scanner.sp()
    return c.Lsub(tag, reference, scanner.list_mailbox())


def _status_items(scanner: Scanner) -> tuple[str, ...]:
    return _options(scanner, STATUS_ITEMS, "STATUS item")


def _status(scanner: Scanner, tag: str) -> c.Status:
    scanner.sp()
    mailbox = scanner.mailbox()
    scanner.sp()
    items = _status_items(scanner)
    if not items:
        raise ParseError("STATUS needs at least one item")
    return c.Status(tag, mailbox, items)


def _append(scanner: Scanner, tag: str) -> c.Append:
    scanner.sp()
    mailbox = scanner.mailbox()
    messages: list[c.AppendMessage] = []
    while not messages or not scanner.at_end():
        scanner.sp()
        flags: tuple[str, ...] = ()
        if scanner.peek() == 0x28:
            flags = scanner.flag_list()
            scanner.sp()
        date = None
        if scanner.peek() == 0x22:
            date = scanner.date_time()
            scanner.sp()
        head = AppendHead(mailbox, flags, date, len(messages))
        messages.append(append_message(head, scanner.message(head)))
    return c.Append(tag, mailbox, tuple(messages))


def append_message(head: AppendHead, slot: MessageSlot) -> c.AppendMessage:
    """The APPEND message announced as `head` whose literal was `slot`."""
    return c.AppendMessage(head.flags, head.internal_date, slot.size, slot.binary)


def _getquota(scanner: Scanner, tag: str) -> c.GetQuota:
    scanner.sp()
    return c.GetQuota(tag, scanner.mailbox_text(scanner.astring("a quota root")))


def _setquota(scanner: Scanner, tag: str) -> c.SetQuota:
    scanner.sp()
    root = scanner.mailbox_text(scanner.astring("a quota root"))
    scanner.sp()
    scanner.expect(b"(", "a list of quota limits")
    limits: list[tuple[str, int]] = []
    while not scanner.take(b")"):
        if limits:
            scanner.sp()
        name = scanner.keyword("a resource name")
        scanner.sp()
        limits.append((name, scanner.number("a limit", wide=True)))
    return c.SetQuota(tag, root, tuple(limits))


NO_ARGUMENTS: dict[str, Callable[[str], c.Command]] = {
    "CAPABILITY": c.Capability,
    "NOOP": c.Noop,
    "LOGOUT": c.Logout,
    "STARTTLS": c.StartTls,
    "NAMESPACE": c.Namespace,
    "IDLE": c.Idle,
    "CHECK": c.Check,
    "CLOSE": c.Close,
    "UNSELECT": c.Unselect,
}
COMMANDS: dict[str, CommandParser] = {
    name: _no_arguments(kind) for name, kind in NO_ARGUMENTS.items()
}
COMMANDS |= {
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "ID": _id,
    "SELECT": _select(read_only=False),
    "EXAMINE": _select(read_only=True),
    "CREATE": _create,
    "DELETE": _one_mailbox(c.Delete),
    "RENAME": _rename,
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "LIST": _list,
    "LSUB": _lsub,
    "STATUS": _status,
    "APPEND": _append,
    "EXPUNGE": expunge,
    "UID EXPUNGE": uid_expunge,
    "GETQUOTA": _getquota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
    "SETQUOTA": _setquota,
    "COMPRESS": _compress,
}
for _uid, _prefix in ((False, ""), (True, "UID ")):
    COMMANDS[_prefix + "SEARCH"] = search(_uid)
    COMMANDS[_prefix + "FETCH"] = fetch(_uid)
    COMMANDS[_prefix + "STORE"] = store(_uid)
    COMMANDS[_prefix + "COPY"] = copy_or_move(c.Copy, _uid)
    COMMANDS[_prefix + "MOVE"] = copy_or_move(c.Move, _uid)
    COMMANDS[_prefix + "SORT"] = sort(_uid)
    COMMANDS[_prefix + "THREAD"] = thread(_uid)

PAUSING = (c.Authenticate, c.StartTls, c.Idle, c.Compress)
