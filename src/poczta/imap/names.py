"""Mailbox names as IMAP clients send them: validation, and LIST pattern matching.

poczta's hierarchy separator is "/" and its only namespace is the user's own (prefix
""). A name a client may create is non-empty, at most `MAX_NAME` characters and
`MAX_DEPTH` levels, without control characters, without the LIST wildcards `%` and
`*`, without empty, "." or ".." levels, and does not start with "#" (namespaces) or
"~". INBOX is matched in any case. Names are only ever looked up among the logged-in
user's own mailboxes, so no name can reach another user's mail or a file path.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["DELIMITER", "MAX_NAME", "canonical", "name_problem", "pattern_matcher"]

DELIMITER = "/"
MAX_NAME = 255
MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def canonical(name: str) -> str:
    """`name` with INBOX (as a whole or as the first level) in its canonical case."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX/":
        return "INBOX" + name[5:]
    return name


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a mailbox name, or None when it can."""
    if not name:
        return "The mailbox name is empty"
    if len(name) > MAX_NAME:
        return f"The mailbox name is longer than {MAX_NAME} characters"
    if _CONTROL.search(name):
        return "The mailbox name contains a control character"
    if "%" in name or "*" in name:
        return "The mailbox name contains a wildcard (% or *)"
    if name[0] in "#~":
        return "The mailbox name must not start with # or ~"
    levels = name.split(DELIMITER)
    if len(levels) > MAX_DEPTH:
        return f"The mailbox name has more than {MAX_DEPTH} levels"
    if any(level in ("", ".", "..") or level != level.strip() for level in levels):
        return "The mailbox name has an empty, '.' or '..' level, or spaces around one"
    return None


@lru_cache(maxsize=256)
def pattern_matcher(pattern: str) -> re.Pattern[str]:
    """A regex for a LIST pattern: `*` matches anything, `%` anything but the delimiter.

    INBOX as the first level matches in any case."""
    out: list[str] = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(char))
    body = "".join(out)
    if pattern[:5].upper() == "INBOX" and (
        len(pattern) == 5 or pattern[5] in (DELIMITER, "%", "*")
    ):
        body = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(body, re.DOTALL)
