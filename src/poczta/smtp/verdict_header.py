"""The X-Poczta-Verdict header field: writing and reading it, and removing incoming claims.

The field records the checks' verdict on a stored message (the action, whether it was
enforced, which checks decided, every reason); `poczta why` reads it back. Only the
checks write it: `without_our_claims` removes incoming copies, and Authentication-Results
fields that name our authserv-id, from mail from anywhere.
"""

from __future__ import annotations

import re

from poczta.mailauth.results import claims_authserv_id
from poczta.mailauth.verdict import Verdict
from poczta.message.header import HeaderSection

__all__ = ["VERDICT_HEADER", "parse_verdict_header", "verdict_header", "without_our_claims"]

VERDICT_HEADER = "X-Poczta-Verdict"
_MAX_REASONS = 800
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_PARAM = re.compile(r'\s*;\s*([A-Za-z][A-Za-z0-9-]*)=("(?:[^"\\]|\\.)*"|[^;\s]*)')


def _quoted(text: str) -> str:
    text = _UNPRINTABLE.sub("?", text)
    if len(text) > _MAX_REASONS:
        text = text[: _MAX_REASONS - 3] + "..."
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def verdict_header(verdict: Verdict) -> bytes:
    """``X-Poczta-Verdict: ACTION; enforced=...; report-only=yes|no; by=...; reasons="..."``"""
    parts = [
        verdict.action.value,
        f"enforced={verdict.enforced.value}",
        f"report-only={'yes' if verdict.report_only else 'no'}",
    ]
    if verdict.decided_by:
        parts.append("by=" + ",".join(verdict.decided_by))
    parts.append("reasons=" + _quoted(" | ".join(verdict.reasons) or "none"))
    value = ";\r\n\t".join(parts)
    return f"{VERDICT_HEADER}: {value}\r\n".encode("ascii")


def parse_verdict_header(value: str) -> dict[str, str]:
    """The action and the parameters of an X-Poczta-Verdict value (unfolded or not)."""
    value = re.sub(r"\r?\n[ \t]", " ", value).strip()
    action, _, rest = value.partition(";")
    out = {"action": action.strip()}
    for match in _PARAM.finditer(";" + rest):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[match.group(1).lower()] = raw
    return out


def without_our_claims(
    data: bytes, header: HeaderSection, authserv_id: str
) -> tuple[bytes, HeaderSection]:
    """`data` without the fields that claim to be our checks' results: X-Poczta-Verdict
    and Authentication-Results naming `authserv_id`. For mail from anywhere, including
    our own users: only the checks write them."""
    verdict_key = VERDICT_HEADER.lower()
    return header.without(
        data, lambda f: f.key == verdict_key or claims_authserv_id(f, authserv_id)
    )
