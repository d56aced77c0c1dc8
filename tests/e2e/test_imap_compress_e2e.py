"""IMAP COMPRESS=DEFLATE against `poczta serve`: a compressed session over 993 and over
STARTTLS, the reader's limits after inflation, a deflate bomb and corrupt input."""

from __future__ import annotations

import random
import re
import smtplib
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.compressed_imap import RAW_DEFLATE, CompressedImap
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, make_server

pytestmark = pytest.mark.e2e

BOB = "bob@example.test"
WORDS = ["mail", "server", "deflate", "window", "literal", "mailbox", "folder", "header"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    # one process, so the session's memory is this process's
    srv = make_server(
        tmp_path_factory.mktemp("compress"),
        services=("smtp", "imap", "imaps"),
        top_config="workers = 1\n",
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def deliver(srv: PocztaServer, subject: str, body: bytes) -> None:
    message = f"From: carol@remote.test\r\nTo: {BOB}\r\nSubject: {subject}\r\n\r\n".encode() + body
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as client:
        client.sendmail("carol@remote.test", [BOB], message)


def text_body(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(12)).encode() + b"\r\n"
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def imaps_client(srv: PocztaServer) -> CompressedImap:
    raw = socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=10)
    client = CompressedImap(client_tls().wrap_socket(raw, server_hostname="localhost"))
    client.read_until(rb"\* OK[^\r\n]*\r\n")
    return client


def logged_in(srv: PocztaServer) -> CompressedImap:
    client = imaps_client(srv)
    assert b"a OK" in client.command("a", f"LOGIN {BOB} {PASSWORDS[BOB]}")
    return client


def test_a_compressed_session_reads_appends_and_idles(server: PocztaServer) -> None:
    body = text_body(1 << 20, seed=1)
    deliver(server, "large", body)
    client = imaps_client(server)
    assert b"COMPRESS=DEFLATE" not in client.command("c", "CAPABILITY")
    assert b"COMPRESS=DEFLATE" in client.command("a", f"LOGIN {BOB} {PASSWORDS[BOB]}")
    assert b"z OK DEFLATE active" in client.compress()
    assert b"y NO [COMPRESSIONACTIVE]" in client.command("y", "COMPRESS DEFLATE")
    selected = client.command("s", "SELECT INBOX")
    exists = int(re.search(rb"\* (\d+) EXISTS", selected).group(1))  # type: ignore[union-attr]

    before = client.wire_in
    fetched = client.command("f", f"FETCH {exists} BODY.PEEK[TEXT]")
    size = int(re.search(rb"BODY\[TEXT\] \{(\d+)\}\r\n", fetched).group(1))  # type: ignore[union-attr]
    start = fetched.index(b"}\r\n") + 3
    assert fetched[start : start + size] == body
    assert client.wire_in - before < len(body) // 2  # the body crossed the wire compressed

    message = b"Subject: appended compressed\r\n\r\n" + text_body(20_000, seed=2)
    appended = client.append("p", "INBOX", message)
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", appended).group(1))  # type: ignore[union-attr]
    again = client.command("g", f"UID FETCH {uid} BODY.PEEK[]")
    assert message in again

    client.send(b"i IDLE\r\n")
    client.read_until(rb"\+ idling\r\n")
    deliver(server, "while idle", b"Hello.\r\n")
    assert re.search(rb"\* \d+ EXISTS", client.read_until(rb"\* \d+ EXISTS\r\n"))
    client.send(b"DONE\r\n")
    client.tagged("i")
    logout = client.command("o", "LOGOUT")
    assert b"* BYE" in logout and b"o OK" in logout


def test_compression_inside_starttls(server: PocztaServer) -> None:
    raw = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=10)
    plain = CompressedImap(raw)
    plain.read_until(rb"\* OK[^\r\n]*\r\n")
    assert b"t OK" in plain.command("t", "STARTTLS")
    tls = client_tls().wrap_socket(raw, server_hostname="localhost")
    client = CompressedImap(tls)
    assert b"a OK" in client.command("a", f"LOGIN {BOB} {PASSWORDS[BOB]}")
    # a command pipelined right behind COMPRESS is already compressed
    client.send(b"z COMPRESS DEFLATE\r\n")
    assert b"z OK" in client.tagged("z")
    client.inflater = zlib.decompressobj(RAW_DEFLATE)
    client.deflater = zlib.compressobj(6, zlib.DEFLATED, RAW_DEFLATE)
    listed = client.command("l", 'LIST "" "*"')
    assert b'"INBOX"' in listed or b" INBOX\r\n" in listed
    assert b"l OK" in listed


def test_compress_needs_a_login(server: PocztaServer) -> None:
    client = imaps_client(server)
    assert b"z BAD" in client.command("z", "COMPRESS DEFLATE")
    assert b"n OK" in client.command("n", "NOOP")  # still uncompressed


def test_commands_refused_in_this_state_leave_the_session_going(server: PocztaServer) -> None:
    client = logged_in(server)  # each of these would pause the reader had it been accepted
    assert b"t BAD" in client.command("t", "STARTTLS")
    assert b"u BAD" in client.command("u", "AUTHENTICATE PLAIN")
    assert b"n OK" in client.command("n", "NOOP")


def test_an_unknown_mechanism_is_refused(server: PocztaServer) -> None:
    client = logged_in(server)
    assert b"x BAD" in client.command("x", "COMPRESS LZMA")
    assert b"n OK" in client.command("n", "NOOP")


def test_line_limits_apply_to_the_inflated_input(server: PocztaServer) -> None:
    client = logged_in(server)
    client.compress()
    client.send(b"long NOOP " + b"x" * 200_000 + b"\r\n")  # inflates past the line limit
    assert b"long BAD [TOOBIG]" in client.tagged("long")
    assert b"n OK" in client.command("n", "NOOP")


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_a_deflate_bomb_is_refused_with_bounded_memory(server: PocztaServer) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    client = logged_in(server)
    client.compress()
    # 1 MiB of 'a' deflates to ~1 KiB; after a full flush the next block deflates the same
    deflater = zlib.compressobj(9, zlib.DEFLATED, RAW_DEFLATE)
    block = deflater.compress(b"a" * (1 << 20)) + deflater.flush(zlib.Z_FULL_FLUSH)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak RSS count
    baseline = peak_rss_kib(pid)
    client.send_raw(block * 64)  # ~64 KiB that would inflate to 64 MiB
    answer = client.read_to_end()
    assert b"* BYE" in answer and client.closed
    assert peak_rss_kib(pid) - baseline < 8 * 1024  # KiB: far below what it would inflate to
    assert b"n OK" in logged_in(server).command("n", "NOOP")  # the server goes on


def test_garbage_after_compress_closes_the_connection(server: PocztaServer) -> None:
    client = logged_in(server)
    client.compress()
    client.send_raw(b"\xff" * 64 + b"a NOOP\r\n")  # not deflate
    answer = client.read_to_end()
    assert client.closed and b"a OK" not in answer
    assert b"* BYE" in answer
    assert b"n OK" in logged_in(server).command("n", "NOOP")
