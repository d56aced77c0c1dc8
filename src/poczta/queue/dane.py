"""DANE for SMTP (RFC 7672, RFC 6698, RFC 7671): which TLSA records count, and whether the
certificate chain a server presented matches them.

Pure: no I/O, no asyncio; certificates come in as DER bytes, leaf first, as the server
sent them, and the time as an argument. `cryptography` parses them and checks the
signatures.

- `dane_policy` keeps the usable records of a secure TLSA RRset. For SMTP only
  DANE-TA(2) and DANE-EE(3) are usable (RFC 7672 3.1.3), with selector 0 (the whole
  certificate) or 1 (its SubjectPublicKeyInfo) and matching type 0 (exact), 1
  (SHA-256) or 2 (SHA-512); a digest of the wrong length is unusable too. An RRset with
  no usable record still makes TLS mandatory, without authentication (RFC 7672 2.2):
  `DanePolicy.authenticated` is then False and `verify_chain` accepts any chain.
- DANE-EE(3): the leaf matches; names and validity dates are not looked at
  (RFC 7672 3.1.1).
- DANE-TA(2): the chain is checked as PKIX would check it, from the trust anchor
  down (RFC 7672 3.1.2): a certificate of the chain matches (or, for "2 1 0", the
  record's own key signed the top of it), every certificate below it up to the leaf
  was issued and signed by the next one up, the intermediates are CA certificates,
  every one below the anchor (intermediates and leaf) is within its validity dates at
  `now` (an expired or not yet valid one fails the chain, saying which and when; the
  trust anchor's own dates are not checked, as for any trust anchor, unless the record
  names the leaf itself, whose dates always count), and the leaf carries
  one of the reference names (RFC 7672 3.2.2: the MX host name, the end of its CNAME
  chain when that is secure, and the destination domain; `poczta.queue.dane_hosts`
  chooses them) as a DNS subject alternative name, or as its common
  name when it has none; a wildcard stands for the whole leftmost label only.

The SubjectPublicKeyInfo is cut out of the certificate's DER as it was sent (a small
DER walk), not re-encoded from the parsed key, so that it matches what the zone's owner
hashed even for keys `cryptography` cannot load.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from poczta.dns_answers import TlsaRecord

__all__ = [
    "DanePolicy",
    "DaneResult",
    "Matching",
    "Selector",
    "Usage",
    "dane_policy",
    "name_matches",
    "record_for",
    "tlsa_name",
    "usable",
    "verify_chain",
]


class Usage(enum.IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(enum.IntEnum):
    CERT = 0
    SPKI = 1


class Matching(enum.IntEnum):
    FULL = 0
    SHA256 = 1
    SHA512 = 2


_DIGEST_SIZE = {Matching.SHA256: 32, Matching.SHA512: 64}


def tlsa_name(host: str, port: int = 25) -> str:
    """Where the TLSA records of an SMTP server live: `_25._tcp.<host>`."""
    return f"_{port}._tcp.{host.rstrip('.').lower()}"


def record_for(der: bytes, usage: int, selector: int, mtype: int) -> TlsaRecord | None:
    """The TLSA record that matches this DER certificate with these parameters (None when
    the certificate cannot be cut up, or a parameter is unknown)."""
    if selector not in (0, 1) or mtype not in (0, 1, 2):
        return None
    selected = der if selector == Selector.CERT else _spki(der)
    if selected is None:
        return None
    if mtype == Matching.SHA256:
        selected = hashlib.sha256(selected).digest()
    elif mtype == Matching.SHA512:
        selected = hashlib.sha512(selected).digest()
    return TlsaRecord(usage, selector, mtype, selected)


def usable(record: TlsaRecord) -> bool:
    """Whether an SMTP client can use this record (RFC 7672 3.1.3, RFC 7671 5)."""
    if record.usage not in (Usage.DANE_TA, Usage.DANE_EE) or record.selector not in (0, 1):
        return False
    if record.mtype == Matching.FULL:
        return bool(record.data)
    size = _DIGEST_SIZE.get(Matching(record.mtype)) if record.mtype in (1, 2) else None
    return size is not None and len(record.data) == size


@dataclass(frozen=True, slots=True)
class DanePolicy:
    """What one MX host must show: a chain matching `records` (when there are any).

    `tlsa_name` is where the records were found; `names` the reference identifiers a
    DANE-TA chain's leaf must carry. Hashable, so it can be part of a connection key.
    """

    tlsa_name: str
    records: tuple[TlsaRecord, ...]
    names: tuple[str, ...]
    unusable: int = 0  # records of the RRset that were left out

    @property
    def authenticated(self) -> bool:
        return bool(self.records)

    @property
    def base_domain(self) -> str:
        """The TLSA base domain: the name sent as SNI (RFC 7672 8.1)."""
        return self.tlsa_name.split(".", 2)[2] if self.tlsa_name.startswith("_") else self.tlsa_name


def dane_policy(name: str, records: Iterable[TlsaRecord], names: Sequence[str]) -> DanePolicy:
    """The policy of a secure, non-empty TLSA RRset at `name`."""
    found = list(dict.fromkeys(records))
    kept = tuple(r for r in found if usable(r))
    reference = tuple(dict.fromkeys(n.rstrip(".").lower() for n in names if n))
    return DanePolicy(name, kept, reference, len(found) - len(kept))


@dataclass(frozen=True, slots=True)
class DaneResult:
    """The verdict on one chain: `ok`, and a sentence saying why."""

    ok: bool
    text: str
    matched: TlsaRecord | None = None


def verify_chain(policy: DanePolicy, chain: Sequence[bytes], now: datetime) -> DaneResult:
    """Whether the chain (DER, leaf first) satisfies `policy` at `now` (aware UTC)."""
    if not policy.authenticated:
        return DaneResult(True, f"no usable TLSA record at {policy.tlsa_name}: TLS unauthenticated")
    if not chain:
        return DaneResult(False, "the server presented no certificate")
    for record in policy.records:
        if record.usage == Usage.DANE_EE and _matches(chain[0], record):
            return DaneResult(True, f"the certificate matches TLSA {_short(record)}", record)
    certs = _parse_all(chain)
    reasons: list[str] = []
    for record in policy.records:
        if record.usage != Usage.DANE_TA or certs is None:
            continue
        for below, key in _anchors(record, chain, certs):
            reason = _chain_fault(certs[:below], key, policy.names, now)
            if reason is None:
                return DaneResult(True, f"the chain is anchored by TLSA {_short(record)}", record)
            reasons.append(reason)
    count = len(policy.records)
    text = f"the certificate chain matches none of the {count} TLSA records at {policy.tlsa_name}"
    if len(chain) and certs is None:
        text += " (a certificate of the chain cannot be parsed)"
    elif reasons:
        text += f" ({reasons[0]})"
    return DaneResult(False, text)


def _short(record: TlsaRecord) -> str:
    return f"{record.usage} {record.selector} {record.mtype}"


# ------------------------------------------------------------------ matching a record


def _matches(der: bytes, record: TlsaRecord) -> bool:
    ours = record_for(der, record.usage, record.selector, record.mtype)
    return ours is not None and ours.data == record.data


def _der_item(data: bytes, at: int) -> tuple[int, int, int] | None:
    """(tag, start of contents, end) of the DER item at `at`, or None if malformed."""
    if at + 2 > len(data):
        return None
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(data):
            return None
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    end = at + length
    return (tag, at, end) if end <= len(data) else None


def _spki(der: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo of a DER certificate, exactly as encoded in it."""
    cert = _der_item(der, 0)
    tbs = _der_item(der, cert[1]) if cert is not None and cert[0] == 0x30 else None
    if tbs is None or tbs[0] != 0x30:
        return None
    at, end = tbs[1], tbs[2]
    item = _der_item(der, at)
    if item is not None and item[0] == 0xA0:  # [0] version
        at = item[2]
    # serial, signature algorithm, issuer, validity, subject: then the key
    for _ in range(5):
        item = _der_item(der, at)
        if item is None or item[2] > end:
            return None
        at = item[2]
    item = _der_item(der, at)
    if item is None or item[0] != 0x30 or item[2] > end:
        return None
    return der[at : item[2]]


