"""Authentication-Results header fields (RFC 8601): building, parsing, stripping forgeries.

We write one field per message with our authserv-id and one resinfo per result of a
registered method (`REGISTERED_METHODS`: we write spf, dkim and dmarc). Checks without
a registered method, such as DNS blocklists and greylisting, must not appear here
(RFC 8601 section 2.7); the verdict records them in its own header field, in the same
resinfo syntax. Before adding ours, `strip_forged_results` removes incoming fields that
claim our authserv-id, so nothing upstream can pretend to speak for us (RFC 8601
section 5).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from poczta.mailauth.dkim import DkimResult
from poczta.mailauth.dmarc import DmarcResult
from poczta.message.header import HeaderField, HeaderSection, split_header

#: The IANA "Email Authentication Methods" registry (RFC 8601 section 6.2 and later
#: registrations). There is a ``dnswl`` (RFC 8904) for DNS allowlists, no DNS blocklist.
REGISTERED_METHODS = frozenset(
    {"arc", "auth", "dkim", "dkim-adsp", "dkim-atps", "dmarc", "dnswl", "domainkeys",
     "iprev", "rrvs", "sender-id", "smime", "spf", "vbr"}
)  # fmt: skip


@dataclass(frozen=True)
class ResInfo:
    """One method's result: ``method=result [reason="..."] ptype.property=value ...``."""

    method: str
    result: str
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()  # (ptype.property, value)
    comment: str = ""  # written as a (comment) after the result; not read back

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.properties if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class AuthenticationResults:
    authserv_id: str
    results: list[ResInfo] = field(default_factory=list)
    version: str | None = None


class AuthResultsSyntaxError(ValueError):
    """An Authentication-Results value cannot be parsed."""


# --- building ----------------------------------------------------------------------------

_TSPECIALS = set('()<>@,;:\\"/[]?=')
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9_-]+)*\.?\Z")


_TOKEN = re.compile(
    "[" + re.escape("".join(chr(c) for c in range(33, 127) if chr(c) not in _TSPECIALS)) + "]+"
)


