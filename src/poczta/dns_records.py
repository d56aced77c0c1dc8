"""The DNS records a mail domain publishes to send and receive well, and a check of what DNS holds.

`DomainSetup.records()` lists them: MX (the server's hostname), SPF (``v=spf1 mx
-all``: the MX hosts may send, nobody else), one DKIM key record per key that is not
retired, DMARC (``p=quarantine`` with aggregate reports to a local address), MTA-STS
(the ``_mta-sts`` TXT, the ``mta-sts`` host that serves the policy, and the policy
text, in testing mode to start), TLS-RPT, a DANE ``3 1 1`` TLSA record of the
certificate served on port 25 (`poczta.dns_tlsa`; useful only in a DNSSEC-signed
zone), and the A/AAAA records of the hostname. `zone_text` prints them in zone-file
form.

`check(setup, resolver)` looks each one up through a `Resolver` and says, record by
record, whether it is right (``ok``), absent (``missing``), there but not right
(``wrong``, with what was found), or could not be looked up (``error``). A record is
judged by what it does, not by its spelling: SPF passes when the hostname's addresses
pass `check_host`, a DKIM record when it holds the same public key, DMARC, MTA-STS and
TLS-RPT when they parse with a usable policy, TLSA records when they are DNSSEC-secure
and match the certificate (none at all is ``optional``, which counts as ok). The
hostname's addresses also get a PTR check, since receivers often refuse mail from an
address whose reverse name is not the sender's hostname.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from poczta.dns import DnsTempError, NXDomain, Resolver, normalize_name
from poczta.dns_tlsa import SMTP_PORT, judge_tlsa, suggested_record
from poczta.mailauth.dkim import KeyRecordError, parse_key_record
from poczta.mailauth.dmarc import DmarcRecordError, parse_dmarc_record
from poczta.mailauth.spf import SpfResultCode, check_host

__all__ = ["DkimPublication", "DomainSetup", "Finding", "Record", "check", "zone_text"]

TTL = 3600
MTA_STS_MAX_AGE = 86_400  # a day while testing; raise it once the policy is enforced
_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")


@dataclass(frozen=True)
class DkimPublication:
    """A DKIM key to publish: its selector, algorithm and TXT record value."""

    selector: str
    algorithm: str
    record: str


@dataclass(frozen=True)
class Record:
    """One record to publish; `value` is the RDATA (the text itself for TXT)."""

    purpose: str
    name: str
    rtype: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class Finding:
    """What DNS holds for one record: ok, missing, wrong or error (or optional: none, and
    none is needed), and what was found."""

    purpose: str
    name: str
    rtype: str
    state: str
    found: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "optional")


@dataclass(frozen=True)
class DomainSetup:
    """What poczta knows of a domain: its name, the server's hostname, its DKIM keys, the
    server's public addresses when the config names them, and the certificate chain it
    serves (DER, leaf first; empty, with `certificate_problem` saying why, when it
    cannot be read)."""

    domain: str
    hostname: str
    dkim: tuple[DkimPublication, ...] = ()
    addresses: tuple[str, ...] = ()
    mta_sts_mode: str = "testing"
    certificate: tuple[bytes, ...] = ()
    certificate_problem: str = ""

    @property
    def mx_hosts(self) -> tuple[str, ...]:
        """The MX hosts the records name: this server's own name."""
        return (self.hostname,)

    @property
    def dmarc_reports(self) -> str:
        return f"dmarc-reports@{self.domain}"

    @property
    def tls_reports(self) -> str:
        return f"tls-reports@{self.domain}"

    @property
    def report_addresses(self) -> tuple[str, ...]:
        return (self.dmarc_reports, self.tls_reports)

    def mta_sts_policy(self) -> str:
        """The policy file to serve at https://mta-sts.DOMAIN/.well-known/mta-sts.txt."""
        return (
            f"version: STSv1\nmode: {self.mta_sts_mode}\nmx: {self.hostname}\n"
            f"max_age: {MTA_STS_MAX_AGE}\n"
        )

    def mta_sts_id(self) -> str:
        """The policy's id: it changes whenever the policy text does (RFC 8461 3.1)."""
        return hashlib.sha256(self.mta_sts_policy().encode()).hexdigest()[:20]

    def records(self) -> list[Record]:
        d, host = self.domain, self.hostname
        records = [
            Record("MX", d, "MX", f"10 {host}.", f"mail for {d} is delivered to {host}"),
            Record(
                "SPF",
                d,
                "TXT",
                "v=spf1 mx -all",
                f"only the MX hosts ({host}) may send mail from {d}; add ip4:/ip6: terms "
                "for any other address mail leaves from",
            ),
        ]
        for key in self.dkim:
            note = f"the {key.algorithm} key that signs mail from {d} (selector {key.selector})"
            name = f"{key.selector}._domainkey.{d}"
            records.append(Record(f"DKIM {key.selector}", name, "TXT", key.record, note))
        records += [
            Record(
                "DMARC",
                f"_dmarc.{d}",
                "TXT",
                f"v=DMARC1; p=quarantine; rua=mailto:{self.dmarc_reports}",
                f"receivers file mail failing SPF and DKIM as spam and send daily reports "
                f"to {self.dmarc_reports}, which must exist (poczta alias add "
                f"{self.dmarc_reports} YOUR-ADDRESS)",
            ),
            Record(
                "MTA-STS",
                f"_mta-sts.{d}",
                "TXT",
                f"v=STSv1; id={self.mta_sts_id()}",
                "senders that know MTA-STS deliver over verified TLS only (once the policy "
                "says mode: enforce); the policy is below",
            ),
            Record(
                "MTA-STS host",
                f"mta-sts.{d}",
                "CNAME",
                f"{host}.",
                f"serves the policy over HTTPS, with a certificate valid for mta-sts.{d}",
            ),
            Record(
                "TLS-RPT",
                f"_smtp._tls.{d}",
                "TXT",
                f"v=TLSRPTv1; rua=mailto:{self.tls_reports}",
                f"senders report TLS failures to {self.tls_reports}, which must exist",
            ),
        ]
        return records + self._tlsa_records() + self._host_records()

    def _tlsa_records(self) -> list[Record]:
        record = suggested_record(self.certificate)
        if record is None:
            return []
        note = (
            "senders that check DANE authenticate this server's key by it; it only helps"
            " once the zone of the MX host is DNSSEC-signed. Before a new certificate with a"
            " new key is served, publish the new key's record beside this one (and keep"
            " both a TTL or more), then remove the old one"
        )
        return [
            Record("DANE", f"_{SMTP_PORT}._tcp.{host}", "TLSA", record.to_text(), note)
            for host in self.mx_hosts
        ]

    def _host_records(self) -> list[Record]:
        note = f"{self.hostname} must point at this server, and each address's PTR back at it"
        records = []
        for address in self.addresses:
            rtype = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
            records.append(Record(f"host {rtype}", self.hostname, rtype, address, note))
        return records