# ------------------------------------------------------------------ DANE-TA chains

_PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def _parse_all(chain: Sequence[bytes]) -> list[x509.Certificate] | None:
    try:
        return [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return None


def _anchors(
    record: TlsaRecord, chain: Sequence[bytes], certs: Sequence[x509.Certificate]
) -> list[tuple[int, x509.Certificate | _PublicKey]]:
    """Where `record` anchors the chain: (how many certificates lie below, the anchor)."""
    found: list[tuple[int, x509.Certificate | _PublicKey]] = [
        (index, certs[index]) for index, der in enumerate(chain) if _matches(der, record)
    ]
    if record.selector == Selector.SPKI and record.mtype == Matching.FULL:
        key = _load_key(record.data)
        if key is not None:
            found.append((len(certs), key))  # a bare key that signed the top of the chain
    return found


def _load_key(spki: bytes) -> _PublicKey | None:
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, _PublicKey) else None


def _chain_fault(
    below: Sequence[x509.Certificate],
    anchor: x509.Certificate | _PublicKey,
    names: Sequence[str],
    now: datetime,
) -> str | None:
    """Why the certificates `below` the anchor (leaf first) do not chain to it, or None."""
    issuer = anchor
    for depth in range(len(below) - 1, -1, -1):
        cert = below[depth]
        if isinstance(issuer, x509.Certificate):
            if cert.issuer != issuer.subject:
                return f"certificate {depth} was not issued by the one above it"
            key: object = issuer.public_key()
        else:
            key = issuer
        if not _signed_by(cert, key):
            return f"the signature on certificate {depth} does not verify"
        if depth > 0 and not _is_ca(cert):
            return f"certificate {depth} is not a CA certificate"
        outside = _outside_dates(cert, now)
        if outside:
            return f"certificate {depth} ({_subject(cert)}) {outside}"
        issuer = cert
    leaf = below[0] if below else anchor
    if not isinstance(leaf, x509.Certificate):
        return "the trust anchor is a bare key, with no certificate below it"
    outside = "" if below else _outside_dates(leaf, now)  # the record names the leaf itself
    if outside:
        return f"certificate 0 ({_subject(leaf)}) {outside}"
    if not any(name_matches(name, _leaf_names(leaf)) for name in names):
        return f"the certificate names none of {', '.join(names)}"
    return None


