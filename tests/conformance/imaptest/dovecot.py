"""A private Dovecot on a loopback port, the reference server to check the runner against.

Everything lives in one temporary directory: the configuration (nothing is read from
/etc/dovecot), a passwd-file with two users, their Maildirs, the logs and the runtime
sockets. Plaintext LOGIN is allowed, since it listens on 127.0.0.1 only; STARTTLS and a
second port with TLS from the first byte use a self-signed certificate made at start. Run as root
the mail is owned by ``nobody``; run as another user, by that user.

    python -m tests.conformance.imaptest.dovecot     # prints host, port, users; waits

Needs Debian's ``dovecot-imapd``; the test suite never does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.certificates import self_signed
from tests.e2e.harness import free_port

USERS = (("tester", "imaptest-pass1"), ("tester2", "imaptest-pass2"))
START_TIMEOUT = 20.0

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
first_valid_gid = {gid}
default_internal_user = {internal_user}
default_login_user = {login_user}
{extra_users}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""


@dataclass(frozen=True)
class Dovecot:
    host: str
    port: int
    user: str
    password: str
    user2: str
    password2: str
    root: Path
    tls_port: int


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot",) if os.access(p, os.X_OK)), None)


def write_certificate(root: Path) -> None:
    self_signed("localhost").write(root / "cert.pem", root / "key.pem")


def write_config(root: Path, port: int, tls_port: int) -> Path:
    if os.geteuid() == 0:
        owner = pwd.getpwnam("nobody")
        internal, login, extra = "dovecot", "dovenull", ""
    else:
        owner = pwd.getpwuid(os.getuid())
        internal = login = owner.pw_name
        extra = "service anvil {\n  chroot =\n}\nservice imap-login {\n  chroot =\n}\n"
    for name in ("run", "state", "home"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "users").write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in USERS))
    for user, _ in USERS:
        home = root / "home" / user
        home.mkdir(exist_ok=True)
        os.chown(home, owner.pw_uid, owner.pw_gid)
    write_certificate(root)
    config = root / "dovecot.conf"
    config.write_text(_CONFIG.format(
        root=root, port=port, tls_port=tls_port, uid=owner.pw_uid, gid=owner.pw_gid,
        internal_user=internal, login_user=login, extra_users=extra))
    return config


@contextmanager
def running_dovecot(root: Path | None = None) -> Iterator[Dovecot]:
    binary = dovecot_binary()
    if binary is None:
        raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
    with tempfile.TemporaryDirectory(prefix="imaptest-dovecot-") as scratch:
        base = root or Path(scratch)
        os.chmod(base, 0o755)
        port, tls_port = free_port(), free_port()
        config = write_config(base, port, tls_port)
        process = subprocess.Popen([binary, "-F", "-c", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_port(port, process, base)
            (user, password), (user2, password2) = USERS
            yield Dovecot("127.0.0.1", port, user, password, user2, password2, base, tls_port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            log = root / "dovecot.log"
            raise RuntimeError(f"dovecot exited: {error}{log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"dovecot did not listen on port {port} in {START_TIMEOUT:g} s")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with running_dovecot() as server:
            print(f"host {server.host}\nport {server.port} (STARTTLS offered)\n"
                  f"tls_port {server.tls_port} (TLS from the first byte)\n"
                  f"user {server.user}\npassword {server.password}\n"
                  f"user2 {server.user2}\npassword2 {server.password2}\n"
                  f"log {server.root / 'dovecot.log'}\n"
                  f"run: python -m tests.conformance.imaptest.runner --host {server.host} "
                  f"--port {server.port} --user {server.user} --password {server.password} "
                  f"--user2 {server.user2} --password2 {server.password2}", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
