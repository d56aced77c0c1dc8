"""Servers for the POP3 benchmark: poczta and a private Dovecot, filled with the same mail."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import BenchError, deb_installed, ensure_deb, terminate_tree, wait_port

HOST = "127.0.0.1"
DOMAIN = "example.test"
PASSWORD = "bench-password-1"
NOBODY = 65534  # Dovecot's mail processes run as nobody (it refuses root)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_message(n: int, size: int) -> bytes:
    """Message `n`: a few headers and `size` body bytes in 76-column lines, CRLF."""
    head = (
        f"From: sender{n % 97}@bench.test\r\nTo: user@{DOMAIN}\r\n"
        f"Subject: benchmark message {n}\r\nMessage-ID: <{n}.bench@bench.test>\r\n"
        "Date: Mon, 02 Jan 2023 10:00:00 +0000\r\n\r\n"
    )
    line = (f"{n:08d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2)[:76] + "\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return (head + body.rsplit("\r\n", 1)[0] + "\r\n").encode()


# --------------------------------------------------------------------------- targets


def run(cmd: list[str], *, input: str | None = None) -> str:
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-4:])
        raise BenchError(f"`{' '.join(cmd)}` exited with {r.returncode}: {tail}")
    return r.stdout


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """One self-signed P-256 certificate, the same for every target."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        run(
            [
                *(
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ),
                *("-nodes", "-subj", "/CN=bench.test", "-days", "2"),
                *("-keyout", str(key), "-out", str(cert)),
            ]
        )
    return cert, key


class Target:
    """One server under test, in `workdir`, listening on `port` (implicit TLS or plain)."""

    name = "?"
    big_user = f"big@{DOMAIN}"
    password = PASSWORD

    def __init__(self, opts: argparse.Namespace, workdir: Path, port: int) -> None:
        self.opts = opts
        self.workdir = workdir
        self.port = port
        self.tls = opts.security == "tls"
        self.cert, self.key = make_certificate(workdir.parent)
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def user(i: int) -> str:
        return f"user{i}@{DOMAIN}"

    def fill(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with open(self.workdir / "server.log", "ab") as logf:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(HOST, self.port, alive=lambda: self.proc is not None and self.proc.poll() is None)

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self) -> None:
        if self.proc is not None:
            terminate_tree([self.proc.pid])
            self.proc = None


class PocztaTarget(Target):
    name = "poczta"

    def fill(self) -> None:
        data = self.workdir / "data"
        self.config = self.workdir / "poczta.toml"
        listener = f'["{HOST}:{self.port}"]'
        pop3, pop3s = ("[]", listener) if self.tls else (listener, "[]")
        self.config.write_text(
            f'hostname = "bench.test"\ndata_dir = "{data}"\ndomains = ["{DOMAIN}"]\n'
            f"dev_mode = {'false' if self.tls else 'true'}\n"
            f'\n[tls]\ncertificate = "{self.cert}"\nprivate_key = "{self.key}"\n'
            "\n[listeners]\nsmtp = []\nsubmission = []\nsubmissions = []\n"
            f"pop3 = {pop3}\npop3s = {pop3s}\nimap = []\nimaps = []\n"
            "\n[limits]\nmax_connections_per_ip = 1000\n"
        )
        try:
            asyncio.run(self._fill_store())
        except ImportError as exc:
            raise BenchError(f"poczta is not importable by {sys.executable}: {exc}") from exc

    async def _fill_store(self) -> None:
        from poczta.accounts import hash_password
        from poczta.app import open_configured_store
        from poczta.config import load_config
        from poczta.message import parse_message
        from poczta.sasl import derive_scram_credentials
        from poczta.store.base import DeliveryTarget

        store = await open_configured_store(load_config(self.config))
        secret = (hash_password(PASSWORD), derive_scram_credentials(PASSWORD).to_string())
        big = DeliveryTarget(await store.add_user(self.big_user, *secret))
        small = [
            DeliveryTarget(await store.add_user(self.user(i), *secret))
            for i in range(self.opts.clients)
        ]
        gate = asyncio.Semaphore(64)
        now = datetime.now(UTC)

        async def deliver(n: int) -> None:
            data = make_message(n, self.opts.size)
            targets = [big] if n < self.opts.messages else []
            targets += small if n < self.opts.user_messages else []
            async with gate:
                await store.deliver(data, parse_message(data), now, targets)

        count = max(self.opts.messages, self.opts.user_messages)
        await asyncio.gather(*(deliver(n) for n in range(count)))
        await store.close()

    def command(self) -> list[str]:
        return [self.opts.poczta_bin, "serve", "-c", str(self.config)]