def _outside_dates(cert: x509.Certificate, now: datetime) -> str:
    """Why `cert` is not valid at `now` ("" when it is)."""
    if now < cert.not_valid_before_utc:
        return f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    return ""


def _subject(cert: x509.Certificate) -> str:
    """The certificate's common name, else its whole subject, for messages."""
    try:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(common[0].value) if common else cert.subject.rfc4514_string()
    except ValueError:
        return "unreadable subject"


def _signed_by(cert: x509.Certificate, key: object) -> bool:
    signature, tbs = cert.signature, cert.tbs_certificate_bytes
    try:
        params = cert.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey):
            digest = cert.signature_hash_algorithm
            if digest is None or not isinstance(params, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(signature, tbs, params, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, tbs, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, tbs)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def _leaf_names(cert: x509.Certificate) -> list[str]:
    """The DNS names of the leaf: its subject alternative names, else its common name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except (x509.ExtensionNotFound, ValueError):
        dns_names = []
    if dns_names:
        return dns_names
    try:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return []
    return [str(attr.value) for attr in common]


def name_matches(reference: str, presented: Iterable[str]) -> bool:
    """Whether `reference` is one of the presented names; "*.x" matches one label before x."""
    wanted = reference.rstrip(".").lower()
    for name in presented:
        name = name.rstrip(".").lower()
        if name == wanted:
            return True
        if name.startswith("*.") and "." in wanted:
            label, rest = wanted.split(".", 1)
            if label and rest == name[2:] and "*" not in rest:
                return True
    return False
