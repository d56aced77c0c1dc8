"""A scriptable SMTP server for the queue tests: poczta's server core behind an asyncio loop.

`ScriptedMx` answers each RCPT and each end of data from the functions it is given
(accept by default) and records connections, envelopes and bodies. With
`max_recipients` it answers 452 4.5.3 to each RCPT past that many in one transaction
(`transactions` counts MAIL FROM commands). It listens on a loopback address and
port of the test's choice (several on one port, as MX hosts are).
Given a server `tls` context it offers STARTTLS with it, records each message's TLS
version ("" when it came in plaintext), and `after_tls` keeps what each client sent
once TLS was up. With a `gate`, each end of data after the first `gate_after` messages
waits until the gate is set (`waiting` counts those held): a message whose client has
gone meanwhile is not received (`abandoned`), since that client never hears the answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from poczta.net.tls import TlsInfo
from poczta.smtp import Accept, MessageReceived, Reply, Role, SmtpServer
from poczta.smtp import Close as ServerClose
from poczta.smtp.events import Answer, CheckRecipient, CheckSender, Reject, StartTls

RcptAnswer = Callable[[str], Answer]
DataAnswer = Callable[[int], Answer]  # by the number of messages received before


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    tls: str = ""


@dataclass
class ScriptedMx:
    rcpt: RcptAnswer = lambda _address: Accept()
    data: DataAnswer = lambda _count: Accept()
    connections: int = 0
    messages: list[Received] = field(default_factory=list)
    attempts: int = 0  # ends of data seen, accepted or not
    tls: ssl.SSLContext | None = None
    after_tls: list[bytes] = field(default_factory=list)  # per TLS session, what came in
    closed: int = 0  # sessions that ended
    max_recipients: int | None = None
    transactions: int = 0  # MAIL FROM commands seen
    gate: asyncio.Event | None = None
    gate_after: int = 0
    waiting: int = 0  # ends of data held at the gate now
    abandoned: int = 0  # messages whose client left while they were held

    async def settled(self) -> None:
        """Return once every session so far has ended."""
        while self.closed < self.connections:
            await asyncio.sleep(0.01)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        core = SmtpServer(hostname="mx.peer.test", role=Role.MX, tls_available=bool(self.tls))
        pending = list(core.start())
        tls = ""
        taken = 0  # recipients accepted in the current transaction
        try:
            while True:
                while pending:
                    event = pending.pop(0)
                    if isinstance(event, Reply):
                        writer.write(event.encode())
                    elif isinstance(event, ServerClose):
                        await writer.drain()
                        return
                    elif isinstance(event, CheckRecipient):
                        if self.max_recipients is not None and taken >= self.max_recipients:
                            answer: Answer = Reject(452, "4.5.3", "Too many recipients")
                        else:
                            answer = self.rcpt(event.forward_path)
                        taken += isinstance(answer, Accept)
                        pending[:0] = core.answer(answer)
                    elif isinstance(event, CheckSender):
                        taken = 0
                        self.transactions += 1
                        pending[:0] = core.answer(Accept())
                    elif isinstance(event, StartTls) and self.tls is not None:
                        await writer.drain()
                        try:
                            await writer.start_tls(self.tls)
                        except (OSError, ssl.SSLError):
                            return  # the client refused the certificate, say
                        info = TlsInfo.from_ssl_object(writer.get_extra_info("ssl_object"))
                        assert info is not None
                        tls = info.version
                        self.after_tls.append(b"")
                        pending[:0] = core.tls_started(info)
                    elif isinstance(event, MessageReceived):
                        if not await self._through_gate(reader):
                            self.abandoned += 1
                            return
                        answer = self.data(self.attempts)
                        self.attempts += 1
                        if isinstance(answer, Accept):
                            envelope = event.envelope
                            rcpts = [r.address for r in envelope.recipients]
                            received = Received(envelope.mail_from, rcpts, event.data, tls)
                            self.messages.append(received)
                        pending[:0] = core.answer(answer)
                await writer.drain()
                data = await reader.read(65536)
                if self.after_tls and writer.get_extra_info("ssl_object") is not None:
                    self.after_tls[-1] += data
                pending = core.receive(data) if data else core.eof()
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()
            self.closed += 1

    async def _through_gate(self, reader: asyncio.StreamReader) -> bool:
        """Wait at the gate if there is one; False when the client left meanwhile."""
        if self.gate is None or len(self.messages) < self.gate_after or self.gate.is_set():
            return True
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        # The stream took in the end of a connection in the same turn of the loop as the
        # opening (or before), when it came first: it is seen here.
        return not (reader.at_eof() or reader.exception() is not None)


def reject(code: int, enhanced: str, text: str) -> Reject:
    return Reject(code, enhanced, text)


@asynccontextmanager
async def serving(mx: ScriptedMx, host: str, port: int) -> AsyncIterator[int]:
    """`mx` listening on host:port (port 0: any); yields the port."""
    server = await asyncio.start_server(mx.session, host, port)
    async with server:
        yield server.sockets[0].getsockname()[1]
