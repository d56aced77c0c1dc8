"""One outbound SMTP connection over asyncio streams, and the cache of idle ones.

`OutboundConnection` drives the sans-I/O `SmtpClient`: it writes what the client
hands out, feeds it what the server sends, upgrades to TLS when asked (STARTTLS;
`ssl` with TLS 1.2 at least) and enforces the RFC 5321 4.5.3.2 timeout of whatever
the client waits for (`SmtpClient.waiting_for`, scaled to the configured values);
a write the transport takes at once (its buffer at or below the low-water mark) waits
for nothing, so it needs no timer.
`send` returns the message's `TransactionResult` and, when the host failed, its
`HostFailed` too. With a DANE policy in the key, the chain the server presented after
STARTTLS must match its TLSA records (`poczta.queue.dane_tls`) before the session goes
on; otherwise the connection is closed with QUIT and the host fails with 4.7.5.

`TlsRequirement` is what a connection to one host asks of TLS: whether STARTTLS is
needed (`TlsPolicy`) and what the certificate must pass (`CertificateCheck`, which
also names the TLS outcome, e.g. "mta-sts verified TLSv1.3 ..."). A checked
certificate is checked by the TLS context the caller hands over for that check, for
the host's name.

`ConnectionCache` keeps a connection that finished a message for the next one to the
same host, for a short idle time (Postfix's connection cache); a reused connection
that turns out dead is simply replaced by the caller. Its `ConnectionKey` holds the
TLS requirement and, for a checked certificate, the name it was checked for, so a
connection is only ever reused under the requirement it was made for.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from poczta.queue.dane import DanePolicy
from poczta.queue.dane_tls import dane_check
from poczta.smtp.client import SmtpClient
from poczta.smtp.client_events import (
    ClientEvent,
    Close,
    Credentials,
    HostFailed,
    OutboundMessage,
    SendBody,
    StartTls,
    TlsPolicy,
    TransactionResult,
    Wait,
    Write,
)

__all__ = [
    "OPPORTUNISTIC",
    "CertificateCheck",
    "ConnectionCache",
    "ConnectionKey",
    "OutboundConnection",
    "Timeouts",
    "TlsRequirement",
    "opportunistic_tls",
]

READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds for each wait (defaults: RFC 5321 4.5.3.2)."""

    connect: float = 30.0
    command: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0
    data_end: float = 600.0

    def of(self, wait: Wait) -> float:
        if wait is Wait.DATA_INIT:
            return self.data_init
        if wait is Wait.DATA_BLOCK:
            return self.data_block
        if wait is Wait.DATA_END:
            return self.data_end
        return self.command


def opportunistic_tls() -> ssl.SSLContext:
    """STARTTLS to an MX without a policy: any certificate, TLS 1.2 or newer (RFC 7435)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class CertificateCheck(enum.Enum):
    """What the server's certificate must pass; the value names the TLS outcome."""

    NONE = "opportunistic"  # any certificate, or none at all (RFC 7435)
    SMARTHOST = "verified"  # PKIX for the smarthost's name
    MTA_STS = "mta-sts verified"  # PKIX for the MX host's name (RFC 8461 4.2)


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    """What a connection to one host asks of TLS.

    With `testing`, a failed check is only reported and the host tried again without
    it (MTA-STS testing mode); otherwise a failure of `policy` or `check` is a host
    failure (temporary: the queue retries, never in plaintext).
    """

    policy: TlsPolicy = TlsPolicy.OPPORTUNISTIC
    check: CertificateCheck = CertificateCheck.NONE
    testing: bool = False


OPPORTUNISTIC = TlsRequirement()


@dataclass(frozen=True, slots=True)
class ConnectionKey:
    """What makes two connections interchangeable: address, port, TLS mode, login, and
    what TLS was asked for (with the name a checked certificate was checked for, or the
    TLSA records a DANE connection was authenticated with)."""

    address: str
    port: int
    implicit_tls: bool = False
    tls_policy: TlsPolicy = TlsPolicy.OPPORTUNISTIC
    username: str | None = None
    check: CertificateCheck = CertificateCheck.NONE
    server_name: str | None = None
    dane: DanePolicy | None = None


