"""Which MX hosts of a destination DANE applies to: the DNSSEC lookups of RFC 7672 2.2.

`dane_hosts` takes the MX plan of `poczta.queue.mx` and asks the resolver again, now
for the security of the answers (a `DnssecResolver` keeps that beside each cached
answer, so these are normally no new queries):

- nothing applies unless the resolver is trusted to validate and the MX RRset (or,
  without MX records, the secure denial of them) is secure;
- a host counts only when its address records are secure (a numeric MX never does),
  or, for an alias, when its own CNAME record is; then its TLSA RRset at
  `_<port>._tcp.<base>` is looked up, the TLSA base domain being chosen as below;
- secure TLSA records: the host requires STARTTLS and a chain matching them
  (`DanePolicy`; with no usable record, TLS without authentication);
- no records, or an insecure answer: opportunistic TLS, as without DANE;
- a failed TLSA lookup (a bogus answer, a SERVFAIL, a timeout): the host is not
  tried this time; when that leaves no host, the destination is deferred (4.7.5).

CNAMEs (RFC 7672 2.2.2, RFC 7671 7): when the MX host name is an alias and every
CNAME of its chain is secure (so are the address records then: a validating
resolver's AD bit covers the whole answer), the TLSA records are looked for first at
the end of the chain, and when that has no secure ones, at the MX host name. When a
CNAME of the chain is insecure but the host's own is secure, only the MX host name
is used. The reference names a DANE-TA chain's leaf may carry are the MX host name,
the end of a secure chain, and the destination domain (RFC 7672 3.2.2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

from poczta.dns import DnsError, DnssecResolver, DnsTempError, Resolver, normalize_name
from poczta.logs import log
from poczta.queue.dane import DanePolicy, dane_policy, tlsa_name
from poczta.queue.mx import MxFailure, MxHost, MxPlan
from poczta.queue.mx import _is_numeric as _is_address
from poczta.smtp.client_events import TlsPolicy

__all__ = ["DaneHosts", "dane_hosts"]


@dataclass(frozen=True, slots=True)
class DaneHosts:
    """The hosts still to try, and the DANE policy of those that have one."""

    hosts: tuple[MxHost, ...]
    policies: dict[str, DanePolicy] = field(default_factory=dict)

    def policy(self, host: str) -> DanePolicy | None:
        return self.policies.get(host)

    def tls_policy(self, host: str) -> TlsPolicy:
        return TlsPolicy.REQUIRED if host in self.policies else TlsPolicy.OPPORTUNISTIC


_DNSSEC_TYPES: dict[type, bool] = {}


def _dnssec(resolver: Resolver) -> DnssecResolver | None:
    """`resolver` when it is a `DnssecResolver`. Checking a runtime protocol looks at each
    of its members (~70 µs, for every message), so the answer is kept per resolver type."""
    kind = type(resolver)
    known = _DNSSEC_TYPES.get(kind)
    if known is None:
        known = _DNSSEC_TYPES[kind] = isinstance(resolver, DnssecResolver)
    return cast(DnssecResolver, resolver) if known else None


async def dane_hosts(resolver: Resolver, plan: MxPlan, port: int) -> DaneHosts | MxFailure:
    """The DANE view of `plan`; MxFailure when no host is left to try."""
    dnssec = _dnssec(resolver)
    if dnssec is None or not dnssec.validating:
        return DaneHosts(plan.hosts)
    try:
        mx = await dnssec.mx_validated(plan.domain)
    except DnsError:
        return DaneHosts(plan.hosts)  # mx_plan had an answer: it decides, insecure
    if not mx.secure:
        return DaneHosts(plan.hosts)
    found = await asyncio.gather(
        *(_host_policy(dnssec, h.name, plan.domain, port) for h in plan.hosts)
    )
    policies: dict[str, DanePolicy] = {}
    failures: list[str] = []
    for host, result in zip(plan.hosts, found, strict=True):
        if isinstance(result, str):
            failures.append(result)
            log("queue.dane", domain=plan.domain, host=host.name, result=result)
        elif result is not None:
            policies[host.name] = result
    hosts = tuple(h for h, r in zip(plan.hosts, found, strict=True) if not isinstance(r, str))
    if not hosts:
        return MxFailure(plan.domain, False, "4.7.5", failures[0])
    return DaneHosts(hosts, policies)


async def _host_policy(
    resolver: DnssecResolver, host: str, domain: str, port: int
) -> DanePolicy | str | None:
    """The host's policy, None when DANE does not apply, or why its lookup failed."""
    if _is_address(host):
        return None
    bases = await _base_domains(resolver, host)
    reference = (*bases, domain)
    for base in bases:
        name = tlsa_name(base, port)
        try:
            tlsa = await resolver.tlsa(name)
        except DnsTempError as exc:
            return f"TLSA lookup of {name} failed, so {host} cannot be authenticated: {exc}"
        if tlsa.secure and tlsa.records:
            return dane_policy(name, tlsa.records, reference)
    return None


async def _base_domains(resolver: DnssecResolver, host: str) -> tuple[str, ...]:
    """The TLSA base domains of `host` in the order they are tried; none when DANE does
    not apply (RFC 7672 2.2.2)."""
    host = normalize_name(host)
    secure, canonical = await _addresses(resolver, host)
    if canonical is None:
        return ()  # no address records
    if canonical == host:
        return (host,) if secure else ()
    if secure:  # the whole chain is: the expanded name first, then the original
        return (canonical, host)
    try:
        own = await resolver.cname_validated(host)
    except DnsError:
        return ()
    return (host,) if own.secure and own.records else ()


async def _addresses(resolver: DnssecResolver, host: str) -> tuple[bool, str | None]:
    """Whether every address record of `host` that exists is secure, and the name they
    were found at after CNAMEs (None when there is none). A and AAAA answers that end
    their chains at different names count as insecure."""
    secure, found = True, None
    for lookup in (resolver.a_validated, resolver.aaaa_validated):
        try:
            answer = await lookup(host)
        except DnsError:
            continue
        if not answer.records:
            continue
        canonical = answer.canonical or host
        if found is not None and canonical != found:
            secure = False
        found = found or canonical
        secure = secure and answer.secure
    return secure, found