def _is_token(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


def quote(value: str) -> str:
    """A quoted-string for `value` (CR and LF dropped)."""
    cleaned = value.replace("\r", "").replace("\n", " ")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value(value: str) -> str:
    """A token, an address or domain as RFC 8601 pvalue allows, else a quoted-string."""
    if _is_token(value):
        return value
    local, at, domain = value.rpartition("@")
    if at and _DOMAIN.match(domain) and (not local or _ATEXT.match(local)):
        return value
    return quote(value)


def _comment(text: str) -> str:
    return "(" + re.sub(r"[()\\\r\n]", "", text) + ")"


@lru_cache(maxsize=4096)  # the same few results recur on most messages
def format_resinfo(info: ResInfo) -> str:
    parts = [f"{info.method}={info.result}"]
    if info.comment:
        parts.append(_comment(info.comment))
    if info.reason:
        parts.append(f"reason={quote(info.reason)}")
    parts.extend(f"{name}={format_value(value)}" for name, value in info.properties)
    return " ".join(parts)


def format_authentication_results(
    authserv_id: str, results: Iterable[ResInfo], *, fold: bool = True
) -> str:
    """The field value; each resinfo on its own folded line when `fold`."""
    items = [format_resinfo(r) for r in results] or ["none"]
    separator = ";\r\n\t" if fold else "; "
    return format_value(authserv_id) + separator + separator.join(items)


def authentication_results_header(authserv_id: str, results: Iterable[ResInfo]) -> bytes:
    """The whole header field, CRLF-terminated, ready to prepend to a message."""
    value = format_authentication_results(authserv_id, results)
    return f"Authentication-Results: {value}\r\n".encode()


def spf_resinfo(
    result: str, *, mailfrom: str | None = None, helo: str | None = None, reason: str = ""
) -> ResInfo:
    props = []
    if mailfrom:
        props.append(("smtp.mailfrom", mailfrom))
    if helo:
        props.append(("smtp.helo", helo))
    return ResInfo("spf", result.lower(), reason, tuple(props))


def _unique_prefixes(values: Sequence[str], minimum: int = 8) -> list[str]:
    """The shortest prefix of each value (at least `minimum`) that no other value shares."""
    out = []
    for i, value in enumerate(values):
        length = min(minimum, len(value))
        others = [v for j, v in enumerate(values) if j != i and v != value]
        while length < len(value) and any(o.startswith(value[:length]) for o in others):
            length += 1
        out.append(value[:length])
    return out


def dkim_resinfos(results: Sequence[DkimResult]) -> list[ResInfo]:
    """One resinfo per signature, or ``dkim=none`` for an unsigned message."""
    if not results:
        return [ResInfo("dkim", "none")]
    prefixes = _unique_prefixes([r.signature_b for r in results])
    infos = []
    for result, prefix in zip(results, prefixes, strict=True):
        props = [("header.d", result.domain), ("header.s", result.selector)]
        props += [("header.a", result.algorithm)] if result.algorithm else []
        props += [("header.b", prefix)] if prefix else []
        comment = []
        if result.key_bits:
            comment.append(f"{result.key_bits}-bit key")
        if result.body_length_limited:
            comment.append("body partly unsigned (l=)")
        if result.testing:
            comment.append("test key")
        props = [(k, v) for k, v in props if v]
        infos.append(
            ResInfo("dkim", result.status.value, result.reason, tuple(props), "; ".join(comment))
        )
    return infos


def dmarc_resinfo(result: DmarcResult) -> ResInfo:
    comment = f"p={result.policy} dis={result.disposition}" if result.record else ""
    props = (("header.from", result.from_domain),) if result.from_domain else ()
    reason = result.reason if result.result != "pass" else ""
    return ResInfo("dmarc", result.result, reason, props, comment)


# --- parsing -----------------------------------------------------------------------------


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def skip_cfws(self) -> None:
        depth = 0
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and depth:
                self.pos += 1
            elif c == "(":
                depth += 1
            elif c == ")" and depth:
                depth -= 1
            elif not depth and c not in " \t\r\n":
                return
            self.pos += 1
        if depth:
            raise AuthResultsSyntaxError("unterminated comment")

    def peek(self) -> str:
        self.skip_cfws()
        return self.text[self.pos : self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise AuthResultsSyntaxError(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def word(self, stops: str = "=;.") -> str:
        """A token (stopping at whitespace, comments and `stops`) or a quoted-string."""
        if self.peek() == '"':
            return self._quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ' \t\r\n();"' + stops:
            self.pos += 1
        if start == self.pos:
            raise AuthResultsSyntaxError(f"expected a word at {self.pos}")
        return self.text[start : self.pos]

    def _quoted(self) -> str:
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == '"':
                return "".join(out)
            if c == "\\" and self.pos < len(self.text):
                c, self.pos = self.text[self.pos], self.pos + 1
            if c not in "\r\n":
                out.append(c)
        raise AuthResultsSyntaxError("unterminated quoted-string")


def _parse_resinfo(scan: _Scanner) -> ResInfo:
    method = scan.word("=;/").lower()
    if scan.peek() == "/":
        scan.expect("/")
        scan.word()
    scan.expect("=")
    result = scan.word().lower()
    reason, props = "", []
    while scan.peek() not in ("", ";"):
        name = scan.word().lower()
        if name == "reason":
            scan.expect("=")
            reason = scan.word(";")
            continue
        scan.expect(".")
        prop = scan.word()
        scan.expect("=")
        props.append((f"{name}.{prop.lower()}", scan.word(";")))
    return ResInfo(method, result, reason, tuple(props))


def parse_authentication_results(value: str) -> AuthenticationResults:
    """Parse a field value (what `format_authentication_results` writes, and more)."""
    scan = _Scanner(value)
    authserv_id = scan.word(";")
    version = None
    if scan.peek() not in ("", ";"):
        version = scan.word(";")
    results: list[ResInfo] = []
    while scan.peek() == ";":
        scan.expect(";")
        if scan.peek() == "":
            break
        start = scan.pos
        if scan.word("=;").lower() == "none" and scan.peek() in ("", ";") and not results:
            continue
        scan.pos = start
        results.append(_parse_resinfo(scan))
    if scan.peek() != "":
        raise AuthResultsSyntaxError(f"unexpected text at {scan.pos}")
    return AuthenticationResults(authserv_id, results, version)


def authserv_id_of(value: str) -> str | None:
    """The authserv-id a field value claims (comments skipped), or None if unreadable."""
    try:
        return _Scanner(value).word(";")
    except AuthResultsSyntaxError:
        return None


# --- stripping ---------------------------------------------------------------------------


def claims_authserv_id(field: HeaderField, authserv_id: str) -> bool:
    """True when `field` is an Authentication-Results field naming `authserv_id`
    (case-insensitively, a trailing dot ignored)."""
    if field.key != "authentication-results":
        return False
    claimed = authserv_id_of(field.text())
    return claimed is not None and claimed.lower().rstrip(".") == authserv_id.lower().rstrip(".")


def strip_forged_results(
    message: bytes, authserv_id: str, header: HeaderSection | None = None
) -> bytes:
    """`message` without the Authentication-Results fields that claim `authserv_id`.

    Folded fields are removed whole; every other byte of the message is kept as it was.
    `header` is the message's header section when it is already split.
    """
    section = header if header is not None else split_header(message)
    return section.without(message, lambda f: claims_authserv_id(f, authserv_id))[0]
