"""SMTP argument syntax: the EHLO name, paths of MAIL and RCPT (RFC 5321, 6531), their parameters.

Every parser returns either the parsed value or the `Reply` that explains the
error, so the state machine only has to pass the reply on. Nothing a parser
accepts contains a control character (C0, DEL, C1) or a Unicode line or
paragraph separator, so no accepted value can break a header or a log line
it is copied into. Parameters kept:
SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID/NOTIFY/ORCPT
(RFC 3461) and AUTH= on MAIL (RFC 4954, accepted and ignored beyond syntax).
Source routes (`<@a,@b:user@c>`) are accepted and dropped, as RFC 5321 asks.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, replace

from poczta.smtp.replies import MESSAGE_TOO_BIG, NEEDS_SMTPUTF8, Reply

# UTF8-non-ascii (RFC 6531) without the C1 controls and U+2028/U+2029, which some
# readers take for line breaks.
_UTF8 = r"\u00a0-\u2027\u202a-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_UTF8}]"
_QCONTENT = rf"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])"
_LDH_END = rf"[A-Za-z0-9{_UTF8}]"
_SUB_DOMAIN = rf"{_LDH_END}(?:[A-Za-z0-9\-{_UTF8}]*{_LDH_END})?"
_DOMAIN = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_LOCAL = rf'(?:{_ATEXT}+(?:\.{_ATEXT}+)*|"{_QCONTENT}*")'
_MAILBOX = rf"{_LOCAL}@(?:{_DOMAIN}|{_LITERAL})"
_ADL = rf"@{_DOMAIN}(?:,@{_DOMAIN})*"

# "FROM:" / "TO:", then a path, then optional parameters.
_PATH_ARG = re.compile(
    rf"(?P<kw>FROM|TO):[ ]?<(?:(?:{_ADL}):)?(?P<mailbox>{_MAILBOX})?>(?:[ ]+(?P<params>.*))?",
    re.IGNORECASE | re.DOTALL,
)
_POSTMASTER = re.compile(r"TO:[ ]?<postmaster>(?:[ ]+(?P<params>.*))?", re.IGNORECASE | re.DOTALL)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ENVID_MAX = 100
_MAIL_KEYWORDS = frozenset({"SIZE", "BODY", "RET", "ENVID", "AUTH"})

SYNTAX_PATH = Reply(501, "5.1.7", "Syntax error in mailbox address")
SYNTAX_RCPT_PATH = Reply(501, "5.1.3", "Syntax error in recipient address")
SYNTAX_PARAMS = Reply(501, "5.5.4", "Syntax error in parameters")
PARAMS_NOT_ALLOWED = Reply(555, "5.5.4", "Parameters are not allowed after HELO")


def _unsupported(keyword: str) -> Reply:
    return Reply(555, "5.5.4", f"Unsupported parameter {keyword}")


@dataclass(frozen=True, slots=True)
class MailParams:
    """The ESMTP parameters of MAIL FROM."""

    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None
    auth: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    """The ESMTP parameters of RCPT TO: NOTIFY and ORCPT (address type, decoded address)."""

    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None


def decode_xtext(text: str) -> str | None:
    """Decode RFC 3461 xtext (`+HH` escapes); None when it is not valid xtext.

    RFC 3461 (4.2, 4.4) wants printable US-ASCII once decoded, so an escaped control
    character (`+0D`) is refused like bad syntax.
    """
    if not _XTEXT.fullmatch(text):
        return None
    if "+" not in text:
        return text
    raw = _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw if _PRINTABLE_ASCII.fullmatch(raw) else None


_HELO_MAX = 255  # the longest domain (RFC 5321 4.5.3.1.2)
_HELO_ASCII = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _helo_char(c: str) -> bool:
    if c.isascii():
        return c in _HELO_ASCII
    return unicodedata.category(c)[0] in "LMN"


def _address_literal(text: str) -> bool:
    inner = text[1:-1]
    if not text.endswith("]") or "%" in inner:
        return False
    try:
        if inner[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def parse_helo(arg: str) -> str | None:
    """The EHLO/HELO argument as given, or None when it is no acceptable name.

    Accepted, as leniently as real clients need (RFC 5321 4.1.4 allows refusing the
    rest): a name of dot-separated labels of letters, digits, `-` and `_`, non-ASCII
    letters, marks and digits (U-labels), with an optional trailing dot; a single
    label (`localhost`, a bare machine name) and a bare IPv4 address (which is such a
    name) count. Or an address literal, `[192.0.2.1]` or `[IPv6:2001:db8::1]`; general
    address literals (`[tag:...]`) have no registered tag and are refused. Refused:
    empty labels, whitespace, control characters, punctuation and symbols, more than
    255 characters.
    """
    if not arg or len(arg) > _HELO_MAX:
        return None
    if arg.startswith("["):
        return arg if _address_literal(arg) else None
    labels = (arg[:-1] if arg.endswith(".") else arg).split(".")
    if all(label and all(_helo_char(c) for c in label) for label in labels):
        return arg
    return None


def split_params(text: str | None) -> list[tuple[str, str | None]] | Reply:
    """Split `KEY[=value] ...` into upper-cased keywords and raw values."""
    if not text:
        return []
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in filter(None, text.split(" ")):
        key, eq, value = item.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value)):
            return SYNTAX_PARAMS
        key = key.upper()
        if key in seen:
            return Reply(501, "5.5.4", f"Duplicate parameter {key}")
        seen.add(key)
        out.append((key, value if eq else None))
    return out


def _match_path(arg: str, keyword: str) -> re.Match[str] | None:
    m = _PATH_ARG.fullmatch(arg)
    if m is None or m.group("kw").upper() != keyword:
        return None
    return m


def parse_mail_from(arg: str, *, esmtp: bool, max_size: int) -> tuple[str, MailParams] | Reply:
    """Parse the argument of MAIL: returns (reverse-path, params), `""` for `<>`."""
    m = _match_path(arg, "FROM")
    if m is None:
        return SYNTAX_PATH
    address = m.group("mailbox") or ""
    pairs = split_params(m.group("params"))
    if isinstance(pairs, Reply):
        return pairs
    if pairs and not esmtp:
        return PARAMS_NOT_ALLOWED
    params = _mail_params(pairs, max_size)
    if isinstance(params, Reply):
        return params
    if not params.smtputf8 and not address.isascii():
        return NEEDS_SMTPUTF8
    return address, params


def _mail_params(pairs: list[tuple[str, str | None]], max_size: int) -> MailParams | Reply:
    params = MailParams()
    for key, value in pairs:
        if key == "SMTPUTF8":
            if value is not None:
                return SYNTAX_PARAMS
            params = replace(params, smtputf8=True)
        elif key not in _MAIL_KEYWORDS:
            return _unsupported(key)
        elif value is None:
            return SYNTAX_PARAMS
        elif key == "SIZE":
            if not value.isdigit() or not value.isascii() or len(value) > 20:
                return SYNTAX_PARAMS
            if int(value) > max_size:
                return MESSAGE_TOO_BIG
            params = replace(params, size=int(value))
        elif key == "BODY":
            if value.upper() not in ("7BIT", "8BITMIME"):
                return Reply(555, "5.5.4", "Unsupported BODY type")
            params = replace(params, body=value.upper())
        elif key == "RET":
            if value.upper() not in ("FULL", "HDRS"):
                return SYNTAX_PARAMS
            params = replace(params, ret=value.upper())
        else:
            decoded = decode_xtext(value)
            if decoded is None or (key == "ENVID" and len(value) > _ENVID_MAX):
                return SYNTAX_PARAMS
            if key == "ENVID":
                params = replace(params, envid=decoded)
            else:
                params = replace(params, auth=decoded)
    return params


def parse_rcpt_to(arg: str, *, esmtp: bool, smtputf8: bool) -> tuple[str, RcptParams] | Reply:
    """Parse the argument of RCPT: returns (forward-path, params).

    `<postmaster>` without a domain is returned as `postmaster`.
    """
    pm = _POSTMASTER.fullmatch(arg)
    if pm is not None:
        address, raw_params = "postmaster", pm.group("params")
    else:
        m = _match_path(arg, "TO")
        if m is None or not m.group("mailbox"):
            return SYNTAX_RCPT_PATH
        address, raw_params = m.group("mailbox"), m.group("params")
    if not smtputf8 and not address.isascii():
        return NEEDS_SMTPUTF8
    pairs = split_params(raw_params)
    if isinstance(pairs, Reply):
        return pairs
    if pairs and not esmtp:
        return PARAMS_NOT_ALLOWED
    params = _rcpt_params(pairs)
    if isinstance(params, Reply):
        return params
    return address, params


def _rcpt_params(pairs: list[tuple[str, str | None]]) -> RcptParams | Reply:
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    for key, value in pairs:
        if key == "NOTIFY" and value is not None:
            items = tuple(v.upper() for v in value.split(","))
            if items != ("NEVER",) and not (
                set(items) <= _NOTIFY_VALUES and len(set(items)) == len(items)
            ):
                return SYNTAX_PARAMS
            notify = items
        elif key == "ORCPT" and value is not None:
            addr_type, semi, addr = value.partition(";")
            decoded = decode_xtext(addr) if semi else None
            if not decoded or not _KEYWORD.fullmatch(addr_type):
                return SYNTAX_PARAMS
            orcpt = (addr_type.lower(), decoded)
        else:
            return _unsupported(key)
    return RcptParams(notify=notify, orcpt=orcpt)
