"""The committer: one process that group-commits the deliveries of every worker.

With several worker processes each had its own writer thread: two group commits, two
filesystem flushes and two writers taking turns at the database, each sharing its
process's GIL with an event loop busy with SMTP sessions. The committer is a process of
its own, started by the master next to the workers (`poczta.workers`), with one thread
and no event loop: it waits for requests from the workers' sockets, takes all that have
arrived as one batch, runs it through a `Writer` without a thread (place the staged
bodies, one transaction, one flush) and answers every request of it. Requests that
arrive meanwhile wait in the socket buffers for the next batch, which is what makes the
batches big.

Only deliveries go through it, the hot path; every other change still runs on the
worker's own writer thread, which takes turns with the committer through the write
lock. A worker stages the body in its own temp directory as before, closes the file and
sends its name with the rows to write; nothing of the body crosses the socket unless it
was already stored (then it is sent, for the rare case that it must be written again).
A worker that cannot reach the committer delivers through its own writer, and tries the
committer again a second later: the committer is a speed-up, never a single point of
failure. A request in flight when the connection breaks gets `StoreUnavailable`.

The socket lives in Linux's abstract namespace (no path length limit, nothing left on
disk), named after the database; since such a socket has no file permissions, the
committer only talks to processes of its own user (SO_PEERCRED). The wire format is a
frame per request and per answer: two big-endian 32-bit lengths, a JSON array, raw bytes.
Written by hand because it is a few lines and private to one server.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from poczta.store.base import (
    Accepted,
    Delivered,
    DeliveryTarget,
    MailboxId,
    NotFound,
    Outbound,
    QueueId,
    RecipientDsn,
    StoreError,
    StoreUnavailable,
    UserId,
)
from poczta.store.codec import MessageColumns
from poczta.store.sqlite import messages
from poczta.store.sqlite.blobs import BlobFiles, StagedBlob
from poczta.store.sqlite.writer import Dispatch, Pending, Writer

__all__ = [
    "CommitterClient",
    "CommitterLink",
    "DeliveryRequest",
    "FrameReader",
    "committer_address",
    "install_stop_signals",
    "request_for",
    "run_committer",
    "serve_committer",
]

log = logging.getLogger("poczta.store")

_HEADER = struct.Struct(">II")
MAX_FRAME = 256 * 1024 * 1024  # a body sent inline is at most one message
_ERROR_KINDS: dict[str, type[StoreError]] = {
    "unavailable": StoreUnavailable,
    "notfound": NotFound,
    "error": StoreError,
}


def committer_address(db_path: Path | str) -> str:
    """The abstract socket name of the committer of the database at `db_path`."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(db_path))).hexdigest()[:32]
    return f"\0poczta-committer-{digest}"


def _frame(header: list[Any], data: bytes = b"") -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(body), len(data)) + body + data


