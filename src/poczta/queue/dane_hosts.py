"""Which MX hosts of a destination DANE applies to: the DNSSEC lookups of RFC 7672 2.2.

`dane_hosts` takes the MX plan of `poczta.queue.mx` and asks the resolver again, now
for the security of the answers (a `DnssecResolver` keeps that beside each cached
answer, so these are normally no new queries):

- nothing applies unless the resolver is trusted to validate and the MX RRset (or,
  without MX records, the secure denial of them) is secure;
- a host counts only when its address records are secure (a numeric MX never does);
  then its TLSA RRset at `_<port>._tcp.<host>` is looked up;
- secure TLSA records: the host requires STARTTLS and a chain matching them
  (`DanePolicy`; with no usable record, TLS without authentication);
- no records, or an insecure answer: opportunistic TLS, as without DANE;
- a failed TLSA lookup (a bogus answer, a SERVFAIL, a timeout): the host is not
  tried this time; when that leaves no host, the destination is deferred (4.7.5).

The reference names a DANE-TA chain's leaf may carry are the host name and the
destination domain (RFC 7672 3.2.2). CNAMEs are not expanded: the TLSA base domain is
the MX host name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

from poczta.dns import DnsError, DnssecResolver, DnsTempError, Resolver
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
    if _is_address(host) or not await _secure_addresses(resolver, host):
        return None
    name = tlsa_name(host, port)
    try:
        tlsa = await resolver.tlsa(name)
    except DnsTempError as exc:
        return f"TLSA lookup of {name} failed, so {host} cannot be authenticated: {exc}"
    if not tlsa.secure or not tlsa.records:
        return None
    return dane_policy(name, tlsa.records, (host, domain))


async def _secure_addresses(resolver: DnssecResolver, host: str) -> bool:
    """Whether every address record of `host` that exists is secure (and one does)."""
    seen = False
    for lookup in (resolver.a_validated, resolver.aaaa_validated):
        try:
            answer = await lookup(host)
        except DnsError:
            continue
        if answer.records and not answer.secure:
            return False
        seen = seen or bool(answer.records)
    return seen