class OutboundConnection:
    """One connection to one host: the asyncio loop around an `SmtpClient`."""

    def __init__(
        self,
        key: ConnectionKey,
        host: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: SmtpClient,
        tls: ssl.SSLContext,
        timeouts: Timeouts,
    ) -> None:
        self.key = key
        self.host = host
        self._reader = reader
        self._writer = writer
        self._client = client
        self._tls = tls
        self._timeouts = timeouts
        self.tls_outcome = self._describe_tls() if key.implicit_tls else "none"
        self.reused = False
        self._done: list[TransactionResult | HostFailed] = []

    @classmethod
    async def open(
        cls,
        key: ConnectionKey,
        host: str,
        *,
        helo: str,
        timeouts: Timeouts,
        tls: ssl.SSLContext,
        credentials: Credentials | None = None,
    ) -> OutboundConnection:
        """Connect (OSError or TimeoutError when that fails); the greeting is read by `send`.

        `tls` is the context for `key.check`, used with `host` as the server name."""
        ssl_arg = tls if key.implicit_tls else None
        server_name = host if key.implicit_tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                key.address, key.port, ssl=ssl_arg, server_hostname=server_name, limit=READ_SIZE
            ),
            timeouts.connect,
        )
        client = SmtpClient(
            hostname=helo,
            peer=host,
            tls_policy=key.tls_policy,
            tls_active=key.implicit_tls,
            credentials=credentials,
        )
        return cls(key, host, reader, writer, client, tls, timeouts)

    @property
    def usable(self) -> bool:
        return self._client.idle

    async def send(
        self, message: OutboundMessage, *, rset: bool = True
    ) -> list[TransactionResult | HostFailed]:
        """Deliver one message: its result, and `HostFailed` if the host failed meanwhile
        (`rset` as `SmtpClient.send` takes it)."""
        self._done = []
        await self._handle(self._client.send(message, rset=rset))
        while not self._client.closed and not any(
            isinstance(d, TransactionResult) for d in self._done
        ):
            await self._read_once()
        if self._client.closed:
            self._writer.close()
        return self._done

    async def quit(self) -> None:
        """QUIT politely (briefly), then close."""
        with contextlib.suppress(Exception):
            if self._client.idle:
                await self._handle(self._client.quit())
                async with asyncio.timeout(min(self._timeouts.command, 5.0)):
                    while not self._client.closed:
                        await self._read_once()
        self.close()

    def close(self) -> None:
        self._writer.close()

    async def _read_once(self) -> None:
        wait = self._client.waiting_for
        try:
            async with asyncio.timeout(self._timeouts.of(wait)):
                data = await self._reader.read(READ_SIZE)
        except TimeoutError:
            await self._handle(self._client.timed_out())
            return
        except (OSError, ssl.SSLError):
            data = b""
        await self._handle(self._client.receive(data) if data else self._client.eof())

    async def _handle(self, events: list[ClientEvent]) -> None:
        for event in events:
            if isinstance(event, Write):
                await self._write(event.data)
            elif isinstance(event, SendBody):
                for piece in event.chunks:
                    if self._client.closed:
                        break
                    await self._write(piece)
            elif isinstance(event, StartTls):
                await self._start_tls()
            elif isinstance(event, TransactionResult | HostFailed):
                self._done.append(event)
            elif isinstance(event, Close):
                self._writer.close()

    async def _write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            if self._drains_at_once():
                await self._writer.drain()
            else:
                async with asyncio.timeout(self._timeouts.data_block):
                    await self._writer.drain()
        except TimeoutError:  # the server stopped reading
            if not self._client.closed:
                await self._handle(self._client.timed_out())
        except (OSError, ssl.SSLError):
            pass  # the read that follows sees the end of the connection

    def _drains_at_once(self) -> bool:
        """Whether `drain()` returns without waiting, so needs no timeout (one costs a
        timer per write). A transport pauses writing above its high-water mark and
        resumes only at or below the low one, so at or below it, it is not paused."""
        transport = self._writer.transport
        low, _high = transport.get_write_buffer_limits()
        return transport.get_write_buffer_size() <= low

    async def _start_tls(self) -> None:
        try:
            async with asyncio.timeout(self._timeouts.command):
                await self._writer.start_tls(self._tls, server_hostname=self._server_name())
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            await self._handle(self._client.tls_failed(str(exc) or type(exc).__name__))
            return
        refused = self._dane_refusal()
        if refused is not None:
            await self._write(b"QUIT\r\n")  # over TLS, before anything else
            await self._handle(self._client.tls_failed(refused))
            return
        self.tls_outcome = self._describe_tls()
        await self._handle(self._client.tls_started())

    def _server_name(self) -> str:
        """The SNI: the TLSA base domain under DANE, which may be a CNAME target."""
        dane = self.key.dane
        return dane.base_domain if dane is not None and dane.authenticated else self.host

    def _dane_refusal(self) -> str | None:
        """Why the server's chain fails the key's DANE policy, or None when it passes."""
        ssl_object = self._writer.get_extra_info("ssl_object")
        if self.key.dane is None or ssl_object is None:
            return None
        result = dane_check(self.key.dane, ssl_object)
        return None if result.ok else f"DANE authentication failed: {result.text}"

    def _describe_tls(self) -> str:
        ssl_object = self._writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return "none"
        cipher = ssl_object.cipher()
        kind = self.key.check.value
        if self.key.dane is not None:
            kind = "dane verified" if self.key.dane.authenticated else "dane unauthenticated"
        return f"{kind} {ssl_object.version()} {cipher[0] if cipher else ''}".strip()


