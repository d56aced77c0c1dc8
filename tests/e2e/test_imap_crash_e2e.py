"""kill -9 during a stream of IMAP APPENDs and SMTP deliveries into one INBOX (workers = 2).

After the restart every APPEND that got its tagged OK is there under its APPENDUID,
every delivery that got 250 is there, the UIDs are unique and increasing, every
message is whole, and UIDNEXT is past every UID a client saw before the kill.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, make_server
from tests.e2e.test_durability_e2e import body_for, sender_loop

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
APPENDS, DELIVERIES = 90, 60  # enough of each before the kill
WAIT = 60.0  # seconds: a bound for a stuck stream, not a measurement
FETCHED = re.compile(rb"UID (\d+) RFC822\.SIZE (\d+) BODY\[\] \{(\d+)\}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PocztaServer]:
    srv = make_server(tmp_path, services=("smtp", "imaps"), top_config="workers = 2\n")
    srv.start(own_group=True)
    yield srv
    if srv.proc is not None:
        srv.kill_group()


def appended_for(n: int) -> bytes:
    filler = hashlib.sha256(f"append {n}".encode()).hexdigest() * 50
    return (
        f"From: alice@example.test\r\nTo: alice@example.test\r\nSubject: append {n}\r\n"
        f"Message-ID: <append-{n}@example.test>\r\n\r\n{filler}\r\nend of append {n}\r\n"
    ).encode()


def login(srv: PocztaServer) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=client_tls())
    client.login(ALICE, PASSWORDS[ALICE])
    return client


def appender(srv: PocztaServer, start: int, acked: dict[int, int], stop: threading.Event) -> None:
    """APPENDs until the server goes away; `acked` maps each OK'd one to its APPENDUID."""
    try:
        client = login(srv)
        n = start
        while not stop.is_set():
            status, data = client.append("INBOX", None, None, appended_for(n))
            found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            if status != "OK" or found is None:
                return
            acked[n] = int(found.group(1))
            n += 1
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
        return


def watcher(srv: PocztaServer, seen: list[int], stop: threading.Event) -> None:
    """Another session that keeps looking: the UIDs it is shown count as handed out."""
    try:
        client = login(srv)
        client.select("INBOX")
        while not stop.is_set():
            _, data = client.uid("SEARCH", "ALL")
            seen.extend(int(uid) for uid in (data[0] or b"").split()[-1:])
            time.sleep(0.02)
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
        return


def fetch_all(srv: PocztaServer) -> tuple[int, int, list[tuple[int, int, bytes]]]:
    """UIDVALIDITY, UIDNEXT and (UID, RFC822.SIZE, BODY[]) of INBOX in sequence order."""
    client = login(srv)
    _, status = client.status("INBOX", "(UIDVALIDITY UIDNEXT)")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", status[0]).group(1))  # type: ignore[arg-type, union-attr]
    uidnext = int(re.search(rb"UIDNEXT (\d+)", status[0]).group(1))  # type: ignore[arg-type, union-attr]
    _, count = client.select("INBOX", readonly=True)
    _, data = (
        client.fetch("1:*", "(UID RFC822.SIZE BODY.PEEK[])") if int(count[0] or 0) else (None, [])
    )
    messages = []
    for item in data:
        if isinstance(item, tuple):
            head = FETCHED.search(item[0])
            assert head is not None, item[0]
            messages.append((int(head.group(1)), int(head.group(2)), item[1]))
    client.logout()
    return validity, uidnext, messages


def start_streams(
    srv: PocztaServer,
) -> tuple[dict[int, int], list[int], list[int], threading.Event, list[threading.Thread]]:
    appends: dict[int, int] = {}
    deliveries: list[int] = []
    seen: list[int] = []
    stop = threading.Event()
    threads = [threading.Thread(target=watcher, args=(srv, seen, stop))]
    for i in range(3):  # concurrent APPENDs share the store's group commits
        threads.append(threading.Thread(target=appender, args=(srv, i * 100_000, appends, stop)))
    for i in range(2):
        sender = threading.Thread(
            target=sender_loop, args=(srv.ports["smtp"], i * 100_000, deliveries, stop)
        )
        threads.append(sender)
    for thread in threads:
        thread.start()
    return appends, deliveries, seen, stop, threads


def test_kill_9_during_appends_and_deliveries(server: PocztaServer) -> None:
    validity_before = fetch_all(server)[0]
    appends, deliveries, seen, stop, threads = start_streams(server)
    deadline = time.monotonic() + WAIT
    while (len(appends) < APPENDS or len(deliveries) < DELIVERIES) and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill_group()  # every process at once, while the streams still write
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(appends) >= APPENDS and len(deliveries) >= DELIVERIES, "the streams stalled"
    handed_out = max([*appends.values(), *seen])

    server.start(own_group=True)
    validity, uidnext, messages = fetch_all(server)
    assert validity == validity_before
    uids = [uid for uid, _, _ in messages]
    assert uids == sorted(set(uids)), "UIDs not unique and increasing"
    assert uidnext > handed_out, f"UIDNEXT {uidnext} would hand out UID {handed_out} again"

    by_uid = {uid: body for uid, _, body in messages}
    for n, uid in appends.items():
        assert by_uid.get(uid) == appended_for(n), f"APPEND {n} (UID {uid}) lost or changed"
    subjects = {re.search(rb"Subject: crash (\d+)", body) for body in by_uid.values()}
    stored = {int(m.group(1)) for m in subjects if m is not None}
    missing = [n for n in deliveries if n not in stored]
    assert not missing, f"{len(missing)} acknowledged deliveries lost: {missing[:5]}"
    for _uid, size, body in messages:  # acknowledged or not, nothing is half there
        assert size == len(body)
        appended = re.search(rb"Subject: append (\d+)", body)
        delivered = re.search(rb"Subject: crash (\d+)", body)
        if appended is not None:
            assert body == appended_for(int(appended.group(1)))
        else:
            assert delivered is not None and body.endswith(body_for(int(delivered.group(1))))

    client = login(server)  # and the next APPEND goes after all of them
    _, data = client.append("INBOX", None, None, appended_for(-1))
    found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
    assert found is not None and int(found.group(1)) >= uidnext
    client.logout()
