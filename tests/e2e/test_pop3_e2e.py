"""POP3 end to end: poplib, fetchmail and getmail against a running `poczta serve`."""

from __future__ import annotations

import base64
import itertools
import os
import poplib
import pwd
import shutil
import signal
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import SERVICES, PocztaServer, ScramClient, make_server

pytestmark = pytest.mark.e2e

POP3_SERVICES = (*SERVICES, "pop3", "pop3s")
FAST_THROTTLE = "[auth]\nfailure_delay = 0.3\n"
PASSWORD = "pop-secret-9"
_users = itertools.count(1)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    """One poczta with pop3 and pop3s listeners for the whole module."""
    root = tmp_path_factory.mktemp("pop3")
    srv = make_server(root, FAST_THROTTLE, POP3_SERVICES, store=store_backend.config())
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def new_user(srv: PocztaServer) -> str:
    """A fresh account (tests never share a maildrop); its password is PASSWORD."""
    address = f"pop{next(_users)}@example.test"
    srv.cli("user", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
    return address


def deliver(srv: PocztaServer, to: str, subject: str, body: str = "Hello there.\n") -> None:
    msg = EmailMessage()
    msg["From"] = "carol@elsewhere.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as client:
        client.send_message(msg)


def stls_client(srv: PocztaServer) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=10)
    client.stls(client_tls())
    return client


def pop3s_client(srv: PocztaServer) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", srv.ports["pop3s"], timeout=10, context=client_tls())


def login(srv: PocztaServer, user: str, implicit: bool = True) -> poplib.POP3:
    """A logged-in session; retries briefly while a just-ended session still holds the lock."""
    for _ in range(50):
        client = pop3s_client(srv) if implicit else stls_client(srv)
        client.user(user)
        try:
            client.pass_(PASSWORD)
            return client
        except poplib.error_proto as exc:
            client.close()
            if b"[IN-USE]" not in exc.args[0]:
                raise
            time.sleep(0.1)
    raise AssertionError("maildrop stayed locked")


def uidls(client: poplib.POP3) -> dict[int, str]:
    _, lines, _ = client.uidl()
    pairs = (line.decode().split() for line in lines)
    return {int(number): uid for number, uid in pairs}


def subjects(srv: PocztaServer, user: str) -> list[str]:
    return [m["subject"] for m in srv.messages(user)]


def test_stls_session_lists_and_retrieves_stored_bytes(server: PocztaServer) -> None:
    user = new_user(server)
    for n in range(3):
        deliver(server, user, f"msg {n}", body=f"Body {n}\n.dot line\n")
    stored = server.messages(user)
    client = stls_client(server)
    assert "USER" in client.capa()  # offered once TLS is active
    client.user(user)
    client.pass_(PASSWORD)
    count, octets = client.stat()
    assert count == 3
    _, listing, _ = client.list()
    sizes = {int(n): int(s) for n, s in (line.split() for line in listing)}
    assert octets == sum(sizes.values())
    uid_map = uidls(client)
    for number, meta in enumerate(stored, 1):
        assert uid_map[number].endswith(f".{meta['uid']}")
        _, lines, got = client.retr(number)
        data = b"\r\n".join(lines) + b"\r\n"
        assert data == server.message_bytes(user, meta["uid"])
        assert got == sizes[number] == len(data)
    _, head, _ = client.top(1, 0)
    assert b"Subject: msg 0" in head
    assert head[-1] == b""
    assert b"Body 0" not in b"\n".join(head)
    client.quit()
    assert len(server.messages(user)) == 3  # reading deletes nothing


def test_pop3s_dele_quit_deletes_and_uidl_is_stable(server: PocztaServer) -> None:
    user = new_user(server)
    for n in range(3):
        deliver(server, user, f"dele {n}")
    client = login(server, user)
    first = uidls(client)
    client.dele(2)
    with pytest.raises(poplib.error_proto):
        client.retr(2)
    assert client.stat()[0] == 2
    assert client.quit().startswith(b"+OK")
    assert subjects(server, user) == ["dele 0", "dele 2"]
    client = login(server, user)
    assert uidls(client) == {1: first[1], 2: first[3]}
    client.quit()


