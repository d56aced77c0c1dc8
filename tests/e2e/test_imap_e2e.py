"""IMAP against `poczta serve`, with Python's imaplib over 993 and STARTTLS on 143."""

from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, make_server, running_server
from tests.e2e.harness import imap_login as login

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice@example.test", "bob@example.test"
WAIT = 10.0  # seconds: a bound for a hung test, not a measurement


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("imap")
    services = ("smtp", "imap", "imaps")
    with running_server(root, services=services, store=store_backend.config()) as srv:
        yield srv


def deliver(srv: PocztaServer, to: str, subject: str, body: str = "Hello.\r\n") -> None:
    message = (
        f"From: Carol <carol@remote.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\n{body}"
    )
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as client:
        client.sendmail("carol@remote.test", [to], message.encode())


@pytest.mark.sqlite_only("what STARTTLS allows, not the store")
def test_passwords_only_after_starttls(server: PocztaServer) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
    assert not any(c.startswith("AUTH=") for c in client.capabilities)
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(ALICE, PASSWORDS[ALICE])
    client.starttls(client_tls())
    assert client.login(ALICE, PASSWORDS[ALICE])[0] == "OK"
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        other = login(server, BOB)
        other.logout()
        imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls()).login(
            BOB, "wrong password"
        )
    client.logout()


def test_a_delivered_message_is_read_flagged_and_expunged(server: PocztaServer) -> None:
    deliver(server, BOB, "first read", "Line one.\r\nLine two.\r\n")
    client = login(server, BOB)
    _, data = client.select("INBOX")
    count = int(data[0])
    _, data = client.fetch(str(count), "(FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
    text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
    assert '"first read"' in text and '(("Carol" NIL "carol" "remote.test"))' in text
    assert '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit"' in text
    assert "FLAGS (\\Recent)" in text  # new to this session (IMAP4rev1)
    _, data = client.fetch(str(count), "(BODY[TEXT])")
    assert data[0][1] == b"Line one.\r\nLine two.\r\n"
    _, data = client.fetch(str(count), "(FLAGS)")
    assert b"\\Seen" in data[0]  # a BODY[] fetch marks it read
    client.store(str(count), "+FLAGS", "(\\Deleted $Work)")
    _status, data = client.expunge()
    assert data == [str(count).encode()]
    _, data = client.status("INBOX", "(MESSAGES)")
    assert f"MESSAGES {count - 1}".encode() in data[0]
    client.logout()


def test_two_sessions_see_each_others_changes(server: PocztaServer) -> None:
    deliver(server, ALICE, "shared one")
    deliver(server, ALICE, "shared two")
    first, second = login(server), login(server)
    count = int(first.select("INBOX")[1][0])
    assert int(second.select("INBOX")[1][0]) == count
    first.store(str(count), "+FLAGS", "(\\Flagged)")
    first.store(str(count - 1), "+FLAGS", "(\\Deleted)")
    first.expunge()
    second.noop()
    untagged = second.untagged_responses
    assert [f"{count - 1}".encode()] == untagged.get("EXPUNGE")
    fetched = b" ".join(untagged.get("FETCH", []))
    # told after the expunge, so under its new number
    assert f"{count - 1} (FLAGS (\\Flagged))".encode() in fetched
    first.logout()
    second.logout()


def _read_until(sock: ssl.SSLSocket, pattern: bytes) -> bytes:
    data = b""
    deadline = time.monotonic() + WAIT
    while not re.search(pattern, data):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_idle_is_woken_by_an_smtp_delivery(server: PocztaServer) -> None:
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=WAIT)
    sock = client_tls().wrap_socket(raw, server_hostname="localhost")
    _read_until(sock, rb"\* OK")
    sock.sendall(f"a LOGIN {BOB} {PASSWORDS[BOB]}\r\nb SELECT INBOX\r\n".encode())
    selected = _read_until(sock, rb"b OK")
    exists = int(re.search(rb"\* (\d+) EXISTS", selected).group(1))  # type: ignore[union-attr]
    sock.sendall(b"c IDLE\r\n")
    _read_until(sock, rb"\+ idling")
    deliver(server, BOB, "while idle")
    woken = _read_until(sock, rb"\* \d+ EXISTS")
    assert f"* {exists + 1} EXISTS".encode() in woken
    sock.sendall(b"DONE\r\nd LOGOUT\r\n")
    assert b"c OK" in _read_until(sock, rb"d OK")
    sock.close()


