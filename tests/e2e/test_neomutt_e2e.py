"""neomutt against `poczta serve` over 993: a user reads a message, flags it and moves it.

neomutt is a terminal program, so it runs under a pseudo-terminal; what it does is
given as keys (`push`) on its command line, ending with <quit>, so the run is the same
every time. imaplib then checks what the server holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import imaplib
import os
import pty
import select
import shutil
import signal
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, running_server
from tests.e2e.test_imap_e2e import deliver

pytestmark = [pytest.mark.e2e, pytest.mark.peer]

BOB = "bob@example.test"
NEOMUTT = shutil.which("neomutt")
WAIT = 60.0  # seconds: a bound for a hung client, not a measurement


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    if NEOMUTT is None:
        pytest.skip("neomutt (Debian package neomutt) is not installed")
    root = tmp_path_factory.mktemp("neomutt")
    services = ("smtp", "imaps")
    with running_server(root, services=services, store=store_backend.config()) as srv:
        yield srv


def muttrc(srv: PocztaServer, home: Path) -> Path:
    """Settings for a run without questions: the server's certificate is trusted (it is
    the one in `certificate_file`), and deleting, quitting and saving never ask."""
    rc = home / "muttrc"
    rc.write_text(
        f'set folder = "imaps://127.0.0.1:{srv.ports["imaps"]}/"\n'
        'set spoolfile = "+INBOX"\n'
        f'set imap_user = "{BOB}"\nset imap_pass = "{PASSWORDS[BOB]}"\n'
        f'set certificate_file = "{srv.root / "data" / "tls" / "cert.pem"}"\n'
        "set ssl_verify_host = no\n"  # the certificate names mx.example.test
        'set header_cache = ""\nset message_cachedir = ""\n'
        "set delete = yes\nset quit = yes\nset move = no\nset mark_old = no\n"
        "set confirmappend = no\nset confirmcreate = no\nset wait_key = no\n"
    )
    return rc


def run_neomutt(rc: Path, home: Path, keys: str) -> str:
    """neomutt on a 24x100 terminal, typing `keys`; what it wrote to the terminal."""
    assert NEOMUTT is not None
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, before anything else runs in it
        os.environ.update(HOME=str(home), TERM="xterm", LANG="C.UTF-8")
        os.execv(NEOMUTT, [NEOMUTT, "-n", "-F", str(rc), "-e", f'push "{keys}"'])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    screen = b""
    deadline = time.monotonic() + WAIT
    status = None
    while status is None and time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            with contextlib.suppress(OSError):  # the terminal closed: neomutt is gone
                screen += os.read(fd, 65536)
        done, code = os.waitpid(pid, os.WNOHANG)
        status = code if done else None
    os.close(fd)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"neomutt did not finish: {screen[-500:]!r}")
    assert os.waitstatus_to_exitcode(status) == 0, screen[-500:]
    return screen.decode(errors="replace")


def mailbox(srv: PocztaServer, name: str) -> dict[str, bytes]:
    """Subject → FLAGS of each message in `name`."""
    client = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_tls())
    client.login(BOB, PASSWORDS[BOB])
    found: dict[str, bytes] = {}
    if int(client.select(name)[1][0] or 0):
        _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        for item in data:
            if isinstance(item, tuple):
                subject = item[1].decode().removeprefix("Subject: ").strip()
                found[subject] = item[0].split(b"FLAGS (", 1)[1].split(b")", 1)[0]
    client.logout()
    return found


def test_neomutt_reads_flags_and_moves_a_message(server: PocztaServer, tmp_path: Path) -> None:
    for subject in ("keep me", "read me", "also keep"):
        deliver(server, BOB, subject, f"The text of {subject}.\r\n")
    rc = muttrc(server, tmp_path)
    shown = tmp_path / "shown.txt"  # what the pager showed, piped out of neomutt
    run_neomutt(
        rc,
        tmp_path,
        r"<limit>~s \"read me\"<enter><display-message><pipe-message>cat > "
        f"{shown}<enter><exit><flag-message><save-message>=Archive<enter><sync-mailbox><quit>",
    )
    assert "The text of read me." in shown.read_text()
    inbox, archive = mailbox(server, "INBOX"), mailbox(server, "Archive")
    assert set(inbox) == {"keep me", "also keep"}
    assert all(b"\\Seen" not in flags for flags in inbox.values())
    assert set(archive) == {"read me"}
    assert b"\\Seen" in archive["read me"] and b"\\Flagged" in archive["read me"]
