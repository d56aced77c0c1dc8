"""Finding the line a key sits on in TOML text, so configuration errors can name it.

tomllib returns plain values without positions. `locate_keys` scans the text the way a
reader would: ``[table]`` and ``[[array]]`` headers set the current prefix, ``key =``
lines (dotted and quoted keys included) define keys under it, and keys inside a
one-line inline table are found too. Multi-line strings are skipped. It never raises
and is best effort: a key it cannot place is simply absent from the result.
"""

from __future__ import annotations

import re
from typing import TypeAlias

__all__ = ["KeyPath", "locate_keys"]

KeyPath: TypeAlias = tuple[str, ...]

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\\n]|\\.)*"'
_LITERAL = r"'[^'\n]*'"
_PART = re.compile(rf"{_BARE}|{_BASIC}|{_LITERAL}")
_DOTTED = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})(?:[ \t]*\.[ \t]*(?:{_BARE}|{_BASIC}|{_LITERAL}))*"
_HEADER = re.compile(rf"[ \t]*\[\[?[ \t]*({_DOTTED})[ \t]*\]\]?")
_ASSIGN = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_STRING = re.compile(rf"{_BASIC}|{_LITERAL}")


def _split(dotted: str) -> KeyPath:
    parts: list[str] = []
    for part in _PART.findall(dotted):
        if part[:1] in "\"'" and len(part) >= 2:
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


class _Scanner:
    def __init__(self) -> None:
        self.found: dict[KeyPath, int] = {}
        self.prefix: KeyPath = ()
        self.open_string: str | None = None

    def record(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.found.setdefault(path[:end], line)

    def line(self, text: str, number: int) -> None:
        if self.open_string is not None:
            if self.open_string in text:
                self.open_string = None
            return
        header = _HEADER.match(text)
        if header:
            self.prefix = _split(header.group(1))
            self.record(self.prefix, number)
            return
        assign = _ASSIGN.match(text)
        if not assign:
            return
        path = (*self.prefix, *_split(assign.group(1)))
        self.record(path, number)
        rest = text[assign.end() :].strip()
        if rest.startswith("{"):
            self.inline(rest, path, number)
        for quote in ('"""', "'''"):
            if rest.startswith(quote) and rest.count(quote) % 2 == 1:
                self.open_string = quote

    def inline(self, rest: str, path: KeyPath, number: int) -> None:
        stack: list[KeyPath] = []
        last = path
        i = 0
        while i < len(rest):
            char = rest[i]
            if char in "\"'":
                string = _STRING.match(rest, i)
                i = string.end() if string else len(rest)
                continue
            if char == "#":
                return
            if char == "}":
                if stack:
                    stack.pop()
                if not stack:
                    return
            if char in "{,":
                if char == "{":
                    stack.append(last)
                key = _ASSIGN.match(rest, i + 1)
                if key and stack:
                    last = (*stack[-1], *_split(key.group(1)))
                    self.record(last, number)
                    i = key.end()
                    continue
            i += 1


def locate_keys(text: str) -> dict[KeyPath, int]:
    """Map each key path found in `text` (and every table) to the line it first appears on."""
    scanner = _Scanner()
    for number, line in enumerate(text.split("\n"), start=1):
        scanner.line(line, number)
    return scanner.found
