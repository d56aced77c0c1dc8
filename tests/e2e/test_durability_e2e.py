"""Nothing lost: every message that got 250 survives `kill -9`; SIGTERM finishes cleanly."""

from __future__ import annotations

import hashlib
import smtplib
import socket
import threading
import time

import pytest

from tests.e2e.harness import PocztaServer

pytestmark = pytest.mark.e2e


def body_for(n: int) -> bytes:
    filler = hashlib.sha256(str(n).encode()).hexdigest() * 60
    return (
        f"From: carol@elsewhere.test\r\nTo: alice@example.test\r\nSubject: crash {n}\r\n\r\n"
        f"{filler}\r\nend of {n}\r\n"
    ).encode()


def sender_loop(port: int, start: int, acked: list[int], stop: threading.Event) -> None:
    n = start
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                while not stop.is_set():
                    client.sendmail("carol@elsewhere.test", ["alice@example.test"], body_for(n))
                    acked.append(n)
                    n += 1
        except (smtplib.SMTPException, OSError):
            return


def test_kill_9_mid_stream_keeps_every_acknowledged_message(fresh_poczta: PocztaServer) -> None:
    acked: list[int] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=sender_loop, args=(fresh_poczta.ports["smtp"], i * 100_000, acked, stop)
        )
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    fresh_poczta.kill()  # SIGKILL while the senders are still sending
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acked) >= 60, "the senders did not get going"

    fresh_poczta.start()
    stored = {m["subject"]: m["uid"] for m in fresh_poczta.messages("alice@example.test")}
    missing = [n for n in acked if f"crash {n}" not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost: {missing[:5]}"
    for n in acked[:: max(1, len(acked) // 10)]:
        data = fresh_poczta.message_bytes("alice@example.test", stored[f"crash {n}"])
        assert data.endswith(body_for(n)), f"message {n} is not intact"


def test_client_that_stops_mid_data_leaves_nothing(fresh_poczta: PocztaServer) -> None:
    with socket.create_connection(("127.0.0.1", fresh_poczta.ports["smtp"]), timeout=5) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for line in (
            b"EHLO client.test",
            b"MAIL FROM:<carol@elsewhere.test>",
            b"RCPT TO:<alice@example.test>",
            b"DATA",
        ):
            sock.sendall(line + b"\r\n")
            while True:
                reply = reader.readline()
                if reply[3:4] != b"-":
                    break
        assert reply.startswith(b"354")
        sock.sendall(b"Subject: half\r\n\r\nnot finished\r\n")
    time.sleep(0.3)
    assert "half" not in [m["subject"] for m in fresh_poczta.messages("alice@example.test")]


def test_sigterm_finishes_message_in_data_then_exits(fresh_poczta: PocztaServer) -> None:
    with socket.create_connection(("127.0.0.1", fresh_poczta.ports["smtp"]), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(
            b"HELO client.test\r\nMAIL FROM:<carol@elsewhere.test>\r\n"
            b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
        )
        replies = [reader.readline() for _ in range(4)]
        assert replies[-1].startswith(b"354")
        sock.sendall(b"Subject: graceful\r\n\r\nfirst half\r\n")
        assert fresh_poczta.proc is not None
        fresh_poczta.proc.terminate()
        time.sleep(0.5)
        sock.sendall(b"second half\r\n.\r\n")
        assert reader.readline().startswith(b"250")
        assert reader.readline().startswith(b"421")  # then it closes: shutting down
    assert fresh_poczta.stop(timeout=30) == 0
    fresh_poczta.start()
    assert "graceful" in [m["subject"] for m in fresh_poczta.messages("alice@example.test")]
