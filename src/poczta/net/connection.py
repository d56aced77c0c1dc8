"""One client connection: buffered reads with timeouts, writes with back-pressure, TLS upgrade.

We use an `asyncio.Protocol` with our own input buffer rather than asyncio streams
because STARTTLS must drop every byte received before the upgrade (CVE-2011-0411
class): with our own buffer that is one `clear()` right before `loop.start_tls`,
with no private attributes of `StreamReader` involved. It is also cheaper per read.

What one event-loop turn writes goes to the transport together at its end (or at
`drain`, `start_tls`, `close`): a response is never held back, and the responses to a
client's pipelined commands leave in one TLS record and one send instead of one each
(each write to a TLS transport encrypts and sends at once).

After IMAP's COMPRESS the connection carries raw deflate (`start_compression`):
`read` inflates, in bounded pieces, what the transport delivered and `write`
deflates, with one flush of the deflater per turn. Under TLS the order is TCP, TLS,
deflate, protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, cast

from poczta.net.deflate import DeflateLayer
from poczta.net.tls import TlsInfo

_READ_HIGH_WATER = 256 * 1024


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class ConnectionClosed(Exception):
    """The peer went away while we were writing."""


class Connection(asyncio.Protocol):
    """The transport side of a session: `read`, `write`, `drain`, `start_tls`, `close`."""

    def __init__(self, on_made: Callable[[Connection], None] | None = None) -> None:
        self._on_made = on_made
        self.interrupted = False
        self._handshaking = False
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.peer_port = 0
        self.local_port = 0
        self.tls: TlsInfo | None = None
        self._inbox = bytearray()
        self._eof = False
        self._lost = False
        self._reading_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self.deflate: DeflateLayer | None = None
        self._unsent: list[bytes] = []  # written this turn, not yet given to the transport
        self._flush_scheduled = False
        # Kept: asyncio.get_running_loop() makes a getpid() system call on every call.
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()

    # -- asyncio.Protocol callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        self.local_port = int(sock[1])
        self.tls = TlsInfo.from_ssl_object(transport.get_extra_info("ssl_object"))
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self._inbox += data
        if len(self._inbox) > _READ_HIGH_WATER and self.transport and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._unsent.clear()
        self._eof = True
        self._wake_reader()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake_reader(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    # -- the session's side -----------------------------------------------------------
    @property
    def is_loopback(self) -> bool:
        return self.peer_ip.startswith("127.") or self.peer_ip in ("::1", "::ffff:127.0.0.1")

    def interrupt(self) -> None:
        """Ask the session to finish (graceful shutdown): a waiting `read` returns b"" once."""
        self.interrupted = True
        self._wake_reader()

    @property
    def handshaking(self) -> bool:
        """True while `start_tls` waits for the client's handshake."""
        return self._handshaking

    async def read(self, timeout: float | None) -> bytes | None:
        """Everything received so far (waiting for at least one byte); None at end of stream.

        Returns b"" when woken by `interrupt()` with nothing received; raises TimeoutError
        when nothing arrives within `timeout` seconds. With compression on, returns at most
        the layer's `max_chunk` inflated octets and raises `DeflateError` on bad input.
        """
        if self.deflate is not None:
            return await self._read_inflated(self.deflate, timeout)
        return await self._read_raw(timeout)

    async def _read_inflated(self, layer: DeflateLayer, timeout: float | None) -> bytes | None:
        if layer.pending:
            return layer.inflate()
        end = None if timeout is None else self.loop.time() + timeout
        while True:
            wait = None if end is None else max(0.0, end - self.loop.time())
            data = await self._read_raw(wait)
            if not data:
                return data
            inflated = layer.inflate(data)
            if inflated:
                return inflated
            # only block boundaries or flush markers: nothing for the session yet

    async def _read_raw(self, timeout: float | None) -> bytes | None:
        if not self._inbox and not self._eof:
            loop = self.loop
            waiter = self._data_waiter = loop.create_future()
            # A timer handle is much cheaper than asyncio.wait_for, which makes a task per call.
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                self._data_waiter = None
                if timer is not None:
                    timer.cancel()
        if not self._inbox:
            return None if self._eof else b""
        data = bytes(self._inbox)
        self._inbox.clear()
        if self._reading_paused and self.transport is not None and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    @property
    def compressed(self) -> bool:
        return self.deflate is not None

    def start_compression(self, received: bytes, layer: DeflateLayer | None = None) -> None:
        """Inflate input and deflate output from now on; `received` is compressed input the
        protocol layer had already read (it comes before anything still in the buffer).
        What was written before goes out uncompressed."""
        self._flush()
        self._inbox[:0] = received
        self.deflate = layer or DeflateLayer()

    def write(self, data: bytes) -> None:
        if self.transport is None or self._lost or not data:
            return
        self._unsent.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Give the transport what this turn wrote (deflated and flushed under COMPRESS)."""
        self._flush_scheduled = False
        if not self._unsent or self.transport is None or self._lost:
            return
        data = self._unsent[0] if len(self._unsent) == 1 else b"".join(self._unsent)
        self._unsent.clear()
        if self.deflate is not None:
            data = self.deflate.deflate(data) + self.deflate.flush()
        self.transport.write(data)

    async def drain(self) -> None:
        self._flush()
        if self._lost:
            raise ConnectionClosed()
        if self._writing_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
            if self._lost:
                raise ConnectionClosed()

    async def start_tls(self, context: ssl.SSLContext, timeout: float = 30.0) -> TlsInfo | None:
        """Upgrade to TLS as server. Anything the client sent before the handshake is dropped."""
        assert self.transport is not None
        self._flush()  # the last plaintext answer goes out before the handshake
        self._inbox.clear()
        loop = self.loop
        self._handshaking = True
        try:
            new_transport = await loop.start_tls(
                self.transport, self, context, server_side=True, ssl_handshake_timeout=timeout
            )
        finally:
            self._handshaking = False
        if new_transport is None:
            raise ConnectionClosed()
        self.transport = new_transport
        self.tls = TlsInfo.from_ssl_object(new_transport.get_extra_info("ssl_object"))
        return self.tls

    def close(self) -> None:
        if self.transport is not None and not self._lost:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.abort()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def extra(self, name: str) -> Any:
        return self.transport.get_extra_info(name) if self.transport is not None else None
