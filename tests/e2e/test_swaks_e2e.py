"""swaks, a real SMTP client, against poczta: MX, STARTTLS, submission AUTH, relay refusal."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest

from tests.e2e.harness import PASSWORDS, PocztaServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.peer,
    pytest.mark.skipif(
        shutil.which("swaks") is None, reason="swaks is not installed (make test installs it)"
    ),
]


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--timeout", "15", *args], capture_output=True, text=True, timeout=60
    )


def test_swaks_mx_delivery(poczta: PocztaServer) -> None:
    result = swaks(
        "--server",
        f"127.0.0.1:{poczta.ports['smtp']}",
        "--to",
        "bob@example.test",
        "--from",
        "carol@elsewhere.test",
        "--header",
        "Subject: swaks mx",
    )
    assert result.returncode == 0, result.stdout
    assert "swaks mx" in [m["subject"] for m in poczta.messages("bob@example.test")]


def test_swaks_submission_starttls_auth(poczta: PocztaServer) -> None:
    for auth in ("PLAIN", "LOGIN"):
        result = swaks(
            "--server",
            f"127.0.0.1:{poczta.ports['submission']}",
            "-tls",
            "--auth",
            auth,
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            PASSWORDS["alice@example.test"],
            "--from",
            "alice@example.test",
            "--to",
            "bob@example.test",
            "--header",
            f"Subject: swaks {auth}",
            "--header",
            "From: alice@example.test",
        )
        assert result.returncode == 0, result.stdout
        assert "235 2.7.0" in result.stdout
    subjects = [m["subject"] for m in poczta.messages("bob@example.test")]
    assert "swaks PLAIN" in subjects and "swaks LOGIN" in subjects


def test_swaks_implicit_tls(poczta: PocztaServer) -> None:
    result = swaks(
        "--server",
        f"127.0.0.1:{poczta.ports['submissions']}",
        "--tls-on-connect",
        "--auth-user",
        "bob@example.test",
        "--auth-password",
        PASSWORDS["bob@example.test"],
        "--from",
        "bob@example.test",
        "--to",
        "alice@example.test",
        "--header",
        "Subject: swaks 465",
        "--header",
        "From: bob@example.test",
    )
    assert result.returncode == 0, result.stdout
    assert "swaks 465" in [m["subject"] for m in poczta.messages("alice@example.test")]


def test_swaks_open_relay_refused_on_every_port(poczta: PocztaServer) -> None:
    """Unauthenticated remote → remote must fail everywhere."""
    attempts = {
        "smtp": ["--server", f"127.0.0.1:{poczta.ports['smtp']}"],
        "smtp+tls": ["--server", f"127.0.0.1:{poczta.ports['smtp']}", "-tls"],
        "submission": ["--server", f"127.0.0.1:{poczta.ports['submission']}", "-tls"],
        "submissions": ["--server", f"127.0.0.1:{poczta.ports['submissions']}", "--tls-on-connect"],
    }
    for name, server in attempts.items():
        result = swaks(*server, "--from", "spammer@remote.test", "--to", "victim@far.test")
        assert result.returncode != 0, f"{name} relayed: {result.stdout}"
        # swaks marks a server error "<**" in plaintext and "<~*" inside TLS
        assert re.search(r"<[*~]\* +5\d\d 5\.7\.[01]", result.stdout), f"{name}: {result.stdout}"
    assert "victim@far.test" not in poczta.cli("queue", "list", "--json").stdout


def test_smtp_smuggling_is_not_a_second_message(poczta: PocztaServer) -> None:
    """A bare-LF dot must not end DATA: the 'smuggled' message stays inside the first."""
    smuggled = (
        b"Subject: outer\r\n\r\nhello\n.\r\nMAIL FROM:<admin@example.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    with socket.create_connection(("127.0.0.1", poczta.ports["smtp"]), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(
            b"HELO client.test\r\nMAIL FROM:<carol@elsewhere.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
        )
        assert [reader.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(smuggled)
        assert reader.readline().startswith(b"250")
        sock.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221")
    subjects = [m["subject"] for m in poczta.messages("bob@example.test")]
    assert "outer" in subjects
    assert "smuggled" not in subjects