def _quoted(text: str) -> str:
    """A TXT value as zone-file character-strings of at most 255 octets each."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def zone_text(setup: DomainSetup) -> str:
    """Every record in zone-file form, each after a comment saying what it is for."""
    lines = [f"; DNS records for {setup.domain}, to publish in its zone."]
    for record in setup.records():
        value = _quoted(record.value) if record.rtype == "TXT" else record.value
        lines.append("")
        lines += textwrap.wrap(
            f"{record.purpose}: {record.note}",
            width=78,
            initial_indent="; ",
            subsequent_indent=";   ",
            break_long_words=False,
        )
        lines.append(f"{record.name}. {TTL} IN {record.rtype} {value}")
    if not setup.addresses:
        lines += [
            "",
            f"; {setup.hostname} needs A (and AAAA) records with this server's public",
            "; addresses, and each address a PTR record naming it:",
            f"; {setup.hostname}. {TTL} IN A <public IPv4 address>",
            f"; {setup.hostname}. {TTL} IN AAAA <public IPv6 address>",
        ]
    if not setup.dkim:
        lines += ["", f"; no DKIM key for {setup.domain}: poczta dkim generate {setup.domain}"]
    if not setup.certificate:
        lines += ["", f"; no TLSA record: {setup.certificate_problem or 'no certificate'}"]
    policy = setup.mta_sts_policy().splitlines()
    lines += ["", f"; serve at https://mta-sts.{setup.domain}/.well-known/mta-sts.txt:"]
    lines += [f";   {line}" for line in policy]
    return "\n".join(lines) + "\n"


# --- the check -------------------------------------------------------------------


async def _txt(resolver: Resolver, name: str, prefix: str) -> list[str]:
    """The TXT records at `name` that start with `prefix` (case-insensitive)."""
    records = [r.decode("utf-8", "replace") for r in await resolver.txt(name)]
    return [r for r in records if r.lower().startswith(prefix.lower())]


def _finding(record: Record, state: str, found: Sequence[str] = (), detail: str = "") -> Finding:
    return Finding(record.purpose, record.name, record.rtype, state, tuple(found), detail)


async def _one_txt(record: Record, resolver: Resolver, prefix: str) -> str | Finding:
    """The one TXT record at the record's name that starts with `prefix`, or the finding
    when there is none or more than one (which receivers treat as none)."""
    found = await _txt(resolver, record.name, prefix)
    if not found:
        return _finding(record, "missing")
    if len(found) > 1:
        return _finding(record, "wrong", found, f"more than one {record.purpose} record")
    return found[0]


Check = Callable[[Record, Resolver], Awaitable[Finding]]


async def _check_mx(setup: DomainSetup, record: Record, resolver: Resolver) -> Finding:
    answers = await resolver.mx(record.name)
    found = [f"{mx.preference} {mx.exchange or '.'}" for mx in answers]
    if not answers:
        return _finding(record, "missing")
    if any(normalize_name(mx.exchange) == setup.hostname for mx in answers):
        return _finding(record, "ok", found)
    return _finding(record, "wrong", found, f"no MX record names {setup.hostname}")


async def _host_addresses(setup: DomainSetup, resolver: Resolver) -> list[str]:
    """The hostname's A and AAAA records; DnsTempError only when neither could be read."""
    found: list[str] = []
    failure: DnsTempError | None = None
    for lookup in (resolver.a, resolver.aaaa):
        try:
            found += await lookup(setup.hostname)
        except NXDomain:
            return []
        except DnsTempError as exc:
            failure = exc
    if failure is not None and not found:
        raise failure
    return found


