"""A POP3 client on the wire for end-to-end tests: implicit TLS from a chosen source
address (poplib cannot bind one), one reply line per command; and the log lines of a
server's workers."""

from __future__ import annotations

import re
import socket
import ssl

from tests.e2e.harness import PocztaServer, client_tls


class Pop3Wire:
    """One POP3S connection from `source` to `host`:`port`; `greeting` is the first line."""

    def __init__(self, host: str, port: int, source: str = "127.0.0.1") -> None:
        raw = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        self.sock: ssl.SSLSocket = client_tls().wrap_socket(raw)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self) -> str:
        return self.file.readline().decode("ascii", "replace").rstrip("\r\n")

    def command(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def login(self, user: str, password: str) -> str:
        """USER and PASS; the reply to PASS."""
        assert self.command(f"USER {user}").startswith("+OK")
        return self.command(f"PASS {password}")

    def close(self) -> None:
        try:
            self.command("QUIT")
        except OSError:
            pass
        finally:
            self.file.close()
            self.sock.close()


def try_login(host: str, port: int, user: str, password: str, source: str = "127.0.0.1") -> str:
    """Connect, log in and quit: the reply to PASS."""
    client = Pop3Wire(host, port, source)
    try:
        return client.login(user, password)
    finally:
        client.close()


def greets(host: str, port: int, source: str) -> bool:
    """Whether a new connection from `source` is greeted with +OK (it is closed again)."""
    client = Pop3Wire(host, port, source)
    try:
        return client.greeting.startswith("+OK")
    finally:
        client.close()


def workers_logging(server: PocztaServer, pattern: str) -> list[int]:
    """The worker of each log line matching `pattern`, in order."""
    found = re.findall(rf"{pattern}.* worker=(\d+)", server.log_text())
    return [int(pid) for pid in found]
