"""Wiring: config → store, logins, delivery, mail checks, listeners; start, reload, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from poczta.accounts import LoginThrottle
from poczta.app_settings import (
    greylist_settings,
    policy_settings,
    quotas,
    read_timeouts,
    sending_limits,
    smtp_limits,
)
from poczta.app_sockets import Sockets, bind_listeners, close_sockets, take_slot
from poczta.config import Config, ConfigError, ListenAddress
from poczta.delivery import Delivery
from poczta.dkim_keys import DkimKeyError, KeyStore, Signer
from poczta.dns import DnsPythonResolver
from poczta.imap.limits import ImapLimits
from poczta.imap.session import IMAP_REPLIES, ImapContext, run_imap_session
from poczta.leases import LeaseKeeper, SharedConnectionLimiter
from poczta.login import LoginService
from poczta.logs import log
from poczta.mailauth.dnsbl import DnsblKind, DnsblZone
from poczta.mailauth.greylist import Greylister
from poczta.net.connection import Connection
from poczta.net.listener import (
    ConnectionGate,
    ConnectionLimiter,
    Listener,
    ListenerSettings,
    ServiceReplies,
    SessionHandler,
)
from poczta.net.tls import ReloadableContext, TlsError
from poczta.pop3.events import Pop3Limits
from poczta.pop3.session import POP3_REPLIES, MaildropLocks, Pop3Context, run_pop3_session
from poczta.privileges import become_user
from poczta.process import warn_loose_modes
from poczta.sending_limits import SendingLimiter
from poczta.smtp.checks import MailChecks
from poczta.smtp.server import Role
from poczta.smtp.session import SESSION_TIMEOUT_REPLY, SmtpContext, run_smtp_session
from poczta.store import MailStore, StoreUnavailable, open_store, run_committer

SHUTDOWN_GRACE_SECONDS = 30.0
GREYLIST_SWEEP_SECONDS = 600.0

SMTP_REPLIES = ServiceReplies(
    too_many=b"421 4.7.0 Too many connections, try again later\r\n",
    timeout=SESSION_TIMEOUT_REPLY,
)


async def open_configured_store(config: Config, *, committer: bool = False) -> MailStore:
    """Open the configured store and make sure the configured domains exist in it."""
    store = await open_store(config, committer=committer)
    for domain in config.domains:
        if not await store.domain_exists(domain):
            await store.add_domain(domain)
    return store


async def signer_for(config: Config, store: MailStore) -> Signer:
    """The DKIM signer of submitted mail; a warning for each local domain without a key."""
    keys = KeyStore(config.data_dir)
    for domain in await store.list_domains():
        try:
            usable = bool(keys.signing_keys(domain))
        except DkimKeyError as exc:
            log("dkim.key_unreadable", logging.ERROR, domain=domain, error=exc)
            continue
        if not usable:
            log(
                "dkim.no_key", logging.WARNING, domain=domain, hint=f"poczta dkim generate {domain}"
            )
    return Signer(keys)


# [dns] dnssec → DnsPythonResolver's trust_ad (None: believe loopback resolvers only).
_DNSSEC_TRUST: dict[str, bool | None] = {"loopback": None, "trusted": True, "off": False}


def build_resolver(config: Config) -> DnsPythonResolver:
    """The resolver of [dns]; with no nameservers, those of resolv.conf (dev mode falls
    back to 127.0.0.1 when there is none, so a demo starts anywhere)."""
    import dns.resolver

    settings = config.dns

    def resolver(nameservers: Sequence[str] | None) -> DnsPythonResolver:
        timeout = settings.timeout
        return DnsPythonResolver(
            nameservers,
            port=settings.port,
            timeout=timeout,
            lifetime=2 * timeout,
            trust_ad=_DNSSEC_TRUST[settings.dnssec],
        )

    if settings.nameservers:
        return resolver(settings.nameservers)
    try:
        return resolver(None)
    except dns.resolver.NoResolverConfiguration:
        if config.dev_mode:
            log("dns.no_resolv_conf", fallback="127.0.0.1")
            return resolver(["127.0.0.1"])
        raise ConfigError(
            str(config.source or "config"),
            "empty, and the system has no usable resolv.conf: list your resolvers here",
            key="dns.nameservers",
        ) from None


async def open_mail_checks(config: Config, store: MailStore) -> MailChecks | None:
    """The checks of incoming mail (None when off); greylisting keeps its state beside
    `store`."""
    c = config.checks
    if not c.enabled or not config.listeners.smtp:
        return None
    resolver = build_resolver(config)
    zones = [DnsblZone(z, DnsblKind.IP, c.dnsbl_action) for z in c.dnsbl_ip_zones]
    zones += [DnsblZone(z, DnsblKind.DOMAIN, c.dnsbl_action) for z in c.dnsbl_domain_zones]
    greylister = None
    if c.greylisting:
        greylister = Greylister(await store.greylist_store(), greylist_settings(config))
    checks = MailChecks(
        resolver,
        authserv_id=config.hostname,
        policy=policy_settings(config),
        zones=zones,
        greylister=greylister,
        deadline=c.deadline,
    )
    return checks


async def sweep_greylist(greylister: Greylister, every: float = GREYLIST_SWEEP_SECONDS) -> None:
    """Delete expired greylisting entries every `every` seconds until cancelled."""
    while True:
        await asyncio.sleep(every)
        try:
            removed = await greylister.sweep()
        except Exception as exc:  # the next sweep tries again; mail flow is unaffected
            log("greylist.sweep_failed", error=exc)
            continue
        if removed:
            log("greylist.swept", removed=removed)


@dataclass
class App:
    """A running poczta: every listener of the config, sharing one store and one throttle."""

    config: Config
    store: MailStore | None = None
    tls: ReloadableContext | None = None
    listeners: list[Listener] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    checks: MailChecks | None = None
    sweeper: asyncio.Task[None] | None = None
    shared: bool = False  # one of several worker processes sharing the ports
    sockets: Sockets | None = None  # bound before the start; else bound by `start`
    slot: int = 0  # which of the worker processes this is
    workers: int = 1  # how many there are (each runs a queue runner with its share)
    queue_runner: asyncio.Task[None] | None = None
    leases: LeaseKeeper | None = None  # with limits shared across processes and nodes

    async def _limits(self) -> tuple[LoginService, ConnectionGate]:
        """The login throttle and per-IP limit: in memory for one process on SQLite, in
        the store when several workers or nodes must see the same counts."""
        config, store = self.config, self.store
        assert store is not None
        max_per_ip = config.limits.max_connections_per_ip
        if not (self.shared or config.store.backend == "postgres"):
            throttle = LoginThrottle.from_settings(config.auth)
            return LoginService(store, throttle), ConnectionLimiter(max_per_ip)
        shared = await store.shared_limits()
        lease = float(config.limits.shared_lease)
        self.leases = LeaseKeeper(shared, config.hostname, lease=lease)
        self.leases.start()
        throttle = LoginThrottle.from_settings(config.auth, clock=time.time)  # same on all
        logins = LoginService(store, throttle, shared)
        return logins, SharedConnectionLimiter(self.leases, max_per_ip)

    async def start(self) -> None:
        config = self.config
        if self.tls is None:
            self.tls = load_tls(config)
        if self.sockets is None:
            self.sockets = {a: s[0] for a, s in bind_listeners(config).items()}
        self.store = await open_configured_store(config, committer=self.shared)
        logins, limiter = await self._limits()
        delivery = Delivery(self.store, quotas=quotas(config, self.store), hostname=config.hostname)
        self.checks = await open_mail_checks(config, self.store)
        if self.checks is not None and self.checks.greylister is not None:
            self.sweeper = asyncio.get_running_loop().create_task(
                sweep_greylist(self.checks.greylister)
            )
        signer = await signer_for(config, self.store)
        sending = SendingLimiter(await self.store.sending_store(), sending_limits(config))
        smtp_services = (
            ("smtp", Role.MX, config.listeners.smtp, False),
            ("submission", Role.SUBMISSION, config.listeners.submission, False),
            ("submissions", Role.SUBMISSIONS, config.listeners.submissions, True),
        )
        for service, role, addresses, implicit in smtp_services:
            ctx = SmtpContext(
                hostname=config.hostname,
                role=role,
                limits=smtp_limits(config),
                timeouts=read_timeouts(config),
                tls=self.tls,
                dev_mode=config.dev_mode,
                logins=logins,
                delivery=delivery,
                bare_line_endings=config.smtp.bare_line_endings,
                checks=self.checks if role is Role.MX else None,
                signer=None if role is Role.MX else signer,
                sending=None if role is Role.MX else sending,
            )
            handler: Callable[[Connection], Awaitable[None]] = partial(run_smtp_session, ctx)
            await self._listen(service, addresses, implicit, handler, SMTP_REPLIES, limiter)
        await self._start_pop3_listeners(logins, limiter)
        await self._start_imap_listeners(logins, limiter)
        if config.outbound.enabled:
            from poczta.queue.service import build_runner

            resolver = build_resolver(config)
            runner = build_runner(config, delivery, resolver, slot=self.slot, workers=self.workers)
            delivery.on_queued = runner.wake  # the others find it at their next poll
            self.queue_runner = asyncio.get_running_loop().create_task(runner.run())

    async def _listen(
        self,
        service: str,
        addresses: Sequence[ListenAddress],
        implicit_tls: bool,
        handler: SessionHandler,
        replies: ServiceReplies,
        limiter: ConnectionGate,
    ) -> None:
        """Start one listener per address of `service`, all running `handler`."""
        limits = self.config.limits
        assert self.sockets is not None
        for address in addresses:
            settings = ListenerSettings(
                service=service,
                host=address.host,
                port=address.port,
                implicit_tls=implicit_tls,
                max_connections=limits.max_connections,
                session_timeout=limits.session_timeout,
            )
            listener = Listener(settings, handler, replies, limiter, self.tls)
            await listener.start(self.sockets[service, address])
            self.listeners.append(listener)
            log("listening", service=service, address=f"{address.host}:{address.port}")

    async def _start_pop3_listeners(self, logins: LoginService, limiter: ConnectionGate) -> None:
        """pop3 (STLS) and pop3s (implicit TLS); one maildrop lock table for both."""
        config = self.config
        assert self.store is not None
        locks = MaildropLocks(self.leases)
        limits = Pop3Limits(
            max_errors=config.limits.max_errors,
            max_auth_failures=config.limits.max_auth_failures,
        )
        services = (("pop3", config.listeners.pop3, False), ("pop3s", config.listeners.pop3s, True))
        for service, addresses, implicit in services:
            ctx = Pop3Context(
                hostname=config.hostname,
                service=service,
                limits=limits,
                timeouts=read_timeouts(config),
                tls=self.tls,
                dev_mode=config.dev_mode,
                logins=logins,
                store=self.store,
                locks=locks,
            )
            handler = partial(run_pop3_session, ctx)
            await self._listen(service, addresses, implicit, handler, POP3_REPLIES, limiter)

    async def _start_imap_listeners(self, logins: LoginService, limiter: ConnectionGate) -> None:
        """imap (STARTTLS) and imaps (implicit TLS)."""
        config = self.config
        assert self.store is not None
        limits = ImapLimits(max_append_literal=config.limits.max_message_size)
        services = (("imap", config.listeners.imap, False), ("imaps", config.listeners.imaps, True))
        for service, addresses, implicit in services:
            ctx = ImapContext(
                hostname=config.hostname,
                service=service,
                timeouts=read_timeouts(config),
                tls=self.tls,
                dev_mode=config.dev_mode,
                logins=logins,
                store=self.store,
                limits=limits,
                quotas=quotas(config, self.store),
            )
            handler = partial(run_imap_session, ctx)
            await self._listen(service, addresses, implicit, handler, IMAP_REPLIES, limiter)

    def reload_tls(self) -> None:
        if self.tls is None:
            return
        try:
            self.tls.reload()
            log("tls.reloaded", certificate=self.tls.cert)
        except TlsError as exc:
            log("tls.reload_failed", error=exc)

    async def stop(self) -> None:
        log("stopping", grace=SHUTDOWN_GRACE_SECONDS)
        await asyncio.gather(*(lis.stop(SHUTDOWN_GRACE_SECONDS) for lis in self.listeners))
        if self.queue_runner is not None:
            self.queue_runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.queue_runner
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        if self.leases is not None:  # what this process still holds in the store
            await self.leases.stop()
        if self.store is not None:  # and what it opened beside it: greylist, sending limits
            await self.store.close()
        log("stopped")

    async def run_until_signalled(self, on_ready: Callable[[App], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        await self.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        if on_ready is not None:
            on_ready(self)
        try:
            await self.stopped.wait()
            await self.stop()  # a second SIGTERM while stopping changes nothing
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)


def load_tls(config: Config) -> ReloadableContext:
    return ReloadableContext(config.tls.certificate, config.tls.private_key, config.tls.min_version)


async def prepare_workers(config: Config) -> None:
    """What the workers would otherwise race on, done once before they are forked:
    migrations, the configured domains, the greylist table; on SQLite, the locks and
    counts a run before this one left."""
    store = await open_configured_store(config)
    try:
        if config.checks.enabled and config.checks.greylisting and config.listeners.smtp:
            await store.greylist_store()
        if config.store.backend == "sqlite":  # no worker runs yet: every holder is gone
            limits = await store.shared_limits()
            await limits.drop_holders(await limits.lease_holders())
    finally:
        await store.close()


def run_app(app: App, on_ready: Callable[[App], None] | None = None) -> None:
    """Run `app` in the foreground until SIGTERM/SIGINT (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(app.run_until_signalled(on_ready))
        return
    uvloop.run(app.run_until_signalled(on_ready))


def run(config: Config, on_ready: Callable[[App], None] | None = None) -> None:
    """Run poczta in the foreground until SIGTERM/SIGINT: one process, or with `workers`
    above one a master forking that many (`on_ready` is then called in each worker).

    The listeners are bound and the TLS key is read first, then (a root process) changes
    to the configured user; everything after runs as that user."""
    from poczta.workers import Master, WorkerError, worker_count

    count = worker_count(config)
    bound = bind_listeners(config, copies=count)
    try:
        tls = load_tls(config)
        become_user(config)
    except BaseException:
        close_sockets(bound)
        raise
    warn_loose_modes(config)
    if count == 1:
        run_app(App(config, tls=tls, sockets=take_slot(bound, 0)), on_ready)
        return
    try:
        asyncio.run(prepare_workers(config))
        if threading.active_count() != 1:  # locks it holds would stay held in the workers
            raise WorkerError(f"{threading.active_count() - 1} threads still run before fork")
    except (WorkerError, StoreUnavailable, OSError) as exc:
        log("workers.failed", error=exc)
        raise SystemExit(1) from exc

    def worker(slot: int) -> None:
        sockets = take_slot(bound, slot)
        app = App(config, tls=tls, sockets=sockets, shared=True, slot=slot, workers=count)
        run_app(app, on_ready)

    def committer() -> None:
        close_sockets(bound)
        run_committer(config, ready=lambda: log("committer.listening"))

    log("workers.starting", workers=count)
    master = Master(
        count,
        worker,
        grace=SHUTDOWN_GRACE_SECONDS,
        # PostgreSQL commits each worker's writes itself; SQLite's go through one process.
        run_committer=committer if config.store.backend == "sqlite" else None,
        close_listeners=lambda: close_sockets(bound),
    )
    code = master.run()
    if code:
        raise SystemExit(code)