def install_dovecot() -> None:
    """Install dovecot-pop3d when missing; keep the system instance it brings stopped."""
    if deb_installed("dovecot-pop3d"):
        return
    ensure_deb("dovecot-pop3d", log=log)
    stop_system_dovecot()


def stop_system_dovecot() -> None:
    """The package may start a system Dovecot on 110/995: stop and disable it."""
    for cmd in (
        ["systemctl", "disable", "--now", "dovecot"],
        ["update-rc.d", "dovecot", "disable"],
    ):
        if shutil.which(cmd[0]):
            subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    pidfile = Path("/run/dovecot/master.pid")
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    log("stopping the system Dovecot the package started ...")
    subprocess.run(["dovecot", "stop"], capture_output=True, check=False, timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    terminate_tree([pid])


def dovecot_password_hash() -> str:
    """argon2id with poczta's work factors: t=3, m=64 MiB (libsodium verifies only p=1).

    `doveadm pw` would pick m=256 MiB, which Dovecot's own auth process cannot
    afford under its default 256 MiB address-space limit.
    """
    try:
        from argon2 import PasswordHasher, Type
    except ImportError as exc:
        raise BenchError(f"argon2-cffi is not importable by {sys.executable}") from exc
    hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1, type=Type.ID)
    return "{ARGON2ID}" + hasher.hash(PASSWORD)


class DovecotTarget(Target):
    """A private Dovecot: own config, base_dir and Maildirs, pop3 only, on loopback."""

    name = "dovecot"

    def fill(self) -> None:
        install_dovecot()
        w = self.workdir
        w.chmod(0o755)  # the login and mail processes (dovenull, nobody) traverse it
        home = w / "home"
        self.write_config()
        users = [self.big_user, *(self.user(i) for i in range(self.opts.clients))]
        secret = dovecot_password_hash()
        (w / "passwd").write_text("".join(f"{u}:{secret}::::::\n" for u in users))
        pool = w / "pool"
        pool.mkdir()
        names = []
        for n in range(max(self.opts.messages, self.opts.user_messages)):
            data = make_message(n, self.opts.size)
            lf = data.replace(b"\r\n", b"\n")
            name = f"{1_700_000_000 + n}.M{n}P1.bench,S={len(lf)},W={len(data)}:2,"
            (pool / name).write_bytes(lf)
            os.chown(pool / name, NOBODY, NOBODY)
            names.append(name)
        for user in users:
            count = self.opts.messages if user == self.big_user else self.opts.user_messages
            maildir = home / user / "Maildir"
            for sub in ("cur", "new", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for name in names[:count]:
                os.link(pool / name, maildir / "cur" / name)
            for path in (home / user, maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
                os.chown(path, NOBODY, NOBODY)
        os.chown(home, NOBODY, NOBODY)

    def write_config(self) -> None:
        w = self.workdir
        for d in ("run", "state"):
            (w / d).mkdir()
        pop3, pop3s = (0, self.port) if self.tls else (self.port, 0)
        (w / "dovecot.conf").write_text(
            f"""# Private benchmark instance, written by poczta's bench/pop3.
instance_name = dovecot-bench
base_dir = {w}/run
state_dir = {w}/state
log_path = {w}/dovecot.log
protocols = pop3
listen = {HOST}
ssl = {"required" if self.tls else "no"}
ssl_cert = <{self.cert}
ssl_key = <{self.key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = plain
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {w}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={w}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""
        )

    def command(self) -> list[str]:
        return ["dovecot", "-c", str(self.workdir / "dovecot.conf"), "-F"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        super().stop()


TARGETS: dict[str, type[Target]] = {"poczta": PocztaTarget, "dovecot": DovecotTarget}
