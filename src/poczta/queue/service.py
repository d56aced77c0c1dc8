"""The queue runner of `poczta serve`, built from the [outbound] settings.

Every worker process runs a runner. The connection limits of [outbound] are the
server's, as Postfix's `default_process_limit` and
`default_destination_concurrency_limit` are the whole instance's: each worker gets its
share (`worker_share`), so that the workers together work on about `max_connections`
connections at once and `max_per_domain` to one domain, and each at least one. The idle
connections each worker keeps for reuse are bounded by the whole `max_connections` (and
by `connection_cache_time`; Postfix's scache is bounded by time alone): with the bound
halved as well, two workers opened 2.4 times as many connections in bench/outbound, as
each worker's idle slots were shared by all the destinations.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from datetime import datetime

from poczta.config import Config
from poczta.delivery import Delivery
from poczta.dns import Resolver
from poczta.process import StartError
from poczta.queue.connection import ConnectionCache, Timeouts, opportunistic_tls
from poczta.queue.deliver import Deliverer, DeliverySettings
from poczta.queue.mta_sts_cache import MtaStsPolicies
from poczta.queue.mta_sts_fetch import PolicyFetcher, policy_context
from poczta.queue.reports import Reporter
from poczta.queue.routes import RelayError, Router
from poczta.queue.runner import QueueRunner, RunnerSettings, utc_now

__all__ = ["build_runner", "worker_share"]


def worker_share(total: int, workers: int, slot: int) -> int:
    """Worker `slot`'s part of a limit of the whole server: `total` divided among the
    `workers`, the first ones taking one more of what does not divide; at least 1."""
    base, rest = divmod(total, workers)
    return max(1, base + (slot < rest))


def _local_addresses(config: Config) -> tuple[str, ...]:
    """The addresses this server listens on for mail: an MX there is this machine."""
    found = []
    for address in config.listeners.smtp:
        try:
            found.append(str(ipaddress.ip_address(address.host)))
        except ValueError:
            continue
    return tuple(found)


def _delivery_settings(config: Config) -> DeliverySettings:
    o = config.outbound
    timeouts = Timeouts(
        o.connect_timeout,
        o.command_timeout,
        o.data_init_timeout,
        o.data_block_timeout,
        o.data_end_timeout,
    )
    return DeliverySettings(
        helo=o.hostname or config.hostname,
        port=o.port,
        timeouts=timeouts,
        local_addresses=_local_addresses(config),
        loopback_is_local=o.loopback_is_local,
    )


def _deliverer(
    config: Config, delivery: Delivery, resolver: Resolver, clock: Callable[[], datetime]
) -> Deliverer:
    """The attempts of one worker: its connection cache, the TLS contexts, MTA-STS."""
    o = config.outbound
    ca_file = config.data_dir / o.relay_ca_file if o.relay_ca_file else None
    try:
        verified = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise StartError(f"outbound.relay_ca_file: {ca_file}: {exc}") from None
    verified.minimum_version = ssl.TLSVersion.TLSv1_2
    sts_ca = str(config.data_dir / o.mta_sts_ca_file) if o.mta_sts_ca_file else None
    try:
        sts_tls = policy_context(sts_ca)
    except (OSError, ssl.SSLError) as exc:
        raise StartError(f"outbound.mta_sts_ca_file: {sts_ca}: {exc}") from None
    fetcher = PolicyFetcher(resolver, sts_tls, port=o.mta_sts_port)
    return Deliverer(
        resolver,
        _delivery_settings(config),
        ConnectionCache(o.connection_cache_time, o.max_connections),  # see above
        opportunistic=opportunistic_tls(),
        verified=verified,
        mta_sts=MtaStsPolicies(resolver, delivery.store, fetcher, clock),
        mta_sts_tls=sts_tls,
    )


def build_runner(
    config: Config,
    delivery: Delivery,
    resolver: Resolver,
    *,
    clock: Callable[[], datetime] = utc_now,
    slot: int = 0,
    workers: int = 1,
) -> QueueRunner:
    """The runner for `config` in worker `slot` of `workers`; StartError naming the key
    when the relay or a CA file is unusable."""
    o = config.outbound
    try:
        router = Router(o, config.data_dir)
    except RelayError as exc:
        raise StartError(f"outbound.relay_password_file: {exc}") from None
    deliverer = _deliverer(config, delivery, resolver, clock)
    reporter = Reporter(delivery, config.hostname, o.lifetime, clock)
    runner_settings = RunnerSettings(
        retry_first=o.retry_first,
        retry_max=o.retry_max,
        lifetime=o.lifetime,
        delay_warning=o.delay_warning,
        max_connections=worker_share(o.max_connections, workers, slot),
        max_per_domain=worker_share(o.max_per_domain, workers, slot),
        claim_time=o.claim_time,
    )
    return QueueRunner(
        delivery.store,
        deliverer,
        reporter,
        runner_settings,
        node=config.hostname,
        router=router if router.relays else None,
        clock=clock,
    )
