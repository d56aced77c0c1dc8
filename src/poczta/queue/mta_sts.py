"""MTA-STS (RFC 8461) without I/O: the `_mta-sts` TXT record, the policy text, MX matching
and what a policy asks of one MX host.

- `select_record` picks the one ``v=STSv1`` record among a name's TXT records (3.1):
  none, several, or one that does not parse all mean "no policy announced".
- `parse_policy` reads the policy file (3.2): ``version: STSv1``, ``mode`` (enforce,
  testing, none), ``max_age`` (seconds, bounded to `MAX_AGE_LIMIT`) and ``mx``
  patterns (``*.`` matches exactly one label). Of a field other than ``mx`` the first
  occurrence counts; unknown fields are ignored; ``mx`` may only be missing in mode
  none. Lines end in LF or CRLF, blank lines are skipped. A body over
  `MAX_POLICY_SIZE` octets, `MAX_POLICY_LINES` lines or `MAX_MX_PATTERNS` patterns is
  refused rather than read.
- `decide` says what a policy asks of one MX host (4.1, 5): in enforce mode a listed host
  needs STARTTLS with a certificate valid for its name, an unlisted one is skipped; in
  testing mode the same checks are made and their failures only reported.

Errors are values (`StsError`), never exceptions: whatever bytes the network gives,
these functions return.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_MX_PATTERNS",
    "MAX_POLICY_LINES",
    "MAX_POLICY_SIZE",
    "StsDecision",
    "StsError",
    "StsMode",
    "StsPolicy",
    "StsRecord",
    "decide",
    "mx_matches",
    "parse_policy",
    "parse_record",
    "select_record",
]

MAX_AGE_LIMIT = 31_557_600  # a year: the largest max_age RFC 8461 3.2 allows
MAX_POLICY_SIZE = 65_536  # octets; the limit RFC 8461 3.3 suggests
MAX_POLICY_LINES = 1000
MAX_MX_PATTERNS = 100

_WSP = " \t"
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_RECORD_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_RECORD_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_MAX_AGE = re.compile(r"[0-9]{1,10}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_VERSION = "v=STSv1"


class StsMode(enum.Enum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class StsError:
    """Why a record or a policy cannot be used."""

    text: str


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The ``_mta-sts`` TXT record: the policy's id (a new id means a new policy)."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy; `mx` holds the patterns lower-cased, without a trailing dot."""

    mode: StsMode
    max_age: int
    mx: tuple[str, ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()

    def matches(self, host: str) -> bool:
        return any(mx_matches(pattern, host) for pattern in self.mx)


class StsDecision(enum.Enum):
    """What a policy asks of one MX host."""

    OPPORTUNISTIC = "opportunistic"  # no policy, or mode none: STARTTLS when offered
    VERIFIED = "verified"  # enforce, listed: STARTTLS and a valid certificate, or no mail
    SKIP = "skip"  # enforce, not listed: never deliver there
    TEST_VERIFIED = "test-verified"  # testing, listed: check as VERIFIED, report, deliver
    TEST_UNLISTED = "test-unlisted"  # testing, not listed: report, deliver opportunistically


def decide(policy: StsPolicy | None, host: str) -> StsDecision:
    """What `policy` asks of the MX host named `host` (RFC 8461 5)."""
    if policy is None or policy.mode is StsMode.NONE:
        return StsDecision.OPPORTUNISTIC
    listed = policy.matches(host)
    if policy.mode is StsMode.ENFORCE:
        return StsDecision.VERIFIED if listed else StsDecision.SKIP
    return StsDecision.TEST_VERIFIED if listed else StsDecision.TEST_UNLISTED


def mx_matches(pattern: str, host: str) -> bool:
    """Whether MX host `host` matches policy pattern `pattern` (RFC 8461 4.1).

    Names compare case-insensitively and without a trailing dot; ``*.example.com``
    matches ``mx.example.com`` but neither ``example.com`` nor ``a.b.example.com``.
    """
    name = host.strip().rstrip(".").lower()
    pattern = pattern.rstrip(".").lower()
    if not name or not pattern:
        return False
    if pattern.startswith("*."):
        first, dot, rest = name.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return name == pattern


# --------------------------------------------------------------------------- the TXT record


def select_record(texts: Sequence[bytes]) -> StsRecord | StsError:
    """The domain's record among its TXT records at ``_mta-sts`` (RFC 8461 3.1)."""
    candidates = [t for t in texts if _is_sts(t)]
    if not candidates:
        return StsError("no v=STSv1 TXT record")
    if len(candidates) > 1:
        return StsError(f"{len(candidates)} v=STSv1 TXT records (one is allowed)")
    return parse_record(candidates[0])


def _is_sts(text: bytes) -> bool:
    if not text.startswith(_VERSION.encode()):
        return False
    rest = text[len(_VERSION) :].lstrip(_WSP.encode())
    return rest == b"" or rest.startswith(b";")


def parse_record(text: bytes) -> StsRecord | StsError:
    """One ``v=STSv1; id=...`` record; the first id counts, extensions are kept."""
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return StsError("the TXT record is not ASCII")
    if not decoded.startswith(_VERSION):
        return StsError(f"the TXT record does not start with {_VERSION}")
    fields = decoded[len(_VERSION) :].split(";")
    if fields[0].strip(_WSP):
        return StsError(f"text after {_VERSION} before the first ';'")
    if fields[-1].strip(_WSP) == "":
        fields.pop()  # a final ';' is allowed
    ident: str | None = None
    extensions: list[tuple[str, str]] = []
    for field in fields[1:]:
        name, equals, value = field.strip(_WSP).partition("=")
        if not equals or not _FIELD_NAME.fullmatch(name):
            return StsError(f"malformed field {field.strip(_WSP)!r}")
        if name == "id":
            if not _RECORD_ID.fullmatch(value):
                return StsError("id= is not 1 to 32 letters and digits")
            ident = ident or value
        elif _RECORD_VALUE.fullmatch(value):
            extensions.append((name, value))
        else:
            return StsError(f"malformed value of {name}=")
    if ident is None:
        return StsError("the TXT record has no id=")
    return StsRecord(ident, tuple(extensions))


# --------------------------------------------------------------------------- the policy


def parse_policy(body: bytes) -> StsPolicy | StsError:
    """The policy served at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``."""
    if len(body) > MAX_POLICY_SIZE:
        return StsError(f"the policy is over {MAX_POLICY_SIZE} octets")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return StsError("the policy is not UTF-8")
    lines = text.removesuffix("\n").split("\n")
    if len(lines) > MAX_POLICY_LINES:
        return StsError(f"the policy has over {MAX_POLICY_LINES} lines")
    found: dict[str, str] = {}
    mx: list[str] = []
    extensions: list[tuple[str, str]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.removesuffix("\r").rstrip(_WSP)
        if not line:
            continue
        name, colon, value = line.partition(":")
        value = value.lstrip(_WSP)
        if not colon or not _FIELD_NAME.fullmatch(name) or not value or not value.isprintable():
            return StsError(f"line {number}: not a 'name: value' field")
        if name == "mx":
            pattern = _mx_pattern(value)
            if pattern is None:
                return StsError(f"line {number}: {value!r} is not a host name or *.pattern")
            if len(mx) == MAX_MX_PATTERNS:
                return StsError(f"the policy has over {MAX_MX_PATTERNS} mx patterns")
            mx.append(pattern)
        elif name in ("version", "mode", "max_age"):
            found.setdefault(name, value)
        else:
            extensions.append((name, value))
    return _policy_of(found, tuple(mx), tuple(extensions))


def _policy_of(
    found: dict[str, str], mx: tuple[str, ...], extensions: tuple[tuple[str, str], ...]
) -> StsPolicy | StsError:
    missing = [name for name in ("version", "mode", "max_age") if name not in found]
    if missing:
        return StsError(f"the policy has no {', '.join(missing)} field")
    if found["version"] != "STSv1":
        return StsError(f"unknown version {found['version']!r}")
    try:
        mode = StsMode(found["mode"])
    except ValueError:
        return StsError(f"unknown mode {found['mode']!r}")
    if not _MAX_AGE.fullmatch(found["max_age"]):
        return StsError(f"max_age {found['max_age']!r} is not 1 to 10 digits")
    if not mx and mode is not StsMode.NONE:
        return StsError(f"mode {mode.value} without any mx pattern")
    max_age = min(int(found["max_age"]), MAX_AGE_LIMIT)
    return StsPolicy(mode, max_age, mx, extensions)


def _mx_pattern(value: str) -> str | None:
    """A policy's mx value, lower-cased: a host name in A-labels, maybe after ``*.``."""
    name = value.lower()
    wildcard = name.startswith("*.")
    if wildcard:
        name = name[2:]
    name = name.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return f"*.{name}" if wildcard else name
