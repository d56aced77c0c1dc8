"""A private Dovecot for the benchmarks: package, config, passwd-file and Maildirs.

Everything of the instance lives in one work directory (``base_dir``, ``state_dir``,
the log, the passwd-file, the homes), it listens on loopback only and it is started in
the foreground (``dovecot -c DIR/dovecot.conf -F``), so several benchmarks can run one
next to a system Dovecot without touching it. Mail processes run as ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from _common import BenchError, ServerProcess, deb_installed, ensure_deb, terminate_tree

NOBODY = 65534  # Dovecot's mail processes run as nobody (it refuses root)
HOST = "127.0.0.1"
#: IMAP system flags as Maildir info letters (they must appear in ASCII order)
MAILDIR_FLAGS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def install_dovecot(package: str) -> None:
    """Install `package` (dovecot-pop3d, dovecot-imapd) when missing and keep the system
    instance the installation starts stopped; an installed Dovecot is left alone."""
    if deb_installed(package):
        return
    ensure_deb(package, log=log)
    stop_system_dovecot()


def stop_system_dovecot() -> None:
    """The package may start a system Dovecot on the standard ports: stop and disable it."""
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


def argon2id(password: str, time_cost: int = 3, memory_kib: int = 64 * 1024) -> str:
    """An argon2id PHC string; the default is poczta's work factors, t=3, m=64 MiB, one
    lane (libsodium, which both servers verify with, handles only p=1)."""
    try:
        from argon2 import PasswordHasher, Type
    except ImportError as exc:
        raise BenchError(f"argon2-cffi is not importable by {sys.executable}") from exc
    hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID
    )
    return hasher.hash(password)


def password_hash(phc: str) -> str:
    """An argon2id PHC string as Dovecot's passwd-file takes it.

    `doveadm pw` would pick m=256 MiB, which Dovecot's own auth process cannot
    afford under its default 256 MiB address-space limit: `argon2id` makes the hash.
    """
    return "{ARGON2ID}" + phc


@dataclass(frozen=True)
class Listener:
    service: str  # "pop3-login", "imap-login"
    name: str  # "pop3s", "imaps", ...
    port: int
    ssl: bool


class MaildirWriter:
    """Writes Maildirs the way Dovecot names its own files, sharing one inode per message.

    A message is written once to a pool (LF line ends, as Dovecot keeps them, with
    ``S=`` and ``W=`` sizes in the name so it never reads a file to learn its size) and
    hard-linked into every folder that holds it, its flags in the link's name. The
    file's mtime is its internal date.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.pool = home.parent / "pool"
        self.pool.mkdir(parents=True)
        self._count = 0

    def pool_file(self, data: bytes, internal_date: datetime | None = None) -> str:
        lf = data.replace(b"\r\n", b"\n")
        self._count += 1
        stamp = int(internal_date.timestamp()) if internal_date else 1_700_000_000 + self._count
        name = f"{stamp}.M{self._count}P1.bench,S={len(lf)},W={len(data)}"
        path = self.pool / name
        path.write_bytes(lf)
        os.chown(path, NOBODY, NOBODY)
        if internal_date is not None:
            os.utime(path, (stamp, stamp))
        return name

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir of `folder` (Maildir++: INBOX at the top, others as ``.name``)."""
        root = self.home / user / "Maildir"
        path = root if folder == "INBOX" else root / ("." + folder.replace("/", "."))
        if not (path / "cur").is_dir():
            for sub in ("cur", "new", "tmp"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            if path != root:
                (path / "maildirfolder").touch()
        return path

    def link(self, maildir: Path, pool_name: str, flags: Iterable[str] = ()) -> None:
        letters = "".join(sorted(MAILDIR_FLAGS[f] for f in flags if f in MAILDIR_FLAGS))
        os.link(self.pool / pool_name, maildir / "cur" / f"{pool_name}:2,{letters}")

    def finish(self) -> None:
        """Hand the homes to the mail processes' user (the pool files are theirs already)."""
        os.chown(self.home, NOBODY, NOBODY)
        for dirpath, dirnames, filenames in os.walk(self.home):
            for name in (*dirnames, *(f for f in filenames if f == "maildirfolder")):
                os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)


class DovecotInstance:
    """One private Dovecot in `workdir`: config, users and the process."""

    def __init__(self, workdir: Path, cert: Path, key: Path, tls: bool) -> None:
        self.workdir = workdir
        self.cert, self.key = cert, key
        self.tls = tls
        self.home = workdir / "home"
        self.config = workdir / "dovecot.conf"
        self.server = ServerProcess(workdir / "server.log")
        workdir.chmod(0o755)  # the login and mail processes (dovenull, nobody) traverse it

    def write_users(self, secrets: Mapping[str, str]) -> None:
        """The passwd-file: user -> password hash (see `password_hash`)."""
        lines = "".join(f"{user}:{secret}::::::\n" for user, secret in secrets.items())
        (self.workdir / "passwd").write_text(lines)

    def write_config(
        self, protocols: str, listeners: Sequence[Listener], extra: str = "", header: str = ""
    ) -> None:
        """The config: `listeners` on loopback, `extra` appended (services, namespaces)."""
        w = self.workdir
        for d in ("run", "state"):
            (w / d).mkdir(exist_ok=True)
        services: dict[str, list[Listener]] = {}
        for listener in listeners:
            services.setdefault(listener.service, []).append(listener)
        blocks = "".join(
            f"service {service} {{\n"
            + "".join(
                f"  inet_listener {li.name} {{\n    port = {li.port}\n"
                f"    ssl = {'yes' if li.ssl else 'no'}\n  }}\n"
                for li in items
            )
            + "}\n"
            for service, items in services.items()
        )
        self.config.write_text(
            f"""# {header or "Private benchmark instance."}
instance_name = dovecot-bench
base_dir = {w}/run
state_dir = {w}/state
log_path = {w}/dovecot.log
protocols = {protocols}
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
{blocks}{extra}"""
        )

    def command(self) -> list[str]:
        return ["dovecot", "-c", str(self.config), "-F"]

    def log_tail(self, lines: int = 4) -> str:
        try:
            text = (self.workdir / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])
