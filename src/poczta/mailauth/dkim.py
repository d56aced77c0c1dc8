"""DKIM verification of incoming mail (RFC 6376, RFC 8463); signing is in `dkim_sign`.

Verification is pure: it takes the message bytes and a `Resolver`, and returns one
`DkimResult` per DKIM-Signature header field, topmost first. An unsigned message gives
an empty list (Authentication-Results then says ``dkim=none``).

Canonicalisation and the selection and hashing of header fields come from dkimpy; the
tag lists, key records, the clock (``x=``) and the cryptography are handled here, so
that every outcome maps to one Authentication-Results status (RFC 8601 section 2.7.1):

- ``pass``: the signature verifies (see ``body_length_limited`` for ``l=``);
- ``fail``: body hash or signature mismatch, ``x=`` expired, ``l=`` longer than the body;
- ``neutral``: the signature header field itself is malformed or uses an unknown algorithm;
- ``permerror``: no usable key (no record, revoked ``p=``, bad record, key type or hash
  not allowed by the record, service type without email, RSA key under 1024 bits), or
  ``a=rsa-sha1``, which RFC 8301 forbids verifiers to accept;
- ``temperror``: the key lookup failed temporarily.

Nothing here raises on malformed input: garbage gives results, never exceptions.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim import hash_headers
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

from poczta.dns import DnsError, NXDomain, Resolver
from poczta.message.header import HeaderSection, split_header

T = TypeVar("T")


class Offload(Protocol):
    """Runs a piece of CPU work somewhere and gives its result (see `verify_dkim`)."""

    def __call__(self, work: Callable[[], T], /) -> Awaitable[T]: ...


class DkimStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"
    NONE = "none"


@dataclass(frozen=True)
class DkimResult:
    """The outcome of one DKIM-Signature header field."""

    status: DkimStatus
    domain: str = ""  # d=, lowercased
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    signature_b: str = ""  # b= without whitespace (header.b shows a prefix of it)
    identity: str = ""  # i= (defaults to "@" + d=)
    reason: str = ""
    body_length_limited: bool = False  # l= left part of the body unsigned
    testing: bool = False  # the key record says t=y
    key_bits: int | None = None

    @property
    def header_b(self) -> str:
        """A short prefix of b= for Authentication-Results (RFC 6008)."""
        return self.signature_b[:12]


MIN_RSA_BITS = 1024
EXPIRY_GRACE_SECONDS = 300
_HASHES = {"rsa-sha256": "sha256", "ed25519-sha256": "sha256", "rsa-sha1": "sha1"}
_KEY_TYPES = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519", "rsa-sha1": "rsa"}
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
NAME_SYNTAX = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_WSP = re.compile(r"\s+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")


class TagListError(ValueError):
    """A DKIM tag=value list is malformed."""


def parse_tag_list(text: str) -> dict[str, str]:
    """Parse an RFC 6376 section 3.2 tag list; values keep inner whitespace, outer stripped."""
    tags: dict[str, str] = {}
    specs = text.split(";")
    if specs and not specs[-1].strip():
        specs.pop()
    for spec in specs:
        name, eq, value = spec.partition("=")
        name = name.strip()
        if not eq or not _TAG_NAME.match(name):
            raise TagListError(f"bad tag spec {spec.strip()[:40]!r}")
        if name in tags:
            raise TagListError(f"duplicate tag {name}=")
        tags[name] = value.strip()
    return tags


def _b64(value: str) -> bytes:
    compact = _WSP.sub("", value)
    if not _BASE64.match(compact) or len(compact) % 4:
        raise ValueError("not base64")
    return base64.b64decode(compact, validate=True)


# --- the message -------------------------------------------------------------------------


_BARE_LF = re.compile(rb"(?<!\r)\n")
MAX_SIGNED_FIELDS = 256  # h= entries; real signers list a few dozen


def split_message(
    message: bytes, header: HeaderSection | None = None
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as (name, raw value incl. folding and CRLF) and the CRLF body.

    The header comes from `header` (split by `poczta.message.header`, see its rules)
    or is split here; bare LF line ends in the body become CRLF.
    """
    section = header if header is not None else split_header(message)
    return [(f.name, f.value) for f in section], _crlf(section.body(message))


def _crlf(body: bytes) -> bytes:
    return _BARE_LF.sub(b"\r\n", body) if b"\n" in body else body


# --- signatures --------------------------------------------------------------------------


