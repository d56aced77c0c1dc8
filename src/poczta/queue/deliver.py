"""One delivery attempt of one message to one destination domain (or through a smarthost).

`Deliverer.deliver` finds the hosts (the MX plan of `poczta.queue.mx`, its DNS answers
kept by `MxPlans` between messages to a domain, or the smarthost's addresses), takes a
cached connection to the host or opens one, and sends the message with every
recipient of the domain in one transaction. The recipients a reply decided
(2xx delivered, 5xx failed) are handed to `record` as soon as the transaction ends and
before the connection is used for anything else, so a recipient counts as delivered
only once the remote 250 is durably recorded. A host that cannot be used (no
connection, a 4xx greeting, a lost connection, a 421, TLS failure) passes the
recipients still undecided to the next address, as RFC 5321 5.1 asks; a temporary
reply to RCPT or to the data does not (the next attempt is the queue's retry).

A 452 to RCPT says the server takes no more recipients in this transaction (RFC 5321
4.5.3.1.10), so the recipients it refused that way go at once in a new transaction on
the same connection (MAIL FROM again, no RSET after a finished one), as Postfix does,
for as long as each transaction decides at least one recipient; a server that takes
none leaves them pending for the queue's retry. Other 4xx replies to RCPT, 452 to MAIL
or DATA among them, wait for the retry as before: they say nothing about the count.

With opportunistic TLS a failed handshake is tried once more in plaintext on the same
host, as Postfix does at security level "may". To a smarthost TLS is required and its
certificate verified. An MX host with secure TLSA records (DANE, `poczta.queue.dane_hosts`)
requires STARTTLS and a certificate chain matching them, never plaintext. A cached
connection that turns out dead is replaced once.

Each host carries its `TlsRequirement`. For a domain's MX hosts (not a smarthost) it
comes from the domain's MTA-STS policy (`poczta.queue.mta_sts_cache`, RFC 8461 5): in
enforce mode an MX host the policy does not list is skipped (none left: a temporary
4.7.0 failure), and a listed one needs STARTTLS with a certificate valid for its name
(the `mta_sts` context), or the host fails and nothing falls back to plaintext. In
testing mode the same checks are made, each failure logged (`mta_sts.testing`) and the
host used as without a policy.

One `queue.attempt` log line per host tried: id, domain, host, recipients, result, TLS
and duration.
"""

from __future__ import annotations

import ipaddress
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from poczta.dns import DnsError, Resolver
from poczta.logs import log
from poczta.queue.connection import (
    OPPORTUNISTIC,
    CertificateCheck,
    ConnectionCache,
    ConnectionKey,
    OutboundConnection,
    Timeouts,
    TlsRequirement,
)
from poczta.queue.dane import DanePolicy
from poczta.queue.dane_hosts import dane_hosts
from poczta.queue.mta_sts import StsDecision, StsMode, StsPolicy, decide
from poczta.queue.mta_sts_cache import MtaStsPolicies
from poczta.queue.mta_sts_fetch import policy_context
from poczta.queue.mx import MxFailure, MxPlans
from poczta.queue.routes import Route
from poczta.smtp.client_events import (
    DeliveryStatus,
    HostFailed,
    OutboundMessage,
    Outcome,
    TlsPolicy,
    TransactionResult,
)
from poczta.store.base import DELIVERED, FAILED, PENDING, QueueId, RecipientAttempt

__all__ = ["Deliverer", "DeliverySettings", "DomainJob", "Record"]

Record = Callable[[Sequence[RecipientAttempt]], Awaitable[None]]
_STATUS = {
    DeliveryStatus.DELIVERED: DELIVERED,
    DeliveryStatus.PERMANENT: FAILED,
    DeliveryStatus.TEMPORARY: PENDING,
}


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    helo: str
    port: int = 25
    timeouts: Timeouts = field(default_factory=Timeouts)
    local_addresses: tuple[str, ...] = ()
    loopback_is_local: bool = True


@dataclass(frozen=True, slots=True)
class DomainJob:
    """The recipients of one queue entry at one domain, as one message."""

    queue_id: QueueId
    domain: str
    message: OutboundMessage
    route: Route | None = None  # a smarthost, or None for the domain's MX hosts