def test_append_copy_and_move_answer_with_uids(server: PocztaServer) -> None:
    client = login(server)
    status, data = client.append("Drafts", "(\\Draft)", None, b"Subject: draft\r\n\r\nText\r\n")
    assert status == "OK" and b"APPENDUID" in data[0]
    client.select("Drafts")
    _, data = client.copy("1", "Archive")
    assert b"[COPYUID " in data[0]
    status, data = client.uid("MOVE", "1:*", "Trash")
    assert status == "OK"
    assert int(client.select("Drafts")[1][0]) == 0
    client.select("Trash")
    _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"\\Draft" in data[0][0] and data[0][1] == b"Subject: draft\r\n\r\n"
    client.logout()


def test_bad_commands_get_bad_and_the_session_goes_on(server: PocztaServer) -> None:
    client = login(server)
    tag = client._new_tag().decode()
    client.send(f"{tag} FROBNICATE\r\n".encode())
    assert client.readline().startswith(f"{tag} BAD".encode())
    huge = client._new_tag().decode()
    client.send(f"{huge} APPEND INBOX {{999999999999}}\r\n".encode())
    assert b"TOOBIG" in client.readline()
    assert client.noop()[0] == "OK"
    assert client.select("../bob@example.test")[0] == "NO"
    client.logout()


