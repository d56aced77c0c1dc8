"""The SMTP client core against real peers over loopback, driven by a minimal asyncio loop.

Peers: poczta's own server core (PIPELINING and CHUNKING, so BDAT), aiosmtpd (no
PIPELINING: lock-step DATA) and, when installed, Postfix's smtp-sink (pipelined DATA).
STARTTLS is off (policy NONE) throughout.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
from aiosmtpd.controller import Controller

from poczta.smtp import Accept, MessageReceived, Reply, Role, SmtpServer
from poczta.smtp import Close as ServerClose
from poczta.smtp.client import SmtpClient
from poczta.smtp.client_events import (
    ClientEvent,
    Close,
    DeliveryStatus,
    OutboundMessage,
    SendBody,
    TlsPolicy,
    TransactionResult,
    Write,
)
from tests.e2e.harness import free_port

BODY = b"Subject: loopback\r\n\r\n.leading dot\r\nbare\nlf\r\n" + b"x" * 70 + b"\r\n"
STORED = b"Subject: loopback\r\n\r\n.leading dot\r\nbare\r\nlf\r\n" + b"x" * 70 + b"\r\n"
WAIT_LIMIT = 10.0  # a test bound on every wait, far below the RFC timeouts


async def deliver(port: int, messages: list[OutboundMessage]) -> list[TransactionResult]:
    """A test-only driver: one connection, the messages in turn, then QUIT."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = SmtpClient(hostname="client.test", peer="loopback", tls_policy=TlsPolicy.NONE)
    pending = list(messages)
    results: list[TransactionResult] = []

    async def handle(events: list[ClientEvent]) -> None:
        for event in events:
            if isinstance(event, Write):
                writer.write(event.data)
                await writer.drain()
            elif isinstance(event, SendBody):
                for piece in event.chunks:
                    writer.write(piece)
                    await writer.drain()
            elif isinstance(event, TransactionResult):
                results.append(event)
                if client.idle:
                    await handle(client.send(pending.pop(0)) if pending else client.quit())
            elif isinstance(event, Close):
                writer.close()

    await handle(client.send(pending.pop(0)))
    while not client.closed:
        timeout = min(client.waiting_for.timeout or WAIT_LIMIT, WAIT_LIMIT)
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout)
        except TimeoutError:
            await handle(client.timed_out())
            break
        await handle(client.receive(data) if data else client.eof())
    return results


@asynccontextmanager
async def poczta_core_server(received: list[bytes]) -> AsyncIterator[int]:
    """poczta's own SMTP server core behind a minimal accept-everything loop."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        core = SmtpServer(hostname="mx.test", role=Role.MX)
        pending = list(core.start())
        while True:
            while pending:
                event = pending.pop(0)
                if isinstance(event, Reply):
                    writer.write(event.encode())
                elif isinstance(event, ServerClose):
                    await writer.drain()
                    writer.close()
                    return
                elif isinstance(event, MessageReceived):
                    received.append(event.data)
                    pending[:0] = core.answer(Accept())
                elif hasattr(event, "forward_path") or hasattr(event, "reverse_path"):
                    pending[:0] = core.answer(Accept())
            await writer.drain()
            data = await reader.read(65536)
            pending = core.receive(data) if data else core.eof()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def statuses(result: TransactionResult) -> dict[str, DeliveryStatus]:
    return {r.address: r.outcome.status for r in result.results}


def test_two_messages_to_poczta_own_server_core() -> None:
    received: list[bytes] = []
    first = OutboundMessage.to("a@client.test", ["b@mx.test", "c@mx.test"], BODY)
    second = OutboundMessage.to("a@client.test", ["d@mx.test"], b"second\r\n")

    async def main() -> list[TransactionResult]:
        async with poczta_core_server(received) as port:
            return await deliver(port, [first, second])

    results = asyncio.run(main())
    assert [statuses(r) for r in results] == [
        {"b@mx.test": DeliveryStatus.DELIVERED, "c@mx.test": DeliveryStatus.DELIVERED},
        {"d@mx.test": DeliveryStatus.DELIVERED},
    ]
    assert received == [STORED, b"second\r\n"]


class _Collect:
    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.envelopes.append(
            (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)  # type: ignore[attr-defined]
        )
        return "250 2.0.0 Message accepted"


def test_a_message_to_aiosmtpd_without_pipelining() -> None:
    handler = _Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        message = OutboundMessage.to("a@client.test", ["b@peer.test"], BODY)
        [result] = asyncio.run(deliver(controller.port, [message]))
    finally:
        controller.stop()
    assert statuses(result) == {"b@peer.test": DeliveryStatus.DELIVERED}
    assert handler.envelopes == [("a@client.test", ["b@peer.test"], STORED)]


@contextmanager
def smtp_sink() -> Iterator[int]:
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not shutil.which(binary):
        pytest.skip("smtp-sink (Debian postfix) is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-u", "nobody", "-c", f"127.0.0.1:{port}", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.peer
def test_messages_to_postfix_smtp_sink() -> None:
    large = b"line of text\r\n" * 20_000  # several body pieces
    with smtp_sink() as port:
        results = asyncio.run(
            deliver(
                port,
                [
                    OutboundMessage.to("a@client.test", ["b@sink.test", "c@sink.test"], BODY),
                    OutboundMessage.to("a@client.test", ["d@sink.test"], large),
                ],
            )
        )
    assert [statuses(r) for r in results] == [
        {"b@sink.test": DeliveryStatus.DELIVERED, "c@sink.test": DeliveryStatus.DELIVERED},
        {"d@sink.test": DeliveryStatus.DELIVERED},
    ]
