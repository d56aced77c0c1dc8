"""SPF macro strings (RFC 7208 section 7): their syntax, parsed once, and their expansion.

A macro string is parsed into literal text and `MacroExpand` parts when the record is
parsed, so a syntax error anywhere in a record is found before evaluation starts and
expansion is a cheap walk over the parts. The only expansion that needs DNS, `%{p}`,
is handed in by the caller as an async function.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote


class SpfSyntaxError(ValueError):
    """A record, term or macro string breaks the RFC 7208 grammar (a permerror)."""


# Letters allowed anywhere, and the ones allowed only in explanation text.
_LETTERS = frozenset("slodiphv")
_EXP_ONLY_LETTERS = frozenset("crt")
_DELIMITERS = ".-+,/_="
_MACRO = re.compile(r"%\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}")
_ESCAPES = {"%%": "%", "%_": " ", "%-": "%20"}
# macro-literal is %x21-24 / %x26-7E; explanation text may also hold spaces.
_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]+")
_EXP_LITERAL = re.compile(r"[\x20-\x24\x26-\x7e]+")


@dataclass(frozen=True, slots=True)
class MacroExpand:
    """One `%{...}` expansion: letter, URL-escaping (upper case letter), transformers."""

    letter: str
    url_escape: bool
    keep: int | None
    reverse: bool
    delimiters: str

    def transform(self, value: str) -> str:
        if self.keep is not None or self.reverse or self.delimiters:
            parts = re.split("[" + re.escape(self.delimiters or ".") + "]", value)
            if self.reverse:
                parts.reverse()
            if self.keep is not None:
                parts = parts[-self.keep :]
            value = ".".join(parts)
        if self.url_escape:
            value = quote(value, safe="-._~")
        return value


MacroPart = str | MacroExpand


def parse_macro_string(text: str, *, explanation: bool = False) -> tuple[MacroPart, ...]:
    """Split a macro string into literal text and expansions; raise `SpfSyntaxError`.

    With `explanation`, spaces and the letters c, r and t are allowed (exp text).
    Adjacent literal text, escapes included, is merged into one string.
    """
    literal = _EXP_LITERAL if explanation else _LITERAL
    parts: list[MacroPart] = []
    pos = 0
    while pos < len(text):
        if text[pos] != "%":
            match = literal.match(text, pos)
            if match is None:
                raise SpfSyntaxError(f"invalid character {text[pos]!r} in {text!r}")
            _append_literal(parts, match.group())
            pos = match.end()
            continue
        escape = text[pos : pos + 2]
        if escape in _ESCAPES:
            _append_literal(parts, _ESCAPES[escape])
            pos += 2
            continue
        match = _MACRO.match(text, pos)
        if match is None:
            raise SpfSyntaxError(f"invalid macro at {text[pos:]!r}")
        parts.append(_macro(match, explanation))
        pos = match.end()
    return tuple(parts)


def _append_literal(parts: list[MacroPart], text: str) -> None:
    if parts and isinstance(parts[-1], str):
        parts[-1] += text
    else:
        parts.append(text)


def _macro(match: re.Match[str], explanation: bool) -> MacroExpand:
    letter, digits, reverse, delimiters = match.groups()
    lower = letter.lower()
    if lower not in _LETTERS and not (explanation and lower in _EXP_ONLY_LETTERS):
        raise SpfSyntaxError(f"macro letter {letter!r} not allowed in {match.group()!r}")
    keep = int(digits) if digits else None
    if keep == 0:
        raise SpfSyntaxError(f"zero parts kept in {match.group()!r}")
    return MacroExpand(lower, letter.isupper(), keep, bool(reverse), delimiters)


@dataclass(frozen=True, slots=True)
class MacroValues:
    """What the macro letters stand for in one check (all but `d`, which varies)."""

    sender: str
    local_part: str
    sender_domain: str
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    helo: str
    receiver: str
    timestamp: int
    validated_name: Callable[[str], Awaitable[str]]  # %{p} for a domain

    def plain(self, letter: str, domain: str) -> str:
        """The value of a letter that needs no DNS (every letter but `p`)."""
        match letter:
            case "s":
                return self.sender
            case "l":
                return self.local_part
            case "o":
                return self.sender_domain
            case "d":
                return domain
            case "i":
                return dotted_ip(self.ip)
            case "v":
                return "in-addr" if self.ip.version == 4 else "ip6"
            case "h":
                return self.helo
            case "c":
                return str(self.ip)
            case "r":
                return self.receiver or "unknown"
            case "t":
                return str(self.timestamp)
        raise SpfSyntaxError(f"unknown macro letter {letter!r}")


def dotted_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """`%{i}`: IPv4 as dotted quad, IPv6 as 32 dot-separated nibbles.

    Nibbles are upper case, as the OpenSPF suite expects in explanation text; in
    queries the case does not matter.
    """
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", "").upper())


async def expand(parts: tuple[MacroPart, ...], values: MacroValues, domain: str) -> str:
    """Expand parsed parts; `domain` is the current `%{d}`."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        if part.letter == "p":
            value = await values.validated_name(domain)
        else:
            value = values.plain(part.letter, domain)
        out.append(part.transform(value))
    return "".join(out)


def truncate_domain(name: str, limit: int = 253) -> str:
    """Drop left-hand labels until an expanded domain fits in `limit` characters."""
    while len(name) > limit and "." in name:
        name = name.split(".", 1)[1]
    return name
