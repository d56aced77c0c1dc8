"""Address lists (To, From, Cc, ...) split into mailboxes the way IMAP ENVELOPE needs them.

`parse_addresses` never raises and is linear in its input: the common one-mailbox
forms are matched by one regular expression, anything else is tokenised once and the
tokens are grouped in one pass. A group (`undisclosed: ;`) is represented the IMAP way:
a start marker with `mailbox` set to the group name and no host, then its members,
then an end marker with all parts None.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Address", "parse_addresses", "strict_addresses"]


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address list, split the way IMAP ENVELOPE needs it."""

    name: str | None
    mailbox: str | None
    host: str | None
    route: str | None = None  # an obsolete source route (`@a,@b`), IMAP's "adl"

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.name is None and self.mailbox is None and self.host is None

    @property
    def address(self) -> str | None:
        """`mailbox@host`, or None for group markers."""
        if self.host is None or self.mailbox is None:
            return None
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


Token = tuple[str, str]  # ("q", quoted), ("a", atom), ("s", special) or ("c", comment)
_TOKEN = re.compile(
    r'\x01([^\x02]*)\x02|"((?:[^"\\]|\\.)*)"?|([()<>@,;:\\.\[\]])|([^\s()<>@,;:\\".\[\]\x01]+)|\s+'
)
_QUOTED_PAIR = re.compile(r"\\(.)")


def _tokens(text: str, comments: bool = False) -> list[Token]:
    """Lexical tokens of an address list: ('q', quoted), ('a', atom), ('s', special), and
    with `comments` ('c', text) for each top-level comment."""
    if "\x01" in text or "\x02" in text:
        text = text.replace("\x01", " ").replace("\x02", " ")
    if "(" in text:
        text = _strip_comments(text, comments)
    out: list[Token] = []
    for comment, quoted, special, atom in _TOKEN.findall(text):
        if atom:
            out.append(("a", atom))
        elif special:
            out.append(("s", special))
        elif quoted:
            out.append(("q", _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted))
        elif comment.strip():
            out.append(("c", " ".join(comment.split())))
    return out


