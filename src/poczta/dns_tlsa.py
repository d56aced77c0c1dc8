"""DANE for mail to this server: the TLSA record to publish for its certificate, and a check
of the records DNS holds at `_25._tcp.<host>`.

The record suggested is `3 1 1`: DANE-EE, the certificate's SubjectPublicKeyInfo,
SHA-256 (RFC 7671 5.1). It pins the key, not the certificate, so a renewal that keeps
the key keeps the record; one that changes the key (as most ACME clients do unless
told to reuse it) needs the new key's record published beside the old one, a TTL or
more ahead, before the new certificate is served (RFC 7671 8.1).

`judge_tlsa` looks the records up as the queue's outbound resolver sees them (the AD
bit of a trusted validating resolver, `poczta.dns.DnssecResolver`) and compares them
with the certificate chain poczta serves on port 25 by the rules senders apply
(`poczta.queue.dane.verify_chain`, so DANE-TA records of the issuing CA count too).
Senders always ask at port 25, whatever port the smtp listener binds behind a NAT.
TLSA records only help when the zone is DNSSEC-signed: senders ignore insecure ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poczta.dns_answers import DnssecBogus, DnssecResolver, DnsTempError, Resolver, TlsaRecord
from poczta.queue.dane import dane_policy, record_for, tlsa_name, verify_chain

__all__ = ["SMTP_PORT", "TlsaVerdict", "judge_tlsa", "load_chain", "suggested_record"]

SMTP_PORT = 25


def load_chain(path: Path) -> tuple[bytes, ...]:
    """The PEM certificate chain at `path` as DER, leaf first (OSError, ValueError)."""
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)


def suggested_record(chain: Sequence[bytes]) -> TlsaRecord | None:
    """`3 1 1` of the leaf: the record to publish for this certificate."""
    return record_for(chain[0], 3, 1, 1) if chain else None


def _ours(chain: Sequence[bytes]) -> str:
    """The leaf's 3 1 1 and 3 0 1 records, to compare with what DNS holds."""
    found = [record_for(chain[0], 3, selector, 1) for selector in (1, 0)] if chain else []
    return ", ".join(r.to_text() for r in found if r is not None)


@dataclass(frozen=True)
class TlsaVerdict:
    """What DNS holds at `name`: a state as `poczta.dns_records.Finding` has them (or
    ``optional`` when nothing is published), the records found, and why."""

    name: str
    state: str
    found: tuple[str, ...] = ()
    detail: str = ""


async def judge_tlsa(
    host: str, domain: str, chain: Sequence[bytes], resolver: Resolver, now: datetime | None = None
) -> TlsaVerdict:
    """Judge the TLSA records of `host` (an MX host of `domain`) against `chain`."""
    name = tlsa_name(host, SMTP_PORT)
    if not isinstance(resolver, DnssecResolver):
        return TlsaVerdict(name, "error", detail="this resolver cannot look up TLSA records")
    try:
        answer = await resolver.tlsa(name)
    except DnssecBogus as exc:
        why = f"{exc}: senders that check DANE defer all mail to {host}"
        return TlsaVerdict(name, "wrong", detail=why)
    except DnsTempError as exc:
        return TlsaVerdict(name, "error", detail=f"lookup failed: {exc}")
    found = tuple(r.to_text() for r in answer.records)
    if not answer.records:
        return TlsaVerdict(name, "optional", detail=_publish_hint(name, chain))
    if not chain:
        return TlsaVerdict(name, "error", found, "the certificate cannot be read to compare")
    state, detail = _compare(name, host, domain, answer.records, chain, now)
    if not resolver.validating:
        detail += (
            "; whether they are DNSSEC-secure cannot be told: the resolvers of [dns] are not"
            " trusted to validate (see [dns] dnssec)"
        )
    elif not answer.secure:
        state = "wrong"
        detail = (
            "not DNSSEC-secure (no AD bit from the validating resolver), so senders ignore"
            f" them: TLSA only helps once the zone is DNSSEC-signed; {detail}"
        )
    return TlsaVerdict(name, state, found, detail)


def _compare(
    name: str,
    host: str,
    domain: str,
    records: Sequence[TlsaRecord],
    chain: Sequence[bytes],
    now: datetime | None,
) -> tuple[str, str]:
    """(state, detail) of the records against the certificate chain served."""
    policy = dane_policy(name, records, (host, domain))
    if not policy.authenticated:
        return "wrong", (
            "no usable record (SMTP uses DANE-TA 2 and DANE-EE 3 only): senders insist on"
            " TLS but authenticate nothing"
        )
    result = verify_chain(policy, chain, now or datetime.now(UTC))
    if not result.ok:
        return "wrong", (
            f"{result.text}; this server's certificate is {_ours(chain)}: senders that check"
            f" DANE defer all mail to {host}"
        )
    detail = f"the certificate served on port {SMTP_PORT} matches TLSA {_params(result.matched)}"
    if policy.unusable:
        detail += f"; {policy.unusable} unusable record(s) ignored"
    return "ok", detail


def _params(record: TlsaRecord | None) -> str:
    return "" if record is None else f"{record.usage} {record.selector} {record.mtype}"


def _publish_hint(name: str, chain: Sequence[bytes]) -> str:
    record = suggested_record(chain)
    hint = f"; publish {name}. IN TLSA {record.to_text()}" if record is not None else ""
    return f"none published: TLSA only helps once the zone is DNSSEC-signed{hint}"