@pytest.fixture
def two_workers(tmp_path: Path, store_backend: StoreBackend) -> Iterator[PocztaServer]:
    server = make_server(
        tmp_path,
        services=("smtp", "imaps"),
        top_config="workers = 2\n",
        store=store_backend.config(),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_idle_sessions_in_every_worker_see_a_delivery(two_workers: PocztaServer) -> None:
    sessions = []
    for _ in range(8):  # the kernel spreads them over both workers' sockets
        raw = socket.create_connection(("127.0.0.1", two_workers.ports["imaps"]), timeout=WAIT)
        sock = client_tls().wrap_socket(raw, server_hostname="localhost")
        _read_until(sock, rb"\* OK")
        sock.sendall(f"a LOGIN {BOB} {PASSWORDS[BOB]}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
        _read_until(sock, rb"\+ idling")
        sessions.append(sock)
    workers = set(re.findall(r"imap\.login .*worker=(\d+)", two_workers.log_text()))
    if len(workers) < 2:
        pytest.skip("the kernel gave every connection to one worker")
    deliver(two_workers, BOB, "to every worker")
    for sock in sessions:
        assert b"* 1 EXISTS" in _read_until(sock, rb"\* 1 EXISTS")
        sock.sendall(b"DONE\r\nd LOGOUT\r\n")
        sock.close()


def test_a_search_sees_what_another_session_changed_meanwhile(server: PocztaServer) -> None:
    deliver(server, ALICE, "search me")
    first, second = login(server), login(server)
    first.select("INBOX")
    second.select("INBOX")
    _, before = first.uid("SEARCH", None, 'SUBJECT "search me" UNSEEN')
    [uid] = before[0].split()[-1:]
    second.uid("STORE", uid.decode(), "+FLAGS", "(\\Seen)")
    _, after = first.uid("SEARCH", None, 'SUBJECT "search me" UNSEEN')
    assert uid not in after[0].split()
    _, seen = first.uid("SEARCH", None, "SEEN")
    assert uid in seen[0].split()
    first.logout()
    second.logout()


def test_a_search_of_flags_follows_changes_expunges_and_arrivals(server: PocztaServer) -> None:
    for name in ("flags a", "flags b"):
        deliver(server, ALICE, name)
    first, second = login(server), login(server)
    first.select("INBOX")
    second.select("INBOX")

    def uids(client: imaplib.IMAP4_SSL, *criteria: str) -> set[bytes]:
        return set(client.uid("SEARCH", None, *criteria)[1][0].split())

    [a], [b] = uids(first, "SUBJECT", '"flags a"'), uids(first, "SUBJECT", '"flags b"')
    assert {a, b} <= uids(first, "UNSEEN")  # a search of flags alone
    second.uid("STORE", a.decode(), "+FLAGS", "(\\Seen)")
    second.uid("STORE", b.decode(), "+FLAGS", "(\\Deleted)")
    second.expunge()
    deliver(server, ALICE, "flags c")
    [c] = uids(first, "SUBJECT", '"flags c"')
    unseen = uids(first, "UNSEEN")
    assert c in unseen and a not in unseen and b not in unseen
    assert a in uids(first, "SEEN") and b not in uids(first, "ALL")
    first.logout()
    second.logout()


def test_status_deleted_storage_sums_the_deleted_messages(server: PocztaServer) -> None:
    client = login(server)
    client.create("Cleanup")
    bodies = [b"Subject: small\r\n\r\nshort\r\n", b"Subject: mid\r\n\r\n" + b"m" * 1500 + b"\r\n"]
    bodies.append(b"Subject: kept\r\n\r\n" + b"k" * 5000 + b"\r\n")
    for body in bodies:
        assert client.append("Cleanup", None, None, body)[0] == "OK"
    client.select("Cleanup")
    client.store("1:2", "+FLAGS", "(\\Deleted)")
    # their RFC822.SIZE (the bodies are CRLF already) in units of 1024 octets, rounded up
    freed = -(-(len(bodies[0]) + len(bodies[1])) // 1024)
    assert freed == 2
    _, data = client.status("Cleanup", "(DELETED DELETED-STORAGE)")
    assert data[0] == f'"Cleanup" (DELETED 2 DELETED-STORAGE {freed})'.encode()
    _, listed = client.list('""', "Cleanup RETURN (STATUS (DELETED-STORAGE))")
    assert listed[0].endswith(b'"Cleanup"')
    shown = client.untagged_responses.pop("STATUS")
    assert shown[-1] == f'"Cleanup" (DELETED-STORAGE {freed})'.encode()
    client.expunge()
    _, data = client.status("Cleanup", "(MESSAGES DELETED-STORAGE)")
    assert data[0] == b'"Cleanup" (MESSAGES 1 DELETED-STORAGE 0)'
    client.logout()


def test_a_nul_octet_delivered_over_smtp_never_reaches_body_but_binary_gives_it(
    server: PocztaServer,
) -> None:
    content = b"before\x00after, and more \x00 octets\r\n"
    message = (
        b"From: Carol <carol@remote.test>\r\nTo: bob@example.test\r\nSubject: nul octets\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\r\n" + content
    )
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("carol@remote.test", [BOB], message)
    client = login(server, BOB)
    client.select("INBOX")
    _, found = client.uid("SEARCH", "SUBJECT", '"nul octets"')
    uid = found[0].split()[-1].decode()
    _, fetched = client.uid("FETCH", uid, "(BODY.PEEK[] BINARY.PEEK[1])")
    (body_head, stored), (binary_head, binary) = fetched[0], fetched[1]
    assert b"BODY[]" in body_head and b"BINARY[1] ~{" in binary_head
    assert b"\x00" not in stored
    assert b"Content-Transfer-Encoding: base64" in stored
    assert b"Return-Path: <carol@remote.test>" in stored
    assert binary == content


def test_pipelined_stores_are_answered_in_order_as_if_sent_one_by_one(
    server: PocztaServer,
) -> None:
    client = login(server)
    client.create("Pipelined")
    for n in range(3):
        client.append("Pipelined", None, None, f"Subject: p{n}\r\n\r\nx\r\n".encode())
    client.select("Pipelined")  # the messages are recent here, not in the session below
    client.logout()
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=WAIT)
    sock = client_tls().wrap_socket(raw, server_hostname="localhost")
    _read_until(sock, rb"\* OK")
    sock.sendall(f"a LOGIN {ALICE} {PASSWORDS[ALICE]}\r\nb SELECT Pipelined\r\n".encode())
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", _read_until(sock, rb"b OK")).group(1))  # type: ignore[union-attr]
    # two writes: the second may come while the first ones are being committed
    sock.sendall(b"s1 UID STORE 1 +FLAGS (\\Flagged)\r\ns2 UID STORE 2 +FLAGS.SILENT (\\Seen)\r\n")
    sock.sendall(
        b"s3 STORE 9 +FLAGS (x)\r\n"
        b"s4 UID STORE 1 -FLAGS (\\Flagged)\r\n"
        b"s5 UID STORE 1,3 (UNCHANGEDSINCE %d) +FLAGS ($Done)\r\n"
        b"s6 UID FETCH 1:3 (FLAGS)\r\n" % modseq
    )
    answer = _read_until(sock, rb"s6 OK[^\r\n]*\r\n")
    lines = [line for line in answer.split(b"\r\n") if line]
    tags = [line.split(b" ")[0] for line in lines if not line.startswith(b"*")]
    assert tags == [b"s1", b"s2", b"s3", b"s4", b"s5", b"s6"]

    def between(start: bytes, end: bytes) -> list[bytes]:
        first = next(i for i, line in enumerate(lines) if line.startswith(start))
        last = next(i for i, line in enumerate(lines) if line.startswith(end))
        return [re.sub(rb" MODSEQ \(\d+\)", b"", line) for line in lines[first + 1 : last]]

    assert lines[0] == b"* 1 FETCH (UID 1 FLAGS (\\Flagged))"
    assert lines[1].startswith(b"s1 OK")
    assert between(b"s1 OK", b"s2 OK") == []  # .SILENT
    assert between(b"s2 OK", b"s3 BAD") == []  # no message 9: nothing changed
    assert between(b"s3 BAD", b"s4 OK") == [b"* 1 FETCH (UID 1 FLAGS ())"]
    # UNCHANGEDSINCE: message 1 changed since, message 3 did not
    assert b"[MODIFIED 1]" in next(line for line in lines if line.startswith(b"s5"))
    assert between(b"s4 OK", b"s5 OK")[-1:] == [b"* 3 FETCH (UID 3 FLAGS ($Done))"]
    assert between(b"s5 OK", b"s6 OK") == [
        b"* 1 FETCH (UID 1 FLAGS ())",
        b"* 2 FETCH (UID 2 FLAGS (\\Seen))",
        b"* 3 FETCH (UID 3 FLAGS ($Done))",
    ]
    sock.sendall(b"z LOGOUT\r\n")
    _read_until(sock, rb"z OK")
    sock.close()


@pytest.mark.sqlite_only("300 APPENDs; CHANGEDSINCE on PostgreSQL is in the store's contract tests")
def test_changedsince_over_a_large_mailbox_names_just_the_changed_messages(
    server: PocztaServer,
) -> None:
    client = login(server)
    client.create("Large")
    for n in range(300):
        client.append("Large", None, None, f"Subject: m{n}\r\n\r\nx\r\n".encode())
    client.select("Large")
    _, data = client.status("Large", "(HIGHESTMODSEQ)")
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", data[0]).group(1))  # type: ignore[union-attr]
    other = login(server)
    other.select("Large")
    other.uid("STORE", "7,150,299", "+FLAGS", "(\\Flagged)")
    other.logout()
    _, fetched = client.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {modseq})")
    told = {int(m.group(1)) for m in re.finditer(rb"UID (\d+)", b" ".join(fetched))}  # type: ignore[arg-type]
    assert told == {7, 150, 299}
    client.logout()


def test_one_fetch_of_many_bodies_gives_each_its_own_bytes(server: PocztaServer) -> None:
    client = login(server)
    client.create("Bodies")
    sent = [
        b"Subject: b%d\r\nX-Number: %d\r\n\r\n" % (n, n) + b"line %d\r\n" % n * (1 + n * 4000)
        for n in range(6)
    ]
    stored = [*sent, sent[2]]  # the last one's body is kept once for two messages
    for message in stored:
        client.append("Bodies", None, None, message)
    client.select("Bodies")
    _, data = client.uid("FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[])")
    literals = [item for item in data if isinstance(item, tuple)]
    heads = [message.split(b"\r\n\r\n")[0] + b"\r\n\r\n" for message in stored]
    assert [p[1] for p in literals[0::2]] == heads
    assert [p[1] for p in literals[1::2]] == stored
    sizes = [int(re.search(rb"RFC822.SIZE (\d+)", p[0]).group(1)) for p in literals[0::2]]  # type: ignore[union-attr]
    assert sizes == [len(message) for message in stored]
    _, data = client.fetch("2,4", "(BODY[])")
    assert [p[1] for p in data if isinstance(p, tuple)] == [sent[1], sent[3]]
    _, data = client.fetch("1:*", "(FLAGS)")  # only a BODY[] without PEEK marks \Seen
    assert [b"\\Seen" in line for line in data] == [n in (1, 3) for n in range(7)]
    client.logout()


def test_a_keyword_another_session_created_comes_with_new_flags_and_permanentflags(
    server: PocztaServer,
) -> None:
    client = login(server)
    client.create("Keywords")
    client.append("Keywords", None, None, b"Subject: k\r\n\r\nx\r\n")
    client.logout()
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=WAIT)
    sock = client_tls().wrap_socket(raw, server_hostname="localhost")
    _read_until(sock, rb"\* OK")
    sock.sendall(f"a LOGIN {ALICE} {PASSWORDS[ALICE]}\r\nb SELECT Keywords\r\n".encode())
    selected = _read_until(sock, rb"b OK")
    assert b"$Fresh" not in selected
    other = login(server)
    other.select("Keywords")
    other.store("1", "+FLAGS", "($Fresh)")
    other.logout()
    sock.sendall(b"c NOOP\r\n")
    lines = [line for line in _read_until(sock, rb"c OK").split(b"\r\n") if line]
    flags_at = next(i for i, line in enumerate(lines) if line.startswith(b"* FLAGS "))
    assert b"$Fresh" in lines[flags_at]
    # RFC 9051 §7.1: the PERMANENTFLAGS that follows a new FLAGS names the keyword too
    following = lines[flags_at + 1]
    assert following.startswith(b"* OK [PERMANENTFLAGS (")
    assert b"$Fresh" in following and b"\\*)]" in following
    assert any(re.match(rb"\* 1 FETCH \(FLAGS \([^)]*\$Fresh", line) for line in lines)
    sock.sendall(b"z LOGOUT\r\n")
    _read_until(sock, rb"z OK")
    sock.close()