def test_rset_undeletes(server: PocztaServer) -> None:
    user = new_user(server)
    deliver(server, user, "keep me")
    client = login(server, user)
    client.dele(1)
    assert client.stat()[0] == 0
    client.rset()
    assert client.stat()[0] == 1
    client.quit()
    assert subjects(server, user) == ["keep me"]


def test_dropped_connection_after_dele_deletes_nothing(server: PocztaServer) -> None:
    user = new_user(server)
    deliver(server, user, "survivor")
    client = login(server, user)
    client.dele(1)
    client.close()  # no QUIT: the session must not reach UPDATE
    client = login(server, user)  # waits until the dropped session let go of the lock
    assert client.stat()[0] == 1
    client.quit()
    assert subjects(server, user) == ["survivor"]


def test_new_mail_appears_in_the_next_session(server: PocztaServer) -> None:
    user = new_user(server)
    deliver(server, user, "one")
    client = login(server, user)
    deliver(server, user, "two")
    assert client.stat()[0] == 1
    client.quit()
    client = login(server, user)
    assert client.stat()[0] == 2
    client.quit()


def test_plaintext_login_refused_before_stls(server: PocztaServer) -> None:
    client = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    capabilities = client.capa()
    assert "STLS" in capabilities and "USER" not in capabilities
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\].*STLS"):
        client.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client._shortcmd("AUTH PLAIN")
    client.quit()


@pytest.mark.sqlite_only("the failure delay, not the store")
def test_wrong_password_is_refused_after_a_delay(server: PocztaServer) -> None:
    user = new_user(server)
    for who in (user, "nobody@example.test"):
        client = pop3s_client(server)
        client.user(who)
        started = time.monotonic()
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_("wrong")
        assert refused.value.args[0] == b"-ERR [AUTH] Authentication failed"
        assert time.monotonic() - started >= 0.25
        client.quit()


def test_second_concurrent_session_is_in_use(server: PocztaServer) -> None:
    user = new_user(server)
    deliver(server, user, "locked")
    first = login(server, user)
    second = stls_client(server)
    second.user(user)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    second.quit()
    first.quit()
    login(server, user).quit()  # free again once the first session ended


def test_auth_plain(server: PocztaServer) -> None:
    user = new_user(server)
    deliver(server, user, "sasl")
    client = pop3s_client(server)
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    assert client._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    assert client.stat()[0] == 1
    client.quit()


def scram_login(client: poplib.POP3, user: str, password: str) -> bytes:
    """AUTH SCRAM-SHA-256; returns the server's last reply."""
    scram = ScramClient(user, password)
    challenge = client._shortcmd(f"AUTH SCRAM-SHA-256 {scram.first()}")
    client._shortcmd(scram.final(challenge[2:]))  # "+ v=<server signature>"
    return client._shortcmd("")


def test_auth_scram_sha_256(server: PocztaServer) -> None:
    user = new_user(server)
    deliver(server, user, "scram")
    client = pop3s_client(server)
    assert scram_login(client, user, PASSWORD).startswith(b"+OK")
    assert client.stat()[0] == 1
    client.quit()
    client = pop3s_client(server)
    started = time.monotonic()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        scram_login(client, user, "not the password")
    assert time.monotonic() - started >= 0.25  # throttled like a wrong PASS
    client.quit()


# --------------------------------------------------------------------------- shutdown, idle


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[PocztaServer]:
    """A poczta of its own with a one-second idle timeout, for tests that stop it."""
    srv = make_server(tmp_path, "[limits]\nidle_timeout = 1\n", POP3_SERVICES)
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.kill()


def test_idle_timeout_and_graceful_stop_delete_nothing(impatient: PocztaServer) -> None:
    user = new_user(impatient)
    deliver(impatient, user, "patient")
    client = login(impatient, user)
    client.dele(1)
    assert client.file.readline() == b"-ERR idle timeout\r\n"  # after one idle second
    client.close()
    client = login(impatient, user)
    client.dele(1)
    impatient.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert client.file.readline().startswith(b"-ERR [SYS/TEMP]")
    client.close()
    assert impatient.stop() == 0
    assert subjects(impatient, user) == ["patient"]


# --------------------------------------------------------------------------- real clients