async def _check_spf(setup: DomainSetup, record: Record, resolver: Resolver) -> Finding:
    text = await _one_txt(record, resolver, "v=spf1")
    if isinstance(text, Finding):
        return text
    found = [text]
    addresses = await _host_addresses(setup, resolver)
    if not addresses:
        return _finding(record, "error", found, f"cannot test it: {setup.hostname} has no address")
    sender = f"postmaster@{setup.domain}"
    for address in addresses:
        result = await check_host(address, setup.domain, sender, resolver=resolver)
        if result.result is not SpfResultCode.PASS:
            why = f"{address} ({setup.hostname}) gets {result.result.value}"
            if result.problem:
                why += f": {result.problem}"
            return _finding(record, "wrong", found, why)
    return _finding(record, "ok", found, f"passes for {', '.join(addresses)}")


async def _check_dkim(record: Record, resolver: Resolver) -> Finding:
    found = await _txt(resolver, record.name, "")
    if not found:
        return _finding(record, "missing")
    ours = parse_key_record(record.value.encode()).public_key
    for text in found:
        try:
            theirs = parse_key_record(text.encode()).public_key
        except KeyRecordError:
            continue
        if _public_bytes(theirs) == _public_bytes(ours):
            return _finding(record, "ok", [_short(text)])
    return _finding(record, "wrong", [_short(t) for t in found], "not this key")


