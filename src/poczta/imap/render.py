"""Commands in wire form, as a client writes them: `render(command) -> bytes`.

The inverse of the parser, for the client side of tests and tools: parsing
`render(command)` gives `command` back. Strings go out as atoms when they can,
quoted when safe, else as literals: non-synchronising (`{n+}`) by default, or
synchronising when `literal_plus` is False (the reader then asks before each).
APPEND message octets are not part of the `Append` value: pass them as `bodies`
(otherwise each message is that many "x" octets).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from poczta.imap import commands as c
from poczta.imap import search as s
from poczta.imap.fetch import BinarySize, BodySection, FetchAttribute
from poczta.imap.lexer import MONTHS
from poczta.imap.limits import Dialect
from poczta.imap.values import date_time, mailbox_octets

_ASTRING = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')
_QUOTABLE = re.compile(rb"[^\x00\r\n]*")


class _Writer:
    def __init__(self, dialect: Dialect, literal_plus: bool) -> None:
        self.dialect = dialect
        self.plus = literal_plus
        self.out: list[bytes] = []

    def raw(self, *parts: str | bytes) -> None:
        for part in parts:
            self.out.append(part.encode("ascii") if isinstance(part, str) else part)

    def string(self, data: bytes, atom: re.Pattern[bytes] | None = None) -> None:
        if atom is not None and atom.fullmatch(data) and data.upper() != b"NIL":
            self.out.append(data)
        elif _QUOTABLE.fullmatch(data) and (data.isascii() or self.dialect.utf8):
            self.out += (b'"', data.replace(b"\\", b"\\\\").replace(b'"', b'\\"'), b'"')
        else:
            self.literal(data)

    def literal(self, data: bytes, prefix: bytes = b"") -> None:
        self.out.append(prefix + b"{%d%s}\r\n" % (len(data), b"+" if self.plus else b""))
        self.out.append(data)

    def astring(self, text: str) -> None:
        self.string(text.encode("utf-8"), _ASTRING)

    def mailbox(self, name: str, pattern: bool = False) -> None:
        self.string(mailbox_octets(name, self.dialect.utf8), _LIST_CHARS if pattern else _ASTRING)

    def listed(self, items: Sequence[str]) -> None:
        self.raw("(", " ".join(items), ")")


def render(
    command: c.Command,
    dialect: Dialect | None = None,
    *,
    literal_plus: bool = True,
    bodies: Sequence[bytes] | None = None,
) -> bytes:
    """The command's wire form, CRLF included."""
    writer = _Writer(dialect or Dialect(), literal_plus)
    writer.raw(command.tag, " ")
    uid = getattr(command, "uid", False)
    if uid or (isinstance(command, c.Expunge) and command.uids is not None):
        writer.raw("UID ")
    _RENDERERS.get(type(command), _bare)(writer, command, bodies)
    writer.raw("\r\n")
    return b"".join(writer.out)


def _name(command: c.Command) -> str:
    return type(command).__name__.upper()