@dataclass(frozen=True, slots=True)
class _Host:
    name: str
    address: str
    port: int
    implicit_tls: bool = False
    tls: TlsRequirement = OPPORTUNISTIC
    route: Route | None = None
    dane: DanePolicy | None = None  # TLSA records the certificate chain must match


_STS_TLS = {
    StsDecision.OPPORTUNISTIC: OPPORTUNISTIC,
    StsDecision.TEST_UNLISTED: OPPORTUNISTIC,
    StsDecision.VERIFIED: TlsRequirement(TlsPolicy.REQUIRED, CertificateCheck.MTA_STS),
    StsDecision.TEST_VERIFIED: TlsRequirement(
        TlsPolicy.OPPORTUNISTIC, CertificateCheck.MTA_STS, testing=True
    ),
}


def attempt_of(
    address: str, outcome: Outcome, host: str | None, tls: str | None
) -> RecipientAttempt:
    reply = outcome.reply
    return RecipientAttempt(
        address=address,
        status=_STATUS[outcome.status],
        text=outcome.text,
        reply_code=reply.code if reply is not None else None,
        reply_enhanced=outcome.enhanced,
        remote_mta=host,
        tls=tls,
    )


class Deliverer:
    """Delivery attempts sharing one resolver, one connection cache and the TLS contexts."""

    def __init__(
        self,
        resolver: Resolver,
        settings: DeliverySettings,
        cache: ConnectionCache,
        *,
        opportunistic: ssl.SSLContext,
        verified: ssl.SSLContext | None = None,
        mta_sts: MtaStsPolicies | None = None,
        mta_sts_tls: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.resolver = resolver
        self.mx_plans = MxPlans(resolver)
        self.settings = settings
        self.cache = cache
        self.mta_sts = mta_sts
        self.rng = rng or random.Random()
        self.contexts = {
            CertificateCheck.NONE: opportunistic,
            CertificateCheck.SMARTHOST: verified or ssl.create_default_context(),
            CertificateCheck.MTA_STS: mta_sts_tls or policy_context(),
        }

    async def deliver(self, job: DomainJob, record: Record) -> None:
        """Try the hosts of `job` in turn; every recipient's result goes to `record`."""
        hosts = await self._hosts(job)
        if isinstance(hosts, MxFailure):
            status = FAILED if hosts.permanent else PENDING
            text = f"{hosts.enhanced} {hosts.text}"
            results = [
                RecipientAttempt(r.address, status, text, None, hosts.enhanced)
                for r in job.message.recipients
            ]
            log("queue.attempt", id=job.queue_id, domain=job.domain, host="", result=text)
            await record(results)
            return
        remaining = list(job.message.recipients)
        undecided: dict[str, RecipientAttempt] = {}
        queue = list(hosts)
        while queue and remaining:
            host = queue.pop(0)
            message = replace(job.message, recipients=tuple(remaining))
            done, failed, tls = await self._try(job, host, message, record)
            decided = {r.address for r in done if r.status != PENDING}
            remaining = [r for r in remaining if r.address not in decided]
            undecided.update({r.address: r for r in done if r.status == PENDING})
            if failed is None:
                if host.tls.testing and not tls:
                    _log_sts_testing(job, host, "STARTTLS not offered")
                break
            again = _once_more(job, host, failed, tls)
            if again is not None:
                queue.insert(0, again)
        if remaining:
            await record([undecided[r.address] for r in remaining if r.address in undecided])

    async def _try(
        self, job: DomainJob, host: _Host, message: OutboundMessage, record: Record
    ) -> tuple[list[RecipientAttempt], Outcome | None, bool]:
        """One host: (results, the host failure if any, whether TLS was attempted)."""
        started = time.monotonic()
        for _ in range(2):  # a dead cached connection is replaced once
            conn, error = await self._connection(host)
            if conn is None:
                assert error is not None
                results = [
                    RecipientAttempt(r.address, PENDING, error, None, "4.4.1", host.name)
                    for r in message.recipients
                ]
                self._log(job, host, message, error, "none", started)
                return results, Outcome(DeliveryStatus.TEMPORARY, "4.4.1", error), False
            results, failure, recorded = await self._transactions(conn, host, message, record)
            if conn.reused and failure is not None and not recorded:
                continue
            if _tls_failure(failure) and host.tls.policy is TlsPolicy.REQUIRED:
                results = [_required_by(r, host, job) for r in results]
            tried_tls = conn.tls_outcome != "none" or (
                failure is not None and failure.enhanced == "4.7.5"
            )
            summary = failure.text if failure is not None else _summary(results)
            self._log(job, host, message, summary, conn.tls_outcome, started)
            if failure is None:
                self.cache.put(conn)
            return results, failure, tried_tls
        raise AssertionError("unreachable")

    async def _transactions(
        self, conn: OutboundConnection, host: _Host, message: OutboundMessage, record: Record
    ) -> tuple[list[RecipientAttempt], Outcome | None, bool]:
        """The message over `conn`, then again for the recipients refused with 452 (too
        many recipients) while each transaction decides someone and the connection
        holds: (each recipient's last result, the host failure if any, whether any
        result was recorded). Each transaction's decided recipients are recorded before
        the next one starts."""
        results: dict[str, RecipientAttempt] = {}
        recorded = False
        rset = True
        while True:
            events = await conn.send(message, rset=rset)
            tx = next((e for e in events if isinstance(e, TransactionResult)), None)
            failure = next((e.outcome for e in events if isinstance(e, HostFailed)), None)
            done = tx.results if tx is not None else ()
            batch = [attempt_of(r.address, r.outcome, host.name, conn.tls_outcome) for r in done]
            results.update((r.address, r) for r in batch)
            final = [r for r in batch if r.status != PENDING]
            if final:
                await record(final)  # durable before the connection carries anything else
                recorded = True
            left = {r.address for r in done if r.outcome.too_many_recipients}
            if failure is not None or not left or not final:
                return list(results.values()), failure, recorded
            kept = tuple(r for r in message.recipients if r.address in left)
            message = replace(message, recipients=kept)
            rset = False  # the end of the data reset the transaction

    async def _connection(self, host: _Host) -> tuple[OutboundConnection | None, str | None]:
        route = host.route
        check = host.tls.check
        key = ConnectionKey(
            host.address,
            host.port,
            host.implicit_tls,
            host.tls.policy,
            route.credentials.username if route and route.credentials else None,
            check,
            host.name if check is not CertificateCheck.NONE else None,
            host.dane,
        )
        cached = self.cache.take(key)
        if cached is not None:
            return cached, None
        try:
            conn = await OutboundConnection.open(
                key,
                host.name,
                helo=self.settings.helo,
                timeouts=self.settings.timeouts,
                tls=self.contexts[check],
                credentials=route.credentials if route is not None else None,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = (
                "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            )
            return None, f"connect to {host.name}[{host.address}]:{host.port}: {reason}"
        return conn, None

    async def _hosts(self, job: DomainJob) -> list[_Host] | MxFailure:
        route = job.route
        if route is not None:
            return await self._relay_hosts(route)
        plan = await self.mx_plans.plan(
            job.domain,
            rng=self.rng,
            local_addresses=self.settings.local_addresses,
            loopback_is_local=self.settings.loopback_is_local,
        )
        if isinstance(plan, MxFailure):
            return plan
        port = self.settings.port
        dane = await dane_hosts(self.resolver, plan, port)
        if isinstance(dane, MxFailure):
            return dane
        hosts = [
            _Host(
                h.name,
                a,
                port,
                tls=TlsRequirement(dane.tls_policy(h.name)),
                dane=dane.policy(h.name),
            )
            for h in dane.hosts
            for a in h.addresses
        ]
        if self.mta_sts is None or any(h.dane is not None for h in hosts):
            return hosts  # DANE takes precedence over MTA-STS (RFC 8461 2)
        policy = await self.mta_sts.policy(job.domain)
        return _under_policy(job, hosts, policy) if policy is not None else hosts

    async def _relay_hosts(self, route: Route) -> list[_Host] | MxFailure:
        try:
            addresses = [str(ipaddress.ip_address(route.host))]
        except ValueError:
            addresses = []
            for lookup in (self.resolver.a, self.resolver.aaaa):
                try:
                    addresses += await lookup(route.host)
                except DnsError:
                    continue
        if not addresses:
            text = f"smarthost {route.host} has no address (or DNS failed)"
            return MxFailure(route.host, False, "4.4.3", text)
        tls = TlsRequirement(TlsPolicy.REQUIRED, CertificateCheck.SMARTHOST)
        return [_Host(route.host, a, route.port, route.implicit_tls, tls, route) for a in addresses]

    def _log(
        self,
        job: DomainJob,
        host: _Host,
        message: OutboundMessage,
        result: str,
        tls: str,
        started: float,
    ) -> None:
        log(
            "queue.attempt",
            id=job.queue_id,
            domain=job.domain,
            host=f"{host.name}[{host.address}]:{host.port}",
            recipients=len(message.recipients),
            result=result,
            tls=tls,
            duration=f"{time.monotonic() - started:.3f}",
        )


def _summary(results: Sequence[RecipientAttempt]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    last = next((r.text for r in results if r.status != DELIVERED), None)
    return f"{text}: {last}" if last else text


def _under_policy(job: DomainJob, hosts: list[_Host], policy: StsPolicy) -> list[_Host] | MxFailure:
    """The MX hosts with what the domain's MTA-STS policy asks of each (RFC 8461 5)."""
    kept = []
    unlisted: dict[str, None] = {}  # names, in order, once
    for host in hosts:
        decision = decide(policy, host.name)
        if decision in (StsDecision.SKIP, StsDecision.TEST_UNLISTED):
            unlisted[host.name] = None
        if decision is not StsDecision.SKIP:
            kept.append(replace(host, tls=_STS_TLS[decision]))
    patterns = ", ".join(policy.mx)
    if unlisted and kept and policy.mode is StsMode.ENFORCE:
        log("mta_sts.skipped", domain=job.domain, hosts=",".join(unlisted), mx=patterns)
    elif unlisted and kept:
        text = f"MX {', '.join(unlisted)} not listed by the policy ({patterns})"
        _log_sts_testing(job, None, text)
    if not kept:
        text = (
            f"MTA-STS policy of {job.domain} (enforce) lists none of its MX hosts"
            f" ({', '.join(unlisted)}); it allows {patterns}"
        )
        log("mta_sts.skipped", domain=job.domain, hosts=",".join(unlisted), mx=patterns)
        return MxFailure(job.domain, False, "4.7.0", text)
    return kept


def _once_more(job: DomainJob, host: _Host, failed: Outcome, tls: bool) -> _Host | None:
    """The same host again after a TLS failure, where its requirement allows that:
    without the MTA-STS check in testing mode (the failure logged), and in plaintext
    after a failed opportunistic handshake."""
    if host.tls.testing and _tls_failure(failed):
        _log_sts_testing(job, host, failed.text)
        return replace(host, tls=OPPORTUNISTIC)
    if failed.enhanced == "4.7.5" and host.tls == OPPORTUNISTIC and tls:
        return replace(host, tls=TlsRequirement(TlsPolicy.NONE))
    return None


def _tls_failure(failed: Outcome | None) -> bool:
    """Whether TLS failed the host: not offered or refused (4.7.4), or the handshake
    (4.7.5, a certificate that failed its check among the causes)."""
    return failed is not None and failed.enhanced in ("4.7.4", "4.7.5")


def _required_by(result: RecipientAttempt, host: _Host, job: DomainJob) -> RecipientAttempt:
    """A recipient held back because TLS failed, with the policy that required it named."""
    if result.status != PENDING or host.tls.check is not CertificateCheck.MTA_STS:
        return result
    return replace(result, text=f"MTA-STS policy of {job.domain} (enforce): {result.text}")


def _log_sts_testing(job: DomainJob, host: _Host | None, failure: str) -> None:
    """What an enforced policy would have refused (the mail goes on as without one)."""
    where = f"{host.name}[{host.address}]:{host.port}" if host is not None else ""
    log("mta_sts.testing", domain=job.domain, host=where, failure=failure)