def test_a_rename_to_a_deeper_name_lists_the_superiors_it_made(server: PocztaServer) -> None:
    """RFC 9051 6.3.6: RENAME to Trips/2024/Spring makes Trips and Trips/2024, as CREATE
    would, so LIST shows a selectable hierarchy and no orphan."""
    client = login(server)
    assert client.create("Holiday/Photos")[0] == "OK"
    assert client.rename("Holiday", "Trips/2024/Spring")[0] == "OK"
    _, listed = client.list('""', "Trips*")
    lines = {line.decode().rsplit(" ", 1)[-1].strip('"'): line.decode() for line in listed}
    assert set(lines) == {"Trips", "Trips/2024", "Trips/2024/Spring", "Trips/2024/Spring/Photos"}
    assert not any("\\Noselect" in line or "\\NonExistent" in line for line in lines.values())
    assert client.select("Trips/2024")[0] == "OK"
    _, holiday = client.list('""', "Holiday*")
    assert holiday == [None]
    client.logout()


def test_a_body_search_finds_a_word_in_any_part_and_encoding(server: PocztaServer) -> None:
    """SEARCH BODY looks into the decoded text: quoted-printable split across a soft line
    break, base64 HTML, 8-bit UTF-8; not into an attachment or a word split in two."""
    mime = (
        "From: carol@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n{part}\r\n--b\r\n'
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "bGlnaHRob3VzZQ==\r\n--b--\r\n"
    )
    html = b"<p>The <b>LightHouse</b> &amp; the sea</p>"
    parts = {
        "qp": "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 by the light=\r\nhouse.",
        "html": "Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(html).decode(),
        "utf8": "Content-Type: text/plain; charset=utf-8\r\n\r\nZażółć, LIGHTHOUSE!",
        "apart": "Content-Type: text/plain\r\n\r\nA light house, and the attachment.",
    }
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
        for subject, part in parts.items():
            message = mime.format(to=BOB, subject=subject, part=part)
            smtp.sendmail("carol@remote.test", [BOB], message.encode())
    client = login(server, BOB)
    client.select("INBOX")
    _, matched = client.uid("SEARCH", "BODY", "lighthouse")
    uids = b",".join(matched[0].split()).decode()
    _, found = client.uid("FETCH", uids, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = sorted(item[1].decode().split(":", 1)[1].strip() for item in found if item != b")")
    assert subjects == ["html", "qp", "utf8"]
    client.logout()


def test_flags_past_what_the_store_keeps_are_refused_with_limit(server: PocztaServer) -> None:
    """APPEND or STORE of keywords over 4,000 octets on one message: NO [LIMIT], nothing
    changed; as many as fit are kept."""
    client = login(server)
    client.create("KeywordLimit")
    many = " ".join(f"$Tag{n:04d}Longish" for n in range(300))  # 4,799 octets
    fitting = " ".join(f"$Tag{n:04d}Longish" for n in range(200))  # 3,199 octets
    status, data = client.append("KeywordLimit", f"({many})", None, b"Subject: k\r\n\r\nk\r\n")
    assert status == "NO" and b"[LIMIT]" in data[0]
    status, _ = client.append("KeywordLimit", f"({fitting})", None, b"Subject: k\r\n\r\nk\r\n")
    assert status == "OK"
    client.select("KeywordLimit")
    more = " ".join(f"$More{n:04d}Longish" for n in range(100))
    status, data = client.store("1", "+FLAGS", f"({more})")
    assert status == "NO" and b"[LIMIT]" in data[0]
    _, data = client.fetch("1", "(FLAGS)")
    assert data[0].count(b"$Tag") == 200 and b"$More" not in data[0]
    status, _ = client.store("1", "FLAGS", "(\\Seen $Short)")
    assert status == "OK"
    client.logout()