def fetchmail(srv: PocztaServer, user: str, tmp: Path, service: str, keep: bool) -> list[bytes]:
    """One fetchmail run over `service`; returns the messages it delivered."""
    if shutil.which("fetchmail") is None:
        pytest.skip("fetchmail is not installed (Debian package fetchmail)")
    out = tmp / "fetched"
    out.mkdir(exist_ok=True)
    before = set(out.iterdir())
    mda = tmp / "mda.sh"
    mda.write_text(f'#!/bin/sh\ncat > "{out}/$(date +%s%N).$$"\n')
    mda.chmod(0o755)
    rc = tmp / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {srv.ports[service]} protocol pop3 uidl\n"
        f'  user "{user}" there with password "{PASSWORD}" is root here\n'
        # without "ssl", an sslproto makes fetchmail insist on STLS
        f"  {'ssl ' if service == 'pop3s' else ''}no sslcertck sslproto 'TLS1.2+'\n"
        f'  mda "{mda}"\n'
        f"  {'keep' if keep else 'nokeep'}\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "-i", str(tmp / "fetchids"), "--nodetach", "--silent"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp), "PATH": "/usr/bin:/bin", "FETCHMAILHOME": str(tmp)},
    )
    assert result.returncode in (0, 1), result.stderr  # 1: no mail
    return [path.read_bytes() for path in sorted(set(out.iterdir()) - before)]


@pytest.mark.parametrize("service", ["pop3", "pop3s"])
def test_fetchmail_keep_then_delete(server: PocztaServer, tmp_path: Path, service: str) -> None:
    user = new_user(server)
    for n in range(3):
        deliver(server, user, f"fetch {n}")
    fetched = fetchmail(server, user, tmp_path, service, keep=True)
    assert sorted(b"Subject: fetch" in m for m in fetched) == [True] * 3
    assert len(server.messages(user)) == 3
    assert fetchmail(server, user, tmp_path, service, keep=True) == []  # UIDs remembered
    deliver(server, user, "fetch 3")
    again = fetchmail(server, user, tmp_path, service, keep=False)
    assert len(again) == 1 and b"Subject: fetch 3" in again[0]
    # no-keep deleted what it fetched; the messages seen before (with keep) stay
    assert subjects(server, user) == ["fetch 0", "fetch 1", "fetch 2"]


@pytest.fixture
def maildir(tmp_path: Path) -> Iterator[Path]:
    """An empty Maildir that getmail may deliver to (as nobody when the tests run as root)."""
    if os.geteuid() != 0:
        yield tmp_path / "Maildir"
        return
    # getmail refuses to deliver as root; its delivery child becomes nobody, which cannot
    # enter pytest's private temporary directories.
    base = Path(tempfile.mkdtemp(prefix="pop3-getmail-"))
    nobody = pwd.getpwnam("nobody")
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    try:
        yield base / "Maildir"
    finally:
        shutil.rmtree(base)


def make_maildir(path: Path) -> None:
    owner = path.parent.stat()
    for sub in ("", "cur", "new", "tmp"):
        (path / sub).mkdir(exist_ok=True)
        os.chown(path / sub, owner.st_uid, owner.st_gid)


def test_getmail_downloads_each_message_once(
    server: PocztaServer, tmp_path: Path, maildir: Path
) -> None:
    if shutil.which("getmail") is None:
        pytest.skip("getmail is not installed (Debian package getmail6)")
    user = new_user(server)
    for n in range(2):
        deliver(server, user, f"getmail {n}")
    make_maildir(maildir)
    as_nobody = "user = nobody\n" if os.geteuid() == 0 else ""
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {server.ports['pop3s']}\n"
        f"username = {user}\n"
        f"password = {PASSWORD}\n"
        "\n[destination]\n"
        "type = Maildir\n"
        f"path = {maildir}/\n"
        f"{as_nobody}"
        "\n[options]\n"
        "read_all = false\n"
        "delete = false\n"
        "verbose = 0\n"
    )

    def run() -> int:
        result = subprocess.run(
            ["getmail", "--getmaildir", str(tmp_path), "--rcfile", str(rc)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return len(list((maildir / "new").iterdir()))

    assert run() == 2
    assert run() == 2  # nothing new the second time
    deliver(server, user, "getmail 2")
    assert run() == 3
    assert len(server.messages(user)) == 3  # delete = false