@dataclass
class _Signature:
    header: tuple[bytes, bytes]
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    b_text: str = ""
    identity: str = ""
    canon: str = "simple/simple"
    signed: list[str] = field(default_factory=list)
    body_hash: bytes = b""
    signature: bytes = b""
    length: int | None = None
    expiry: int | None = None

    def result(
        self,
        status: DkimStatus,
        reason: str = "",
        *,
        limited: bool = False,
        testing: bool = False,
        key_bits: int | None = None,
    ) -> DkimResult:
        return DkimResult(
            status,
            domain=self.domain,
            selector=self.selector,
            algorithm=self.algorithm,
            signature_b=self.b_text,
            identity=self.identity,
            reason=reason,
            body_length_limited=limited,
            testing=testing,
            key_bits=key_bits,
        )


class _BadSignature(ValueError):
    def __init__(self, status: DkimStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _neutral(reason: str) -> _BadSignature:
    return _BadSignature(DkimStatus.NEUTRAL, reason)


def _parse_signature(sig: _Signature) -> None:
    """Fill `sig` from its header field; raise _BadSignature when it cannot be used."""
    try:
        tags = parse_tag_list(sig.header[1].decode("utf-8", "surrogateescape"))
    except TagListError as exc:
        raise _neutral(f"malformed signature: {exc}") from None
    sig.domain = tags.get("d", "").lower()
    sig.selector = tags.get("s", "")
    sig.algorithm = tags.get("a", "").lower()
    sig.b_text = _WSP.sub("", tags.get("b", ""))
    missing = [t for t in ("v", "a", "b", "bh", "d", "h", "s") if t not in tags]
    if missing:
        raise _neutral(f"signature lacks {', '.join(t + '=' for t in missing)}")
    if tags["v"] != "1":
        raise _neutral(f"unknown signature version v={tags['v'][:20]}")
    if sig.algorithm == "rsa-sha1":
        raise _BadSignature(DkimStatus.PERMERROR, "rsa-sha1 is not accepted (RFC 8301)")
    if sig.algorithm not in _HASHES:
        raise _neutral(f"unknown algorithm a={sig.algorithm[:30]}")
    if not NAME_SYNTAX.match(sig.domain) or not NAME_SYNTAX.match(sig.selector):
        raise _neutral("malformed d= or s=")
    if tags.get("q", "dns/txt").lower() != "dns/txt":
        raise _neutral("unsupported query method q=")
    _parse_signature_values(sig, tags)


def _parse_signature_values(sig: _Signature, tags: dict[str, str]) -> None:
    sig.identity = tags.get("i", "@" + sig.domain)
    i_domain = sig.identity.rpartition("@")[2].lower()
    if "@" not in sig.identity or not (
        i_domain == sig.domain or i_domain.endswith("." + sig.domain)
    ):
        raise _neutral("i= is not within d=")
    sig.canon = tags.get("c", "simple/simple").lower()
    sig.signed = [h.strip().lower() for h in tags["h"].split(":")]
    if len(sig.signed) > MAX_SIGNED_FIELDS:
        raise _neutral(f"h= lists more than {MAX_SIGNED_FIELDS} header fields")
    if "from" not in sig.signed:
        raise _neutral("h= does not include From")
    try:
        sig.body_hash = _b64(tags["bh"])
        sig.signature = _b64(tags["b"])
    except ValueError:
        raise _neutral("malformed bh= or b=") from None
    if not sig.signature:
        raise _neutral("empty b=")
    for tag in ("l", "t", "x"):
        if tag in tags and not (tags[tag].isdigit() and tags[tag].isascii()):
            raise _neutral(f"{tag}= is not a number")
    if "l" in tags:
        sig.length = int(tags["l"])
    sig.expiry = int(tags["x"]) if "x" in tags else None
    if sig.expiry is not None and "t" in tags and sig.expiry < int(tags["t"]):
        raise _neutral("x= is earlier than t=")


# --- keys --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    """A parsed key record (RFC 6376 section 3.6.1)."""

    key_type: str
    public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    bits: int
    hashes: tuple[str, ...] | None
    testing: bool
    strict: bool


class KeyRecordError(ValueError):
    """A key record cannot be used; the message says why."""


def parse_key_record(record: bytes) -> DkimKey:
    """Parse a DKIM key TXT record; raise KeyRecordError (revoked, malformed, not for email)."""
    try:
        tags = parse_tag_list(record.decode("ascii"))
    except (UnicodeDecodeError, TagListError) as exc:
        raise KeyRecordError(f"malformed key record: {exc}") from None
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        raise KeyRecordError("key record version is not DKIM1")
    if "p" not in tags:
        raise KeyRecordError("key record lacks p=")
    if not _WSP.sub("", tags["p"]):
        raise KeyRecordError("key revoked (empty p=)")
    services = {s.strip() for s in tags.get("s", "*").split(":")}
    if not services & {"*", "email"}:
        raise KeyRecordError("key is not for email (s=)")
    key_type = tags.get("k", "rsa").lower()
    try:
        data = _b64(tags["p"])
    except ValueError:
        raise KeyRecordError("p= is not base64") from None
    public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    if key_type == "rsa":
        rsa_key = _load_rsa_public(data)
        public_key, bits = rsa_key, rsa_key.key_size
    elif key_type == "ed25519":
        if len(data) != 32:
            raise KeyRecordError("ed25519 key is not 32 bytes")
        public_key, bits = ed25519.Ed25519PublicKey.from_public_bytes(data), 256
    else:
        raise KeyRecordError(f"unknown key type k={key_type[:30]}")
    hash_list = tuple(h.strip().lower() for h in tags["h"].split(":")) if "h" in tags else None
    flags = {f.strip().lower() for f in tags.get("t", "").split(":")}
    return DkimKey(key_type, public_key, bits, hash_list, "y" in flags, "s" in flags)


def _load_rsa_public(data: bytes) -> rsa.RSAPublicKey:
    for loader in (_spki_der, _pkcs1_der):
        try:
            key = loader(data)
        except (ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPublicKey):
            return key
    raise KeyRecordError("p= is not an RSA public key")


def _spki_der(data: bytes) -> object:
    return serialization.load_der_public_key(data)


def _pkcs1_der(data: bytes) -> object:
    body = base64.encodebytes(data)
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + body + b"-----END RSA PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(pem)


def _key_problem(sig: _Signature, key: DkimKey) -> str | None:
    if key.key_type != _KEY_TYPES[sig.algorithm]:
        return f"key type {key.key_type} does not match a={sig.algorithm}"
    if key.hashes is not None and _HASHES[sig.algorithm] not in key.hashes:
        return "key record h= does not allow the hash"
    if key.strict and sig.identity.rpartition("@")[2].lower() != sig.domain:
        return "key is t=s but i= is a subdomain of d="
    if key.key_type == "rsa" and key.bits < MIN_RSA_BITS:
        return f"RSA key of {key.bits} bits is too short"
    return None


# --- verification ------------------------------------------------------------------------


class _Verifier:
    """Hashes one message's body and header fields for any number of signatures."""

    def __init__(self, message: bytes, header: HeaderSection | None) -> None:
        self.headers, self.body = split_message(message, header)
        self._bodies: dict[bytes, bytes] = {}

    def canonical_body(self, policy: CanonicalizationPolicy) -> bytes:
        name = bytes(policy.body_algorithm.name)
        if name not in self._bodies:
            self._bodies[name] = bytes(policy.canonicalize_body(self.body))
        return self._bodies[name]

    def check(self, sig: _Signature, key: DkimKey) -> tuple[DkimStatus, str, bool]:
        """Status, reason and whether l= left part of the body unsigned."""
        try:
            policy = CanonicalizationPolicy.from_c_value(sig.canon.encode())
        except InvalidCanonicalizationPolicyError:
            return DkimStatus.NEUTRAL, f"unknown canonicalization c={sig.canon[:30]}", False
        body = self.canonical_body(policy)
        limited = False
        if sig.length is not None:
            if sig.length > len(body):
                return DkimStatus.FAIL, "l= is longer than the body", False
            limited = sig.length < len(body)
            body = body[: sig.length]
        digest_name = _HASHES[sig.algorithm]
        if hashlib.new(digest_name, body).digest() != sig.body_hash:
            return DkimStatus.FAIL, "body hash mismatch", limited
        hasher = hashlib.new(digest_name)
        signed = [*sig.signed, "from"] if "from" in sig.signed else sig.signed
        canon_headers = policy.canonicalize_headers(list(self.headers))
        hash_headers(hasher, policy, canon_headers, [h.encode() for h in signed], sig.header, {})
        if not _signature_valid(key, sig.signature, hasher.digest(), digest_name):
            return DkimStatus.FAIL, "signature mismatch", limited
        return DkimStatus.PASS, "", limited


def _signature_valid(key: DkimKey, signature: bytes, digest: bytes, digest_name: str) -> bool:
    try:
        if isinstance(key.public_key, rsa.RSAPublicKey):
            algorithm = hashes.SHA256() if digest_name == "sha256" else hashes.SHA1()
            key.public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
        else:
            key.public_key.verify(signature, digest)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


async def _fetch_keys(
    resolver: Resolver, name: str, cache: dict[str, list[bytes] | DkimStatus]
) -> list[bytes] | DkimStatus:
    if name not in cache:
        try:
            cache[name] = await resolver.txt(name)
        except NXDomain:
            cache[name] = DkimStatus.PERMERROR
        except DnsError:  # DnsTempError and any other lookup failure
            cache[name] = DkimStatus.TEMPERROR
    return cache[name]


async def _verify_signature(
    sig: _Signature,
    verifier: _Verifier,
    resolver: Resolver,
    now: float,
    cache: dict[str, list[bytes] | DkimStatus],
    run: Offload,
) -> DkimResult:
    try:
        _parse_signature(sig)
    except _BadSignature as exc:
        return sig.result(exc.status, exc.reason)
    name = f"{sig.selector}._domainkey.{sig.domain}".lower()
    records = await _fetch_keys(resolver, name, cache)
    if records == DkimStatus.TEMPERROR:
        return sig.result(DkimStatus.TEMPERROR, f"key lookup for {name} failed")
    if records == DkimStatus.PERMERROR or not records:
        return sig.result(DkimStatus.PERMERROR, f"no key at {name}")
    assert isinstance(records, list)
    problem = ""
    outcome: DkimResult | None = None
    for record in records:
        try:
            key = parse_key_record(record)
        except KeyRecordError as exc:
            problem = problem or str(exc)
            continue
        unusable = _key_problem(sig, key)
        if unusable:
            problem = problem or unusable
            continue
        if sig.expiry is not None and sig.expiry + EXPIRY_GRACE_SECONDS < now:
            return sig.result(DkimStatus.FAIL, "signature expired (x=)", testing=key.testing)
        status, reason, limited = await run(functools.partial(verifier.check, sig, key))
        outcome = sig.result(
            status, reason, limited=limited, testing=key.testing, key_bits=key.bits
        )
        if status == DkimStatus.PASS:
            return outcome
    return outcome or sig.result(DkimStatus.PERMERROR, problem)


async def _inline(work: Callable[[], T]) -> T:
    return work()


async def verify_dkim(
    message: bytes,
    resolver: Resolver,
    *,
    header: HeaderSection | None = None,
    now: float | None = None,
    max_signatures: int = 5,
    offload: Offload | None = None,
) -> list[DkimResult]:
    """Verify every DKIM-Signature of `message`, topmost first; [] when unsigned.

    `header` is the message's header section when it is already split. Signatures past
    `max_signatures` are not looked up and come back ``neutral``. `now` (seconds since
    the epoch) is the clock for ``x=``; by default the real one. `offload` runs the
    hashing of body and header fields (the work that grows with the message), e.g. on
    a thread so that a large message does not hold up an event loop; by default it
    runs inline.
    """
    clock = time.time() if now is None else now
    run = offload or _inline
    if header is not None and not any(f.key == "dkim-signature" for f in header):
        return []
    try:
        verifier = await run(lambda: _Verifier(message, header))
    except Exception:  # defensive: a message we cannot split has no usable signature
        return []
    sig_headers = [h for h in verifier.headers if h[0].strip().lower() == b"dkim-signature"]
    cache: dict[str, list[bytes] | DkimStatus] = {}
    results = []
    for index, sig_field in enumerate(sig_headers):
        sig = _Signature(sig_field)
        if index >= max_signatures:
            _parse_quietly(sig)
            results.append(sig.result(DkimStatus.NEUTRAL, "too many signatures, not checked"))
            continue
        try:
            results.append(await _verify_signature(sig, verifier, resolver, clock, cache, run))
        except Exception as exc:  # defensive: never let one odd signature break delivery
            results.append(sig.result(DkimStatus.NEUTRAL, f"unverifiable: {type(exc).__name__}"))
    return results


def _parse_quietly(sig: _Signature) -> None:
    with contextlib.suppress(_BadSignature):
        _parse_signature(sig)


def results_pass(results: Sequence[DkimResult]) -> list[DkimResult]:
    """The passing results, in order."""
    return [r for r in results if r.status == DkimStatus.PASS]
