"""TCP listeners: accept, connection limits, implicit TLS, session timeouts, graceful stop.

The per-IP limit is a `ConnectionGate`: `ConnectionLimiter` counts in this process's
memory; a server of several processes or nodes counts in the store instead
(`poczta.leases.SharedConnectionLimiter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from poczta.logs import FloodLimit, log
from poczta.net.connection import Connection, ConnectionClosed
from poczta.net.tls import ReloadableContext

SessionHandler = Callable[[Connection], Awaitable[None]]
_STUCK_SESSION_GRACE = 30.0

# Refusals come as fast as a client can connect; the rest of a burst becomes one count.
_REFUSALS = FloodLimit()
BACKLOG = 1024


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on `host` (an IP address or a name; IPv6 without brackets
    only) and `port`. `reuse_port` lets the sockets of several worker processes share the
    address (the kernel spreads connections over them); off for a single process, so a
    port already taken fails loudly. OSError (socket.gaierror for a name) on failure."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    fam, kind, proto, _name, sockaddr = socket.getaddrinfo(
        host, port, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(fam, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if fam == socket.AF_INET6:  # "[::]:25" next to "0.0.0.0:25" must not clash
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class ServiceReplies:
    """The protocol's words for what the listener must say on its own."""

    too_many: bytes  # over a connection limit, sent before closing
    timeout: bytes  # the whole-session time limit ran out (and the session did not end itself)


class ConnectionGate(Protocol):
    """Open connections per client IP, shared by every listener of a server."""

    async def acquire(self, ip: str) -> bool:
        """Count one more connection of `ip`; False (nothing counted) when over the limit."""
        ...

    async def release(self, ip: str) -> None:
        """One connection of `ip` that `acquire` counted has ended."""
        ...


class ConnectionLimiter:
    """Counts open connections per client IP in this process (a `ConnectionGate`)."""

    def __init__(self, max_per_ip: int) -> None:
        self.max_per_ip = max_per_ip
        self._open: Counter[str] = Counter()

    async def acquire(self, ip: str) -> bool:
        if self._open[ip] >= self.max_per_ip:
            return False
        self._open[ip] += 1
        return True

    async def release(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]


@dataclass
class ListenerSettings:
    service: str
    host: str
    port: int
    implicit_tls: bool
    max_connections: int
    session_timeout: float
    tls_handshake_timeout: float = 15.0


class Listener:
    """One bound address of one service; runs `handler` for each admitted connection."""

    def __init__(
        self,
        settings: ListenerSettings,
        handler: SessionHandler,
        replies: ServiceReplies,
        limiter: ConnectionGate,
        tls: ReloadableContext | None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.replies = replies
        self.limiter = limiter
        self.tls = tls
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], Connection] = {}

    @property
    def address(self) -> tuple[str, int]:
        if self._server is not None and self._server.sockets:
            host, port = self._server.sockets[0].getsockname()[:2]
            return str(host), int(port)
        return self.settings.host, self.settings.port

    async def start(self, sock: socket.socket) -> None:
        """Serve on `sock`, bound by `bind_socket` (perhaps before the process gave up root)."""
        loop = asyncio.get_running_loop()
        implicit_tls = self.settings.implicit_tls
        if implicit_tls and self.tls is None:
            raise ValueError(f"{self.settings.service} needs a TLS certificate")
        # Implicit TLS is terminated by the transport itself, so no byte of the ClientHello can
        # race a later upgrade; the session starts once the handshake is done.
        self._server = await loop.create_server(
            lambda: Connection(on_made=self._accepted),
            sock=sock,
            backlog=BACKLOG,
            ssl=self.tls.context if implicit_tls and self.tls else None,
            ssl_handshake_timeout=self.settings.tls_handshake_timeout if implicit_tls else None,
        )

    def _accepted(self, conn: Connection) -> None:
        task = conn.loop.create_task(self._serve(conn))
        self._sessions[task] = conn
        task.add_done_callback(self._sessions.pop)

    async def _serve(self, conn: Connection) -> None:
        ip = conn.peer_ip
        over = len(self._sessions) > self.settings.max_connections
        if over or not await self.limiter.acquire(ip):
            _REFUSALS.log(
                "connection.refused",
                key=("service", "reason"),
                service=self.settings.service,
                ip=ip,
                reason="limit",
            )
            conn.write(self.replies.too_many)
            conn.close()
            return
        try:
            # Sessions end themselves at session_timeout between reads (net.deadlines), never
            # in the middle of a delivery; this catches one stuck elsewhere (a client that
            # does not read what we write, a store that does not answer).
            async with asyncio.timeout(self.settings.session_timeout + _STUCK_SESSION_GRACE):
                await self.handler(conn)
        except TimeoutError:
            conn.write(self.replies.timeout)
            log("session.timeout", service=self.settings.service, ip=ip)
        except (ConnectionClosed, ConnectionError, OSError):
            pass
        except Exception:  # a bug in a session must not take the listener down
            logging.getLogger("poczta").exception("session failed")
        finally:
            conn.close()
            await self.limiter.release(ip)

    async def stop(self, grace: float) -> None:
        """Stop accepting, ask every session to finish, abort what is left after `grace`."""
        if self._server is not None:
            self._server.close()
        for task, conn in list(self._sessions.items()):
            if conn.handshaking:  # nothing to finish yet; the handshake would only delay us
                task.cancel()
            conn.interrupt()
        tasks = list(self._sessions)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                self._sessions[task].abort()
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