def _bare(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    w.raw(_name(command))


def _one_mailbox(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    w.raw(_name(command), " ")
    w.mailbox(getattr(command, "mailbox"))  # noqa: B009 - one renderer for several types


def _authenticate(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Authenticate)
    w.raw("AUTHENTICATE ", command.mechanism)
    if command.initial_response is not None:
        w.raw(" ", command.initial_response or b"=")


def _login(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Login)
    w.raw("LOGIN ")
    w.astring(command.username)
    w.raw(" ")
    w.astring(command.password)


def _enable(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Enable)
    w.raw("ENABLE ", " ".join(command.capabilities))


def _id(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Id)
    w.raw("ID ")
    if command.parameters is None:
        w.raw("NIL")
        return
    w.raw("(")
    for index, (name, value) in enumerate(command.parameters):
        w.raw(" " if index else "")
        w.string(name.encode("utf-8"))
        w.raw(" ")
        if value is None:
            w.raw("NIL")
        else:
            w.string(value.encode("utf-8"))
    w.raw(")")


def _select(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Select)
    w.raw("EXAMINE " if command.read_only else "SELECT ")
    w.mailbox(command.mailbox)
    params = ["CONDSTORE"] if command.condstore else []
    q = command.qresync
    if q is not None:
        text = f"QRESYNC ({q.uidvalidity} {q.modseq}"
        if q.known_uids is not None:
            text += f" {q.known_uids}"
        if q.seq_match is not None:
            text += f" ({q.seq_match[0]} {q.seq_match[1]})"
        params.append(text + ")")
    if params:
        w.raw(" ")
        w.listed(params)


def _create(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Create)
    w.raw("CREATE ")
    w.mailbox(command.mailbox)
    if command.special_use:
        w.raw(" (USE (", " ".join(command.special_use), "))")


def _rename(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Rename)
    w.raw("RENAME ")
    w.mailbox(command.mailbox)
    w.raw(" ")
    w.mailbox(command.new_name)


def _list(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.List)
    w.raw("LIST ")
    if command.selection:
        w.listed(command.selection)
        w.raw(" ")
    w.mailbox(command.reference)
    w.raw(" ")
    if len(command.patterns) == 1:
        w.mailbox(command.patterns[0], pattern=True)
    else:
        w.raw("(")
        for index, pattern in enumerate(command.patterns):
            w.raw(" " if index else "")
            w.mailbox(pattern, pattern=True)
        w.raw(")")
    options = list(command.return_options)
    if command.return_status is not None:
        options.append("STATUS (" + " ".join(command.return_status) + ")")
    if options or command.return_status is not None:
        w.raw(" RETURN ")
        w.listed(options)


def _lsub(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Lsub)
    w.raw("LSUB ")
    w.mailbox(command.reference)
    w.raw(" ")
    w.mailbox(command.pattern, pattern=True)


def _status(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Status)
    w.raw("STATUS ")
    w.mailbox(command.mailbox)
    w.raw(" ")
    w.listed(command.items)


def _append(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Append)
    w.raw("APPEND ")
    w.mailbox(command.mailbox)
    for index, message in enumerate(command.messages):
        w.raw(" ")
        if message.flags:
            w.listed(message.flags)
            w.raw(" ")
        if message.internal_date is not None:
            w.raw('"', date_time(message.internal_date), '" ')
        body = bodies[index] if bodies is not None else b"x" * message.size
        w.literal(body, b"~" if message.binary else b"")


def _expunge(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Expunge)
    w.raw("EXPUNGE")
    if command.uids is not None:
        w.raw(" ", str(command.uids))


def _return(w: _Writer, options: tuple[str, ...] | None) -> None:
    if options is not None:
        w.raw("RETURN ")
        w.listed(options)
        w.raw(" ")


def _search(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Search)
    w.raw("SEARCH ")
    _return(w, command.return_options)
    if command.charset is not None:
        w.raw("CHARSET ", command.charset, " ")
    _program(w, command.criteria, command.charset)


def _program(w: _Writer, program: s.AndKey, charset: str | None) -> None:
    for index, key in enumerate(program.keys):
        w.raw(" " if index else "")
        _key(w, key, charset)


def _search_string(w: _Writer, text: str, charset: str | None) -> None:
    if charset in (None, "UTF-8", "US-ASCII") or w.dialect.utf8:
        data = text.encode("utf-8")
    else:
        data = text.encode(charset)
    w.string(data, _ASTRING)


def _date(day: date) -> str:
    return f"{day.day}-{MONTHS[day.month - 1].title()}-{day.year:04d}"


def _key(w: _Writer, key: s.SearchKey, charset: str | None) -> None:
    match key:
        case s.FlagKey(name):
            w.raw(name)
        case s.KeywordKey(keyword, present):
            w.raw("KEYWORD " if present else "UNKEYWORD ", keyword)
        case s.TextKey(field, value):
            w.raw(field, " ")
            _search_string(w, value, charset)
        case s.HeaderKey(field, value):
            w.raw("HEADER ")
            w.astring(field)
            w.raw(" ")
            _search_string(w, value, charset)
        case s.DateKey(name, day):
            w.raw(name, " ", _date(day))
        case s.SizeKey(larger, size):
            w.raw("LARGER " if larger else "SMALLER ", str(size))
        case s.AgeKey(older, seconds):
            w.raw("OLDER " if older else "YOUNGER ", str(seconds))
        case s.SetKey(numbers, uid):
            w.raw("UID " if uid else "", str(numbers))
        case s.ModSeqKey(modseq, entry, entry_type):
            w.raw("MODSEQ ")
            if entry is not None:
                w.string(entry.encode("utf-8"))
                w.raw(" ", entry_type or "all", " ")
            w.raw(str(modseq))
        case s.NotKey(inner):
            w.raw("NOT ")
            _key(w, inner, charset)
        case s.OrKey(left, right):
            w.raw("OR ")
            _key(w, left, charset)
            w.raw(" ")
            _key(w, right, charset)
        case s.AndKey():
            w.raw("(")
            _program(w, key, charset)
            w.raw(")")


def _store(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Store)
    w.raw("STORE ", str(command.sequence), " ")
    if command.unchanged_since is not None:
        w.raw(f"(UNCHANGEDSINCE {command.unchanged_since}) ")
    w.raw(command.mode.value, "FLAGS", ".SILENT " if command.silent else " ")
    w.listed(command.flags)


def attribute_text(attribute: FetchAttribute) -> str:
    """A FETCH item as a client writes it."""
    if isinstance(attribute, BodySection):
        return attribute.request_name()
    if isinstance(attribute, BinarySize):
        return "BINARY.SIZE[" + ".".join(map(str, attribute.part)) + "]"
    return attribute.name


def _fetch(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Fetch)
    w.raw("FETCH ", str(command.sequence), " ")
    w.listed([attribute_text(attribute) for attribute in command.attributes])
    modifiers = []
    if command.changed_since is not None:
        modifiers.append(f"CHANGEDSINCE {command.changed_since}")
    if command.vanished:
        modifiers.append("VANISHED")
    if modifiers:
        w.raw(" ")
        w.listed(modifiers)


def _copy_or_move(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Copy | c.Move)
    w.raw(_name(command), " ", str(command.sequence), " ")
    w.mailbox(command.mailbox)


def _sort(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Sort)
    w.raw("SORT ")
    _return(w, command.return_options)
    w.listed([("REVERSE " if key.reverse else "") + key.name for key in command.keys])
    w.raw(" ", command.charset, " ")
    _program(w, command.criteria, command.charset)


def _thread(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Thread)
    w.raw("THREAD ", command.algorithm, " ", command.charset, " ")
    _program(w, command.criteria, command.charset)


def _getquota(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.GetQuota)
    w.raw("GETQUOTA ")
    w.mailbox(command.root)


def _setquota(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.SetQuota)
    w.raw("SETQUOTA ")
    w.mailbox(command.root)
    w.raw(" (", " ".join(f"{name} {limit}" for name, limit in command.limits), ")")


def _compress(w: _Writer, command: c.Command, bodies: Sequence[bytes] | None) -> None:
    assert isinstance(command, c.Compress)
    w.raw("COMPRESS ", command.mechanism)


_RENDERERS = {
    c.Authenticate: _authenticate,
    c.Login: _login,
    c.Enable: _enable,
    c.Id: _id,
    c.Select: _select,
    c.Create: _create,
    c.Delete: _one_mailbox,
    c.Rename: _rename,
    c.Subscribe: _one_mailbox,
    c.Unsubscribe: _one_mailbox,
    c.List: _list,
    c.Lsub: _lsub,
    c.Status: _status,
    c.Append: _append,
    c.Expunge: _expunge,
    c.Search: _search,
    c.Store: _store,
    c.Fetch: _fetch,
    c.Copy: _copy_or_move,
    c.Move: _copy_or_move,
    c.Sort: _sort,
    c.Thread: _thread,
    c.GetQuota: _getquota,
    c.GetQuotaRoot: _one_mailbox,
    c.SetQuota: _setquota,
    c.Compress: _compress,
}