def _public_bytes(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> bytes:
    der = serialization.Encoding.DER
    return key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _check_dmarc(record: Record, resolver: Resolver) -> Finding:
    text = await _one_txt(record, resolver, "v=DMARC1")
    if isinstance(text, Finding):
        return text
    found = [text]
    try:
        parsed = parse_dmarc_record(text)
    except DmarcRecordError as exc:
        return _finding(record, "wrong", found, str(exc))
    detail = f"p={parsed.policy}" + ("" if parsed.rua else "; no rua=, so no reports")
    return _finding(record, "ok", found, detail)


async def _check_mta_sts(setup: DomainSetup, record: Record, resolver: Resolver) -> Finding:
    text = await _one_txt(record, resolver, "v=STSv1")
    if isinstance(text, Finding):
        return text
    found = [text]
    tags = dict(t.strip().partition("=")[::2] for t in text.split(";") if "=" in t)
    ident = tags.get("id", "")
    if not _STS_ID.match(ident):
        return _finding(record, "wrong", found, "id= is not 1 to 32 letters and digits")
    if ident != setup.mta_sts_id():
        detail = "the id differs from this policy's: change it whenever the policy changes"
        return _finding(record, "ok", found, detail)
    return _finding(record, "ok", found)


async def _check_sts_host(record: Record, resolver: Resolver) -> Finding:
    addresses = [*await _addresses_or_none(resolver.a, record.name)]
    addresses += await _addresses_or_none(resolver.aaaa, record.name)
    if not addresses:
        return _finding(record, "missing", detail="the policy cannot be fetched")
    return _finding(record, "ok", addresses)


async def _addresses_or_none(lookup: Callable[[str], Awaitable[list[str]]], name: str) -> list[str]:
    try:
        return await lookup(name)
    except NXDomain:
        return []


async def _check_tlsrpt(record: Record, resolver: Resolver) -> Finding:
    text = await _one_txt(record, resolver, "v=TLSRPTv1")
    if isinstance(text, Finding):
        return text
    found = [text]
    if "rua=" not in text.replace(" ", ""):
        return _finding(record, "wrong", found, "no rua= to send reports to")
    return _finding(record, "ok", found)


async def _check_host(setup: DomainSetup, resolver: Resolver) -> list[Finding]:
    """The hostname's A/AAAA records (holding the configured addresses) and their PTR."""
    host = setup.hostname
    addresses = await _host_addresses(setup, resolver)
    purpose = "host A/AAAA"
    if not addresses:
        return [Finding(purpose, host, "A", "missing", detail="the server cannot be found")]
    absent = [a for a in setup.addresses if a not in addresses]
    if absent:
        detail = f"does not hold {', '.join(absent)}"
        findings = [Finding(purpose, host, "A", "wrong", tuple(addresses), detail)]
    else:
        findings = [Finding(purpose, host, "A", "ok", tuple(addresses))]
    for address in addresses:
        findings.append(await _check_ptr(host, address, resolver))
    return findings


async def _check_ptr(host: str, address: str, resolver: Resolver) -> Finding:
    try:
        names = [normalize_name(n) for n in await resolver.ptr(address)]
    except NXDomain:
        names = []
    if host in names:
        return Finding("PTR", address, "PTR", "ok", tuple(names))
    state = "wrong" if names else "missing"
    return Finding("PTR", address, "PTR", state, tuple(names), f"should name {host}")


async def check(setup: DomainSetup, resolver: Resolver) -> list[Finding]:
    """Look up every record of `setup` and judge it; never raises for DNS trouble."""
    checks: dict[str, Check] = {
        "MX": lambda r, res: _check_mx(setup, r, res),
        "SPF": lambda r, res: _check_spf(setup, r, res),
        "DMARC": _check_dmarc,
        "MTA-STS": lambda r, res: _check_mta_sts(setup, r, res),
        "MTA-STS host": _check_sts_host,
        "TLS-RPT": _check_tlsrpt,
    }
    findings = []
    if not setup.dkim:
        detail = f"no DKIM key to publish: poczta dkim generate {setup.domain}"
        findings.append(Finding("DKIM", f"_domainkey.{setup.domain}", "TXT", "missing", (), detail))
    for record in setup.records():
        if record.purpose.startswith("host ") or record.rtype == "TLSA":
            continue
        judge = _check_dkim if record.purpose.startswith("DKIM") else checks[record.purpose]
        try:
            findings.append(await judge(record, resolver))
        except NXDomain:
            findings.append(_finding(record, "missing"))
        except DnsTempError as exc:
            findings.append(_finding(record, "error", detail=f"lookup failed: {exc}"))
    try:
        findings += await _check_host(setup, resolver)
    except DnsTempError as exc:
        findings.append(Finding("host A/AAAA", setup.hostname, "A", "error", (), str(exc)))
    return findings + await _check_tlsa(setup, resolver)


async def _check_tlsa(setup: DomainSetup, resolver: Resolver) -> list[Finding]:
    """Each MX host's TLSA records: DNSSEC-secure, and matching the certificate served."""
    findings = []
    for host in setup.mx_hosts:
        verdict = await judge_tlsa(host, setup.domain, setup.certificate, resolver)
        detail = verdict.detail
        if not setup.certificate and setup.certificate_problem:
            detail = f"{detail} ({setup.certificate_problem})"
        findings.append(Finding("DANE", verdict.name, "TLSA", verdict.state, verdict.found, detail))
    return findings
