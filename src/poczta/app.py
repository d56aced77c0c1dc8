"""Wiring: config → store, logins, delivery, listeners; start, reload on SIGHUP, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from poczta.accounts import LoginThrottle
from poczta.config import Config, ListenAddress
from poczta.delivery import Delivery
from poczta.login import LoginService
from poczta.logs import log
from poczta.net.connection import Connection
from poczta.net.listener import (
    ConnectionLimiter,
    Listener,
    ListenerSettings,
    ServiceReplies,
    SessionHandler,
)
from poczta.net.tls import ReloadableContext, TlsError
from poczta.pop3.events import Pop3Limits
from poczta.pop3.session import POP3_REPLIES, MaildropLocks, Pop3Context, run_pop3_session
from poczta.smtp.server import Role, SmtpLimits
from poczta.smtp.session import SmtpContext, run_smtp_session
from poczta.store.base import MailStore, StoreUnavailable

SHUTDOWN_GRACE_SECONDS = 30.0

SMTP_REPLIES = ServiceReplies(
    too_many=b"421 4.7.0 Too many connections, try again later\r\n",
    timeout=b"421 4.4.2 Session time limit reached, closing connection\r\n",
)


def smtp_limits(config: Config) -> SmtpLimits:
    limits = config.limits
    return SmtpLimits(
        max_command_line=limits.max_command_line,
        max_data_line=limits.max_data_line,
        max_message_size=limits.max_message_size,
        max_recipients=limits.max_recipients,
        max_errors=limits.max_errors,
        max_commands=limits.max_commands,
        max_auth_failures=limits.max_auth_failures,
    )


async def open_store(config: Config) -> MailStore:
    """The configured backend: SQLite (default) under the data directory."""
    if config.store.backend != "sqlite":
        raise StoreUnavailable(f"store backend {config.store.backend!r} is not available yet")
    from poczta.store.sqlite import SqliteStore

    config.data_dir.mkdir(parents=True, exist_ok=True)
    return await SqliteStore.open(config.store.path, config.data_dir / "blobs")


async def open_configured_store(config: Config) -> MailStore:
    """Open the configured store and make sure the configured domains exist in it."""
    store = await open_store(config)
    for domain in config.domains:
        if not await store.domain_exists(domain):
            await store.add_domain(domain)
    return store


@dataclass
class App:
    """A running poczta: every listener of the config, sharing one store and one throttle."""

    config: Config
    store: MailStore | None = None
    tls: ReloadableContext | None = None
    listeners: list[Listener] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        config = self.config
        self.tls = ReloadableContext(
            config.tls.certificate, config.tls.private_key, config.tls.min_version
        )
        self.store = await open_configured_store(config)
        throttle = LoginThrottle.from_settings(config.auth)
        logins = LoginService(self.store, throttle)
        delivery = Delivery(self.store)
        limiter = ConnectionLimiter(config.limits.max_connections_per_ip)
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
                idle_timeout=config.limits.idle_timeout,
                tls=self.tls,
                dev_mode=config.dev_mode,
                logins=logins,
                delivery=delivery,
                bare_line_endings=config.smtp.bare_line_endings,
            )
            handler: Callable[[Connection], Awaitable[None]] = partial(run_smtp_session, ctx)
            await self._listen(service, addresses, implicit, handler, SMTP_REPLIES, limiter)
        await self._start_pop3_listeners(logins, limiter)

    async def _listen(
        self,
        service: str,
        addresses: Sequence[ListenAddress],
        implicit_tls: bool,
        handler: SessionHandler,
        replies: ServiceReplies,
        limiter: ConnectionLimiter,
    ) -> None:
        """Start one listener per address of `service`, all running `handler`."""
        limits = self.config.limits
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
            await listener.start()
            self.listeners.append(listener)
            log("listening", service=service, address=f"{address.host}:{address.port}")

    async def _start_pop3_listeners(self, logins: LoginService, limiter: ConnectionLimiter) -> None:
        """pop3 (STLS) and pop3s (implicit TLS); one maildrop lock table for both."""
        config = self.config
        assert self.store is not None
        locks = MaildropLocks()
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
                idle_timeout=config.limits.idle_timeout,
                tls=self.tls,
                dev_mode=config.dev_mode,
                logins=logins,
                store=self.store,
                locks=locks,
            )
            handler = partial(run_pop3_session, ctx)
            await self._listen(service, addresses, implicit, handler, POP3_REPLIES, limiter)

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
        if self.store is not None:
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


def run(config: Config, on_ready: Callable[[App], None] | None = None) -> None:
    """Run poczta in the foreground until SIGTERM/SIGINT (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(App(config).run_until_signalled(on_ready))
        return
    uvloop.run(App(config).run_until_signalled(on_ready))