class ConnectionCache:
    """Idle connections by `ConnectionKey`, each kept `idle_time` seconds at most.

    Each key's connections are in the order they were put, so the newest is taken
    first and the expired ones are at the front; `take` and `put` cost the same
    however many connections are idle. One timer for the whole cache sweeps out the
    expired ones, rather than one per `put`.
    """

    def __init__(
        self, idle_time: float, max_idle: int = 100, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_time = idle_time
        self.max_idle = max_idle
        self.clock = clock
        self._idle: dict[ConnectionKey, deque[tuple[float, OutboundConnection]]] = {}
        self._count = 0
        self._sweep: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return self._count

    def take(self, key: ConnectionKey) -> OutboundConnection | None:
        stack = self._idle.get(key)
        if stack is None:
            return None
        now = self.clock()
        found = None
        while stack and found is None:
            expires, conn = stack.pop()
            self._count -= 1
            if expires <= now:  # the newest expired: so did every older one
                self._quit(conn)
                self._count -= len(stack)
                self._quit_all(stack)
                stack.clear()
            elif conn.usable:
                found = conn
            else:
                self._quit(conn)
        if not stack:
            del self._idle[key]
        if found is not None:
            found.reused = True
        return found

    def put(self, conn: OutboundConnection) -> None:
        if not conn.usable:
            conn.close()
            return
        if self.idle_time <= 0 or self._count >= self.max_idle:
            self._quit(conn)
            return
        stack = self._idle.get(conn.key)
        if stack is None:
            stack = self._idle[conn.key] = deque()
        stack.append((self.clock() + self.idle_time, conn))
        self._count += 1
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.idle_time + 0.05, self.expire)

    def expire(self) -> None:
        """QUIT the connections idle for longer than allowed (and those gone unusable);
        while some are left, sweep again when the oldest of them expires."""
        self._sweep = None
        now = self.clock()
        next_expiry: float | None = None
        for key, stack in list(self._idle.items()):
            while stack and stack[0][0] <= now:
                self._quit(stack.popleft()[1])
                self._count -= 1
            kept = [(t, c) for t, c in stack if c.usable]
            if len(kept) < len(stack):
                self._quit_all(e for e in stack if not e[1].usable)
                self._count -= len(stack) - len(kept)
                stack = self._idle[key] = deque(kept)
            if not stack:
                del self._idle[key]
            elif next_expiry is None or stack[0][0] < next_expiry:
                next_expiry = stack[0][0]
        if next_expiry is not None:
            delay = max(next_expiry - now, 0.0) + 0.05
            self._sweep = asyncio.get_running_loop().call_later(delay, self.expire)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle: Mapping[ConnectionKey, deque[tuple[float, OutboundConnection]]] = self._idle
        self._idle = {}
        self._count = 0
        for stack in idle.values():
            self._quit_all(stack)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _quit_all(self, entries: Iterable[tuple[float, OutboundConnection]]) -> None:
        for _, conn in entries:
            self._quit(conn)

    def _quit(self, conn: OutboundConnection) -> None:
        task = asyncio.ensure_future(conn.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
