"""One delivery attempt of one message to one destination domain (or through a smarthost).

`Deliverer.deliver` finds the hosts (the MX plan of `poczta.queue.mx`, or the smarthost's
addresses), takes a cached connection to the host or opens one, and sends the message
with every recipient of the domain in one transaction. The recipients a reply decided
(2xx delivered, 5xx failed) are handed to `record` as soon as the transaction ends and
before the connection is used for anything else, so a recipient counts as delivered
only once the remote 250 is durably recorded. A host that cannot be used (no
connection, a 4xx greeting, a lost connection, a 421, TLS failure) passes the
recipients still undecided to the next address, as RFC 5321 5.1 asks; a temporary
reply to RCPT or to the data does not (the next attempt is the queue's retry).

With opportunistic TLS a failed handshake is tried once more in plaintext on the same
host, as Postfix does at security level "may". To a smarthost TLS is required and its
certificate verified. An MX host with secure TLSA records (DANE, `poczta.queue.dane_hosts`)
requires STARTTLS and a certificate chain matching them, never plaintext. A cached
connection that turns out dead is replaced once.

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
from poczta.queue.connection import ConnectionCache, ConnectionKey, OutboundConnection, Timeouts
from poczta.queue.dane import DanePolicy
from poczta.queue.dane_hosts import dane_hosts
from poczta.queue.mx import MxFailure, mx_plan
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
    policy: TlsPolicy = TlsPolicy.OPPORTUNISTIC
    route: Route | None = None
    dane: DanePolicy | None = None  # TLSA records the certificate chain must match


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
        rng: random.Random | None = None,
    ) -> None:
        self.resolver = resolver
        self.settings = settings
        self.cache = cache
        self.opportunistic = opportunistic
        self.verified = verified or ssl.create_default_context()
        self.rng = rng or random.Random()

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
                break
            if failed.enhanced == "4.7.5" and host.policy is TlsPolicy.OPPORTUNISTIC and tls:
                queue.insert(0, replace(host, policy=TlsPolicy.NONE))  # plaintext, once
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
            events = await conn.send(message)
            tx = next((e for e in events if isinstance(e, TransactionResult)), None)
            failure = next((e.outcome for e in events if isinstance(e, HostFailed)), None)
            results = [
                attempt_of(r.address, r.outcome, host.name, conn.tls_outcome)
                for r in (tx.results if tx is not None else ())
            ]
            final = [r for r in results if r.status != PENDING]
            if conn.reused and failure is not None and not final:
                continue
            if final:
                await record(final)  # durable before the connection carries anything else
            tried_tls = conn.tls_outcome != "none" or (
                failure is not None and failure.enhanced == "4.7.5"
            )
            summary = failure.text if failure is not None else _summary(results)
            self._log(job, host, message, summary, conn.tls_outcome, started)
            if failure is None:
                self.cache.put(conn)
            return results, failure, tried_tls
        raise AssertionError("unreachable")

    async def _connection(self, host: _Host) -> tuple[OutboundConnection | None, str | None]:
        route = host.route
        key = ConnectionKey(
            host.address,
            host.port,
            host.implicit_tls,
            host.policy,
            route.credentials.username if route and route.credentials else None,
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
                tls=self.verified if route is not None else self.opportunistic,
                credentials=route.credentials if route is not None else None,
                verified=route is not None,
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
        plan = await mx_plan(
            self.resolver,
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
        return [
            _Host(h.name, a, port, policy=dane.tls_policy(h.name), dane=dane.policy(h.name))
            for h in dane.hosts
            for a in h.addresses
        ]

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
        policy = TlsPolicy.REQUIRED
        return [
            _Host(route.host, a, route.port, route.implicit_tls, policy, route) for a in addresses
        ]

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
