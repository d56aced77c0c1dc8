"""IMAP arguments as the scripted tests read them: atoms, strings, literals, NIL, lists.

One tokenizer reads both a script's expected lines and the server's responses, so the
two compare like for like. It reads the way the reference runner does (Dovecot's parser
with every character allowed in atoms), which is looser than RFC 9051 on purpose:

- an atom runs to a space or a line break, and inside a list also to ``)``; so
  ``body[header.fields (subject)]`` is the atom ``body[header.fields``, a list and the
  atom ``]``, in a script and in a response alike;
- ``NIL`` in any case is NIL; ``"..."`` loses its backslash escapes;
- ``{N}``, ``{N+}`` or ``~{N}``, a line break and N characters is a literal.

Text is latin-1 throughout, so every byte is one character and encodes back unchanged.
poczta's own IMAP parser (``poczta.imap``) is a server's strict reader and not this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_upper(text: str) -> str:
    """Upper-case ASCII letters only, as IMAP's case-insensitive comparisons mean."""
    return text.translate(ASCII_UPPER)


def same_text(a: str, b: str) -> bool:
    return ascii_upper(a) == ascii_upper(b)


class ArgsError(ValueError):
    """A line that cannot be read as IMAP arguments."""


class Kind(Enum):
    ATOM = "atom"
    STRING = "string"
    LITERAL = "literal"
    NIL = "nil"
    LIST = "list"


@dataclass(frozen=True)
class Arg:
    kind: Kind
    text: str = ""
    items: tuple[Arg, ...] = ()
    binary: bool = False  # a ~{N} literal

    @property
    def astring(self) -> str | None:
        """The text of an atom, string or literal; None for NIL and lists."""
        return None if self.kind in (Kind.NIL, Kind.LIST) else self.text

    @property
    def atom(self) -> str | None:
        return self.text if self.kind is Kind.ATOM else None


def atom(text: str) -> Arg:
    return Arg(Kind.ATOM, text)


def arg_list(*items: Arg) -> Arg:
    return Arg(Kind.LIST, items=tuple(items))


def parse_args(text: str, *, lenient: bool = False) -> tuple[Arg, ...]:
    """Read one logical line (literals included) into arguments; stops at a line break.

    ``lenient`` reads what a server's free text may break (an unclosed list or quote)
    as far as it goes instead of refusing the line.
    """
    try:
        return _parse(text)
    except ArgsError:
        if not lenient:
            raise
        return _parse(text, lenient=True)


def _parse(text: str, *, lenient: bool = False) -> tuple[Arg, ...]:
    stack: list[list[Arg]] = [[]]
    pos, end = 0, len(text)
    while pos < end:
        char = text[pos]
        if char == " ":
            pos += 1
        elif char in "\r\n":
            break
        elif char == "(":
            stack.append([])
            pos += 1
        elif char == ")" and len(stack) > 1:
            items = stack.pop()
            stack[-1].append(Arg(Kind.LIST, items=tuple(items)))
            pos += 1
        elif char == '"':
            try:
                value, pos = _read_string(text, pos + 1)
            except ArgsError:
                if not lenient:
                    raise
                value, pos = text[pos + 1 :].rstrip("\r\n"), end
            stack[-1].append(Arg(Kind.STRING, value))
        elif char == "{" or (char == "~" and text.startswith("{", pos + 1)):
            binary = char == "~"
            try:
                value, pos = _read_literal(text, pos + 1 + binary)
            except ArgsError:
                if not lenient:
                    raise
                value, pos = _read_atom(text, pos, inside_list=len(stack) > 1)
                stack[-1].append(atom(value))
            else:
                stack[-1].append(Arg(Kind.LITERAL, value, binary=binary))
        else:
            value, pos = _read_atom(text, pos, inside_list=len(stack) > 1)
            kind = Kind.NIL if ascii_upper(value) == "NIL" else Kind.ATOM
            stack[-1].append(Arg(kind, "" if kind is Kind.NIL else value))
    while lenient and len(stack) > 1:
        items = stack.pop()
        stack[-1].append(Arg(Kind.LIST, items=tuple(items)))
    if len(stack) > 1:
        raise ArgsError("Missing ')'")
    return tuple(stack[0])


def _read_atom(text: str, pos: int, *, inside_list: bool) -> tuple[str, int]:
    start = pos
    stops = " \r\n)" if inside_list else " \r\n"
    while pos < len(text) and text[pos] not in stops:
        pos += 1
    return text[start:pos], pos


def _read_string(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        out.append(char)
        pos += 1
    raise ArgsError("Missing '\"'")


def _read_literal(text: str, pos: int) -> tuple[str, int]:
    close = text.find("}", pos)
    if close < 0:
        raise ArgsError("Missing '}'")
    size_text = text[pos:close].removesuffix("+")
    if not size_text.isdigit():
        raise ArgsError(f"Invalid literal size {text[pos:close]!r}")
    size = int(size_text)
    pos = close + 1
    if text.startswith("\r\n", pos):
        pos += 2
    elif text.startswith("\n", pos):
        pos += 1
    else:
        raise ArgsError("Missing LF after literal size")
    if pos + size > len(text):
        raise ArgsError("Missing data")
    return text[pos : pos + size], pos + size


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(args: Sequence[Arg]) -> str:
    """Arguments back as one readable line; literals show as quoted text with escapes."""
    return " ".join(_render_one(arg) for arg in args)


def _render_one(arg: Arg) -> str:
    if arg.kind is Kind.ATOM:
        return arg.text
    if arg.kind is Kind.NIL:
        return "NIL"
    if arg.kind is Kind.LIST:
        return "(" + render(arg.items) + ")"
    if arg.kind is Kind.LITERAL:
        shown = arg.text.replace("\r", "\\r").replace("\n", "\\n")
        return ("~" if arg.binary else "") + f"{{{len(arg.text)}}}" + quote(shown)
    return quote(arg.text)