class FrameReader:
    """Cuts a byte stream into (header, data) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[list[Any], bytes]]:
        self._buffer += chunk
        frames: list[tuple[list[Any], bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            size, data_size = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size + data_size
            if size + data_size > MAX_FRAME:
                raise ValueError(f"frame of {size + data_size} bytes")
            if len(self._buffer) < end:
                break
            header = json.loads(self._buffer[_HEADER.size : _HEADER.size + size])
            if not isinstance(header, list):
                raise ValueError("frame is not an array")
            frames.append((header, bytes(self._buffer[_HEADER.size + size : end])))
            del self._buffer[:end]
        return frames


@dataclass(frozen=True)
class DeliveryRequest:
    """What a worker asks the committer to store: a staged (or already stored) body and rows."""

    digest: str
    size: int
    temp: str | None  # the staged, closed temp file; None: the body is stored already
    columns: MessageColumns
    internal_date: str
    targets: tuple[DeliveryTarget, ...]
    outbound: Outbound | None
    data: bytes = b""  # only when `temp` is None

    def encode(self, request_id: int) -> bytes:
        targets = [[t.user_id, t.mailbox, sorted(t.flags)] for t in self.targets]
        outbound = _encode_outbound(self.outbound) if self.outbound else None
        header = [request_id, self.digest, self.size, self.temp, list(self.columns)]
        header += [self.internal_date, targets, outbound]
        return _frame(header, self.data if self.temp is None else b"")

    @classmethod
    def decode(cls, header: list[Any], data: bytes) -> tuple[int, DeliveryRequest]:
        request_id, digest, size, temp, columns, internal_date, targets, outbound = header
        request = cls(
            str(digest),
            int(size),
            None if temp is None else str(temp),
            tuple(columns),
            str(internal_date),
            tuple(DeliveryTarget(UserId(int(u)), str(m), frozenset(f)) for u, m, f in targets),
            _decode_outbound(outbound) if outbound else None,
            data,
        )
        return int(request_id), request


def _encode_outbound(outbound: Outbound) -> list[Any]:
    dsn = {a: [list(d.notify) if d.notify else None, d.orcpt] for a, d in outbound.dsn.items()}
    return [outbound.sender, list(outbound.recipients), outbound.envid, outbound.ret, dsn]


def _decode_outbound(fields: list[Any]) -> Outbound:
    sender, recipients, envid, ret, dsn = fields
    return Outbound(
        str(sender),
        tuple(recipients),
        envid,
        ret,
        {str(a): RecipientDsn(tuple(n) if n else None, o) for a, (n, o) in dsn.items()},
    )


# --------------------------------------------------------------------------- the process


@dataclass(eq=False)  # hashed by identity: one per connection
class _Peer:
    sock: socket.socket
    frames: FrameReader = field(default_factory=FrameReader)


def serve_committer(
    writer_factory: Callable[[Dispatch], Writer],
    blobs: BlobFiles,
    address: str,
    stop: Callable[[], bool],
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Answer delivery requests on `address` until `stop()` is true (checked each second
    and after every batch); the writer is made by `writer_factory(dispatch)`."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    peers: dict[socket.socket, _Peer] = {}
    writer = writer_factory(lambda batch, results: _answer(peers, batch, results))
    if ready is not None:
        ready()
    try:
        while not stop():
            batch: list[Pending] = []
            for key, _ in selector.select(timeout=1.0):
                if key.data is None:
                    _accept(listener, selector, peers)
                else:
                    batch.extend(_receive(key.data, selector, peers, blobs))
            if batch:
                writer.run_batch(batch)
    finally:
        writer.close()
        for peer in list(peers.values()):
            peer.sock.close()
        selector.close()
        listener.close()


def _accept(
    listener: socket.socket, selector: selectors.BaseSelector, peers: dict[socket.socket, _Peer]
) -> None:
    try:
        sock, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid():
        log.warning("committer refused a connection from uid %d", uid)
        sock.close()
        return
    sock.setblocking(False)
    peer = _Peer(sock)
    peers[sock] = peer
    selector.register(sock, selectors.EVENT_READ, peer)


def _receive(
    peer: _Peer,
    selector: selectors.BaseSelector,
    peers: dict[socket.socket, _Peer],
    blobs: BlobFiles,
) -> list[Pending]:
    batch: list[Pending] = []
    try:
        chunk = peer.sock.recv(1 << 20)
        frames = peer.frames.feed(chunk) if chunk else []
        requests = [DeliveryRequest.decode(header, data) for header, data in frames]
    except (BlockingIOError, InterruptedError):
        return batch
    except (OSError, ValueError, TypeError, IndexError) as exc:
        log.warning("committer dropped a worker connection: %s", exc)
        chunk = b""
    if not chunk:  # closed, broken or garbled: the worker fails what it is waiting for
        selector.unregister(peer.sock)
        peers.pop(peer.sock, None)
        peer.sock.close()
        return batch
    for request_id, request in requests:
        staged = StagedBlob(request.digest, blobs.final_name(request.digest), None, request.temp)
        job = messages.deliver_job(
            request.digest,
            request.size,
            request.data or None,
            request.columns,
            request.internal_date,
            request.targets,
            request.outbound,
        )
        batch.append(Pending(job, None, staged, (peer, request_id)))
    return batch


def _answer(
    peers: dict[socket.socket, _Peer], batch: list[Pending], results: list[tuple[bool, Any]]
) -> None:
    replies: dict[_Peer, list[bytes]] = {}
    for pending, (ok, value) in zip(batch, results, strict=True):
        peer, request_id = pending.reply
        if ok:
            delivered = [[d.mailbox_id, d.uid] for d in value.delivered]
            frame = _frame([request_id, True, delivered, value.queue_id])
        else:
            kind = "unavailable" if isinstance(value, StoreUnavailable) else "error"
            kind = "notfound" if isinstance(value, NotFound) else kind
            frame = _frame([request_id, False, kind, str(value)])
        replies.setdefault(peer, []).append(frame)
    for peer, frames in replies.items():
        if peer.sock not in peers:
            continue  # gone meanwhile
        try:
            peer.sock.settimeout(5.0)  # blocking: answers are small, a worker always reads them
            peer.sock.sendall(b"".join(frames))
            peer.sock.setblocking(False)
        except OSError as exc:
            log.warning("committer could not answer a worker: %s", exc)


def install_stop_signals() -> Callable[[], bool]:
    """SIGTERM/SIGINT end the committer after its current batch; returns the check."""
    stopped: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return lambda: bool(stopped)


def run_committer(
    db_path: Path, blob_dir: Path, sync: str, *, ready: Callable[[], None] | None = None
) -> None:
    """The committer process of the database at `db_path`: prepare its files (as a store
    opening does), then serve until SIGTERM/SIGINT."""
    from poczta.store.sqlite.store import prepare_files  # the store imports this module

    stop = install_stop_signals()
    blobs = prepare_files(db_path, blob_dir, sync)
    try:
        serve_committer(
            lambda dispatch: Writer(db_path, blobs, dispatch=dispatch),
            blobs,
            committer_address(db_path),
            stop,
            ready=ready,
        )
    finally:
        blobs.close()


# --------------------------------------------------------------------------- the workers' side


class CommitterClient(asyncio.Protocol):
    """A worker's connection to the committer: requests out, answers matched by id."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._frames = FrameReader()
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[list[Any]]] = {}

    @classmethod
    async def connect(cls, address: str) -> CommitterClient:
        """Connect, or raise OSError when no committer listens there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.connect(address)  # a local socket connects at once or fails
        except OSError:
            sock.close()
            raise
        client = cls()
        await asyncio.get_running_loop().create_unix_connection(lambda: client, sock=sock)
        return client

    @property
    def connected(self) -> bool:
        return self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except (ValueError, TypeError) as exc:
            self._fail(f"garbled answer from the committer: {exc}")
            return
        for header, _ in frames:
            future = self._waiting.pop(int(header[0]), None)
            if future is not None and not future.done():
                future.set_result(header[1:])

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("connection to the store committer lost")

    def _fail(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(StoreUnavailable(reason))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def deliver(self, request: DeliveryRequest) -> Accepted:
        if self._transport is None:
            raise StoreUnavailable("not connected to the store committer")
        request_id = next(self._ids)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._transport.write(request.encode(request_id))
        answer = await future
        if not answer[0]:
            raise _ERROR_KINDS.get(str(answer[1]), StoreError)(str(answer[2]))
        delivered = tuple(Delivered(MailboxId(int(m)), int(u)) for m, u in answer[1])
        queue_id = None if answer[2] is None else QueueId(int(answer[2]))
        return Accepted(delivered, queue_id)


class CommitterLink:
    """The worker's way to the committer: connects lazily, and after a failure not again
    for `RETRY_SECONDS` (meanwhile the worker's own writer delivers)."""

    RETRY_SECONDS = 1.0

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: CommitterClient | None = None
        self._connecting: asyncio.Future[CommitterClient | None] | None = None
        self._next_try = 0.0

    async def client(self) -> CommitterClient | None:
        """The connected client, or None: then the caller delivers by itself."""
        if self._client is not None and self._client.connected:
            return self._client
        if self._connecting is not None:  # deliveries arriving meanwhile wait for it
            return await asyncio.shield(self._connecting)
        now = time.monotonic()
        if now < self._next_try:
            return None
        self._next_try = now + self.RETRY_SECONDS
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            self._client = await CommitterClient.connect(self.address)
        except OSError:
            self._client = None
        finally:
            self._connecting.set_result(self._client)
            self._connecting = None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def request_for(
    staged: StagedBlob,
    data: bytes,
    columns: MessageColumns,
    internal_date: str,
    targets: Sequence[DeliveryTarget],
    outbound: Outbound | None,
) -> DeliveryRequest:
    """The request for a staged body; its temp file is closed for the committer to place."""
    staged.detach()
    return DeliveryRequest(
        staged.digest,
        len(data),
        staged.temp,
        columns,
        internal_date,
        tuple(targets),
        outbound,
        data if staged.temp is None else b"",
    )
