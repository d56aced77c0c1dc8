"""A running poczta for end-to-end tests: config, ports, CLI calls, start, stop, kill."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POCZTA = [sys.executable, "-m", "poczta"]
SERVICES = ("smtp", "submission", "submissions")
IMPLICIT_TLS = ("submissions", "pop3s", "imaps")
PASSWORDS = {
    "alice@example.test": "alice-secret-1",
    "bob@example.test": "bob-secret-2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float = 20.0,
    tls: bool = False,
    host: str = "127.0.0.1",
) -> None:
    """Wait until the port answers; TLS ports get a full handshake so no session lingers."""
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"poczta exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                if tls:
                    context.wrap_socket(sock).close()
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def _group_running(group: int) -> bool:
    """True while a process of `group` runs (zombies waiting for a parent do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


@dataclass
class PocztaServer:
    """A configured poczta: its config file, ports, and a running `serve` process."""

    root: Path
    ports: dict[str, int]
    extra_config: str = ""
    proc: subprocess.Popen[bytes] | None = None
    top_config: str = ""  # top-level keys, written before the first table
    host: str = "127.0.0.1"  # the loopback address it listens on
    hostname: str = "mx.example.test"
    domains: tuple[str, ...] = ("example.test",)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "serve.log"

    @property
    def config(self) -> Path:
        return self.root / "poczta.toml"

    def write_config(self) -> None:
        listeners = "\n".join(
            f'{name} = ["{self.host}:{self.ports[name]}"]' if name in self.ports else f"{name} = []"
            for name in ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")
        )
        # Tests that do not test the checks of incoming mail run without them: no DNS, no
        # greylisting.
        checks = "" if "[checks]" in self.extra_config else "\n[checks]\nenabled = false\n"
        # Nor do they deliver their queue (to the DNS of the machine) unless they say so.
        if "[outbound]" not in self.extra_config:
            checks += "\n[outbound]\nenabled = false\n"
        domains = ", ".join(f'"{d}"' for d in self.domains)
        self.config.write_text(
            f'hostname = "{self.hostname}"\n'
            f'data_dir = "{self.root / "data"}"\n'
            f"domains = [{domains}]\n"
            f"{self.top_config}"
            f"\n[listeners]\n{listeners}\n"
            f"{self.extra_config}\n"
            f"{checks}"
        )

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*POCZTA, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "POCZTA_CONFIG": str(self.config)},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"poczta {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, *, own_group: bool = False) -> None:
        """Start `serve`; `own_group` puts it and its workers in a process group of their
        own, for `kill_group`."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*POCZTA, "serve", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
        for name, port in self.ports.items():
            wait_for_port(port, self.proc, tls=name in IMPLICIT_TLS, host=self.host)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def kill_group(self, timeout: float = 30.0) -> None:
        """SIGKILL every process of a server started with `own_group` (master, workers,
        committer) at once, and wait until none of them runs."""
        assert self.proc is not None
        group = self.proc.pid
        os.killpg(group, signal.SIGKILL)
        self.proc.wait(timeout)
        self.proc = None
        deadline = time.monotonic() + timeout
        while _group_running(group):
            if time.monotonic() > deadline:
                raise TimeoutError(f"process group {group} still runs")
            time.sleep(0.05)

    def messages(self, user: str, mailbox: str = "INBOX") -> list[dict[str, Any]]:
        out = self.cli("mail", "list", user, "--mailbox", mailbox, "--json").stdout
        return list(json.loads(out))

    def message_bytes(self, user: str, uid: int, mailbox: str = "INBOX") -> bytes:
        result = subprocess.run(
            [*POCZTA, "mail", "show", "-c", str(self.config), user, mailbox, str(uid)],
            capture_output=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_server(
    root: Path,
    extra_config: str = "",
    services: tuple[str, ...] = SERVICES,
    top_config: str = "",
    *,
    host: str = "127.0.0.1",
    hostname: str = "mx.example.test",
    domains: tuple[str, ...] = ("example.test",),
) -> PocztaServer:
    ports = {name: free_port() for name in services}
    server = PocztaServer(
        root,
        ports,
        extra_config,
        top_config=top_config,
        host=host,
        hostname=hostname,
        domains=domains,
    )
    server.write_config()
    server.cli(
        "init",
        "-c",
        str(server.root / "unused.toml"),
        "--data-dir",
        str(server.root / "data"),
        "--hostname",
        hostname,
        "--user",
        "",  # as root, too: these tests' servers stay root (see test_root_e2e for the change)
    )
    # `init` wrote the certificate into the data dir; the test config uses the same defaults.
    if "example.test" not in domains:
        return server
    for address, password in PASSWORDS.items():
        server.cli("user", "add", address, "--password-stdin", stdin=password + "\n")
    server.cli("alias", "add", "info@example.test", "alice@example.test")
    server.cli("alias", "add", "alice.smith@example.test", "alice@example.test")
    return server


@contextlib.contextmanager
def running_server(
    root: Path, extra_config: str = "", services: tuple[str, ...] = SERVICES
) -> Iterator[PocztaServer]:
    """`make_server`, started, and stopped at the end (for module fixtures)."""
    server = make_server(root, extra_config, services)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.stop()


def run_cli(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`poczta ARGS` in `cwd` with stdin and stdout not a terminal; $POCZTA_CONFIG only
    when `env` sets it."""
    base = {k: v for k, v in os.environ.items() if k != "POCZTA_CONFIG"}
    return subprocess.run(
        [*POCZTA, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def client_tls() -> ssl.SSLContext:
    """A client TLS context that accepts poczta's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange (RFC 5802 / 7677), written out by hand."""

    def __init__(self, user: str, password: str) -> None:
        self.first_bare = f"n={user},r={b64(os.urandom(18))}"
        self.password = password

    def first(self) -> str:
        """The client-first message, base64."""
        return b64("n,," + self.first_bare)

    def final(self, challenge: bytes | str) -> str:
        """The client-final message (with the proof) answering the base64 server-first."""
        server_first = base64.b64decode(challenge).decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return b64(f"{without_proof},p={b64(proof)}")
