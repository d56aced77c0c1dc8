"""A running poczta for end-to-end tests: config, ports, CLI calls, start, stop, kill.

Setting up a data directory (`poczta init`, the test users and aliases) is done once per
host name and domain list in a session and copied for each server: it would otherwise
cost every server a certificate, a schema and two argon2 hashes. The CLI calls a test
makes run in this process (`tests.e2e.in_process`), but those that start a server;
`cli_subprocess` and `run_cli_subprocess` run the installed executable.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import imaplib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.in_process import as_text, run_in_process

POCZTA = [sys.executable, "-m", "poczta"]
SERVICES = ("smtp", "submission", "submissions")
IMPLICIT_TLS = ("submissions", "pop3s", "imaps")
#: Commands that run a server (its logging, signals, pid file): always a process of their own.
RUNS_A_SERVER = (("serve",), ("dev",))
PASSWORDS = {
    "alice@example.test": "alice-secret-1",
    "bob@example.test": "bob-secret-2",
}


#: Ports `free_port` gave out in this process: none is given twice.
_given_ports: set[int] = set()


def _worker_share() -> tuple[int, int]:
    """(this test process's index, how many run side by side): (0, 1) but under
    pytest-xdist, whose workers are told by $PYTEST_XDIST_WORKER ("gw3") and
    $PYTEST_XDIST_WORKER_COUNT."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return 0, 1
    return int(worker[2:]) % count, count


def free_port() -> int:
    """A loopback port that nothing is bound to now, for a server a test starts later.

    The port is free only until someone binds it, so two test workers picking ports at
    the same time could pick the same one: each worker takes only the ports of its own
    share (the kernel hands out ports of one parity to `bind`, so the share is counted
    in pairs), and a process never gives out a port twice."""
    index, count = _worker_share()
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if (port >> 1) % count == index and port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port in this worker's share")


T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 10.0) -> T:
    """The first true answer of `check`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{check} gave no answer within {timeout} s")
        time.sleep(0.05)


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float = 60.0,  # a bound for a hung start: several at once are slow on a busy machine
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
        """`poczta ARGS` with this server's config, run in this process; `serve` and `dev`,
        which run a server (logging, signals, a pid file), as a subprocess."""
        if args[:1] in RUNS_A_SERVER:
            return self.cli_subprocess(*args, stdin=stdin, check=check)
        result = as_text(run_in_process(args, stdin=stdin, env=self._cli_env()))
        if check and result.returncode != 0:
            raise AssertionError(f"poczta {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_subprocess(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`poczta ARGS` with this server's config, run as the installed executable."""
        result = subprocess.run(
            [*POCZTA, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self._cli_env()},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"poczta {' '.join(args)} failed: {result.stderr}")
        return result

    def _cli_env(self) -> dict[str, str]:
        return {"POCZTA_CONFIG": str(self.config)}

    def launch(self, *, own_group: bool = False) -> None:
        """Start `poczta serve` without waiting for it (see `start`, `start_servers`);
        `own_group` puts it and its workers in a process group of their own, for
        `kill_group`."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*POCZTA, "serve", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )

    def wait_until_listening(self) -> None:
        assert self.proc is not None
        for name, port in self.ports.items():
            wait_for_port(port, self.proc, tls=name in IMPLICIT_TLS, host=self.host)

    def start(self, *, own_group: bool = False) -> None:
        if own_group:
            self.launch(own_group=True)
            self.wait_until_listening()
        else:
            start_servers(self)

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
        args = ("mail", "show", "-c", str(self.config), user, mailbox, str(uid))
        result = run_in_process(args, env={"POCZTA_CONFIG": None})
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result.stdout

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_servers(*servers: PocztaServer) -> None:
    """Start every server at once, then wait until each one listens; if one does not,
    kill them all (a fixture that fails to start has no teardown to do it)."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_until_listening()
    except BaseException:
        for server in servers:
            if server.proc is not None:
                server.kill()
        raise


def stop_servers(*servers: PocztaServer) -> None:
    """Stop every running server: all are told at once, then each is waited for."""
    running = [server for server in servers if server.proc is not None]
    for server in running:
        assert server.proc is not None
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
    for server in running:
        server.stop()


#: Settings that change what set-up does or writes (the store, the certificate files, the
#: password policy, the system user): with one in a test's config, its data directory is
#: set up in place instead of copied.
_SETUP_SETTINGS = ("[store]", "[tls]", "min_password_length", "user =")
_set_up: dict[tuple[str, tuple[str, ...]], Path] = {}