def _strip_comments(text: str, keep: bool = False) -> str:
    """`text` with (nested) comments outside quoted strings replaced by a space, or with
    `keep` by their text between \\x01 and \\x02 (a comment token for `_TOKEN`)."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in text:
        if escaped:
            escaped = False
            if not depth:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if not depth:
                out.append(ch)
        elif quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth += 1
            if keep and depth == 1:
                out.append("\x01")
            elif keep:
                out.append(" ")
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append("\x02" if keep else " ")
            elif keep:
                out.append(" ")
        elif not depth:
            quoted = ch == '"'
            out.append(ch)
        elif keep:
            out.append(ch)
    if keep and depth:
        out.append("\x02")
    return "".join(out)


def _mailbox(tokens: list[Token]) -> Address | None:
    """One mailbox (`name <local@host>` or `local@host`) from its tokens."""
    comments = [v for kind, v in tokens if kind == "c"]
    if comments:  # a comment names the mailbox when no phrase does: `a@b (Name)`
        tokens = [t for t in tokens if t[0] != "c"]
    if not tokens:
        return None
    angle = next((k for k, t in enumerate(tokens) if t == ("s", "<")), None)
    if angle is not None:
        phrase = " ".join(v for kind, v in tokens[:angle] if kind != "s" or v == ".")
        inner = tokens[angle + 1 :]
        close = next((k for k, t in enumerate(inner) if t == ("s", ">")), len(inner))
        inner = inner[:close]
        colon = next((k for k, t in enumerate(inner) if t == ("s", ":")), None)
        route = None
        if colon is not None:  # obsolete source route: @a,@b:local@host
            route = "".join(v for _, v in inner[:colon]) or None
            inner = inner[colon + 1 :]
        addr = _addr_spec(inner)
        return Address(phrase or (comments[-1] if comments else None), addr[0], addr[1], route)
    local, host = _addr_spec(tokens)
    if not local and not host:
        return None
    return Address(comments[-1] if comments else None, local, host)


def _addr_spec(tokens: list[Token]) -> tuple[str, str]:
    at = next((k for k, t in reversed(list(enumerate(tokens))) if t == ("s", "@")), None)
    if at is None:
        return "".join(v for _, v in tokens), ""
    local = "".join(v for _, v in tokens[:at])
    host = "".join(v for _, v in tokens[at + 1 :])
    return local, host


# The one-mailbox forms nearly every message uses: `local@host`, `<local@host>` and
# `Display Name <local@host>` with no quotes, comments, dots in the name or lists. They
# take a third of the time through one regular expression; anything else is tokenised.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_BARE_MAILBOX = re.compile(rf"[ \t]*(<?)([{_ATEXT}.]+)@([A-Za-z0-9.\-]+)(>?)[ \t]*")
_NAMED_MAILBOX = re.compile(
    rf"[ \t]*([{_ATEXT}][{_ATEXT} \t]*)<([{_ATEXT}.]+)@([A-Za-z0-9.\-]+)>[ \t]*"
)


def _simple_mailbox(value: str) -> tuple[Address, ...] | None:
    bare = _BARE_MAILBOX.fullmatch(value)
    if bare is not None:
        opening, local, host, closing = bare.groups()
        return (Address(None, local, host),) if opening == closing.replace(">", "<") else None
    named = _NAMED_MAILBOX.fullmatch(value)
    if named is not None:
        name, local, host = named.groups()
        return (Address(" ".join(name.split()), local, host),)
    return None


def parse_addresses(value: str) -> tuple[Address, ...]:
    """An address-list header value split into `Address` parts; never raises."""
    simple = _simple_mailbox(value)
    if simple is not None:
        return simple
    try:
        return _parse_address_list(_tokens(value, comments=True))
    except Exception:  # defensive: the tokenizer should not fail, but garbage is garbage
        return ()


_GROUP_END: list[Token] = []


def _runs(tokens: list[Token]) -> Iterator[tuple[str, list[Token]]]:
    """The parts of an address list in order: ("group", name tokens), ("mailbox",
    tokens) and ("end", []) for the end of a group."""
    current: list[Token] = []
    in_group = in_angle = False
    for token in tokens:
        if token == ("s", "<"):
            in_angle = True
        elif token == ("s", ">"):
            in_angle = False
        if in_angle or token[0] != "s" or token[1] not in ":;,":
            current.append(token)
        elif token[1] == ":" and not in_group:
            yield "group", current
            in_group, current = True, []
        elif token[1] == ";" and in_group:
            yield "mailbox", current
            yield "end", _GROUP_END
            in_group, current = False, []
        elif token[1] == ",":
            yield "mailbox", current
            current = []
        else:
            current.append(token)
    yield "mailbox", current
    if in_group:
        yield "end", _GROUP_END


def _parse_address_list(tokens: list[Token]) -> tuple[Address, ...]:
    out: list[Address] = []
    for kind, run in _runs(tokens):
        if kind == "group":
            out.append(Address(None, " ".join(v for k, v in run if k != "c"), None))
        elif kind == "end":
            out.append(Address(None, None, None))
        else:
            box = _mailbox(run)
            if box is not None:
                out.append(box)
    return tuple(out)


def strict_addresses(value: str) -> tuple[str, ...] | None:
    """The addresses (``local@domain``) of an address list when every mailbox in it is
    well-formed; None when one is not: two angle addresses in one mailbox, text after
    the ``>``, no ``@`` or two, a stray special. For deciding who sent a message, where
    the lenient `parse_addresses` could be made to see one address of several."""
    simple = _simple_mailbox(value)
    if simple is not None:
        return tuple(a.address for a in simple if a.address)
    out: list[str] = []
    for kind, run in _runs(_tokens(value)):
        if kind != "mailbox" or not run:
            continue
        address = _strict_mailbox(run)
        if address is None:
            return None
        out.append(address)
    return tuple(out)


def _strict_mailbox(tokens: list[Token]) -> str | None:
    angles = [k for k, t in enumerate(tokens) if t == ("s", "<")]
    if not angles:
        return _strict_addr_spec(tokens)
    opening = angles[0]
    if len(angles) > 1 or tokens[-1] != ("s", ">"):
        return None
    if any(kind == "s" and v != "." for kind, v in tokens[:opening]):
        return None  # a display name is words (and obsolete dots)
    inner = tokens[opening + 1 : -1]
    if ("s", ":") in inner:  # obsolete source route: <@a,@b:local@host>
        inner = inner[inner.index(("s", ":")) + 1 :]
    return _strict_addr_spec(inner)


def _strict_addr_spec(tokens: list[Token]) -> str | None:
    ats = [k for k, t in enumerate(tokens) if t == ("s", "@")]
    if len(ats) != 1:
        return None
    local, domain = tokens[: ats[0]], tokens[ats[0] + 1 :]
    literal = len(domain) >= 2 and domain[0] == ("s", "[") and domain[-1] == ("s", "]")
    if not _dotted(local, ("a", "q")) or not (literal or _dotted(domain, ("a",))):
        return None
    return "".join(v for _, v in local) + "@" + "".join(v for _, v in domain)


def _dotted(tokens: list[Token], words: tuple[str, ...]) -> bool:
    """`tokens` are word ("." word)*."""
    if len(tokens) % 2 == 0:
        return False
    return all((t[0] in words) if k % 2 == 0 else (t == ("s", ".")) for k, t in enumerate(tokens))