def _set_up_data_dir(server: PocztaServer) -> None:
    """`poczta init` into the server's data dir, then the test users and aliases when it
    serves example.test."""
    server.cli(
        "init",
        "-c",
        str(server.root / "unused.toml"),
        "--data-dir",
        str(server.root / "data"),
        "--hostname",
        server.hostname,
        "--user",
        "",  # as root, too: these tests' servers stay root (see test_root_e2e for the change)
    )
    # `init` wrote the certificate into the data dir; the test config uses the same defaults.
    add_test_accounts(server)


def add_test_accounts(server: PocztaServer) -> None:
    """The test users and aliases, into the server's store, when it serves example.test."""
    if "example.test" not in server.domains:
        return
    for address, password in PASSWORDS.items():
        server.cli("user", "add", address, "--password-stdin", stdin=password + "\n")
    server.cli("alias", "add", "info@example.test", "alice@example.test")
    server.cli("alias", "add", "alice.smith@example.test", "alice@example.test")


def _set_up_once(hostname: str, domains: tuple[str, ...]) -> Path:
    """A data directory set up for `hostname` and `domains`, made on first use in this
    session and removed at its end."""
    key = (hostname, domains)
    if key not in _set_up:
        root = Path(tempfile.mkdtemp(prefix="poczta-e2e-setup-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        template = PocztaServer(root, {}, hostname=hostname, domains=domains)
        template.write_config()
        _set_up_data_dir(template)
        _set_up[key] = root / "data"
    return _set_up[key]


def make_server(
    root: Path,
    extra_config: str = "",
    services: tuple[str, ...] = SERVICES,
    top_config: str = "",
    *,
    host: str = "127.0.0.1",
    hostname: str = "mx.example.test",
    domains: tuple[str, ...] = ("example.test",),
    store: str = "",
) -> PocztaServer:
    """A configured server, not started. `store` is the `[store]` table of a database set
    up already (the test users in it: see `StoreBackend.config` in conftest.py); the data
    directory is then the usual copy, without its SQLite files."""
    ports = {name: free_port() for name in services}
    server = PocztaServer(
        root,
        ports,
        extra_config + store,
        top_config=top_config,
        host=host,
        hostname=hostname,
        domains=domains,
    )
    server.write_config()
    if any(name in extra_config + top_config for name in _SETUP_SETTINGS):
        _set_up_data_dir(server)
    else:
        shutil.copytree(_set_up_once(hostname, domains), root / "data")
        if store:
            remove_sqlite_files(root / "data")
    return server


def remove_sqlite_files(data_dir: Path) -> None:
    """Take the embedded store's database and bodies out of a data directory."""
    for leftover in data_dir.glob("poczta.db*"):
        leftover.unlink()
    shutil.rmtree(data_dir / "blobs", ignore_errors=True)


def postgres_store_config(dsn: str, password_file: Path) -> str:
    """The `[store]` table of a server whose store is the PostgreSQL database at `dsn`
    (several servers given the same one share it, as nodes do)."""
    return f'\n[store]\nbackend = "postgres"\ndsn = "{dsn}"\npassword_file = "{password_file}"\n'


@contextlib.contextmanager
def running_server(
    root: Path, extra_config: str = "", services: tuple[str, ...] = SERVICES, *, store: str = ""
) -> Iterator[PocztaServer]:
    """`make_server`, started, and stopped at the end (for module fixtures)."""
    server = make_server(root, extra_config, services, store=store)
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
    when `env` sets it. Run in this process, but `serve` and `dev` (see `PocztaServer.cli`)."""
    if args[:1] in RUNS_A_SERVER:
        return run_cli_subprocess(*args, cwd=cwd, stdin=stdin, env=env)
    overrides: dict[str, str | None] = {"POCZTA_CONFIG": None, **(env or {})}
    return as_text(run_in_process(args, stdin=stdin, env=overrides, cwd=cwd))


def run_cli_subprocess(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run_cli`, by the installed executable."""
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


def imap_login(
    srv: PocztaServer, user: str = "alice@example.test", mailbox: str | None = None
) -> imaplib.IMAP4_SSL:
    """imaplib logged in as `user` over implicit TLS, with `mailbox` selected if given."""
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", srv.ports["imaps"], ssl_context=client_tls(), timeout=10
    )
    client.login(user, PASSWORDS[user])
    if mailbox is not None:
        client.select(mailbox)
    return client


def fill_mailbox(
    srv: PocztaServer, mailbox: str, messages: list[bytes], user: str = "alice@example.test"
) -> None:
    """A new mailbox of `user` holding `messages`, none of them \\Recent for the sessions
    that come after (this one selected it)."""
    client = imap_login(srv, user)
    client.create(mailbox)
    for message in messages:
        client.append(mailbox, None, None, message)
    client.select(mailbox)
    client.logout()


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
