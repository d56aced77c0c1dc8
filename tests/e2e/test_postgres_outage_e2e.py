"""The PostgreSQL store going away under SMTP load: `poczta serve` (two workers) on a
cluster of its own, a few clients sending in a loop and recording every reply.

While the database is down every transaction gets a temporary refusal (451 4.3.0), an
open IMAP session's command `NO [UNAVAILABLE]`, a new IMAP or POP3 login a temporary
failure (never "wrong password"); no worker dies; once the database is back mail flows
again without a restart, and every message that got 250 is in the store exactly once.
The same holds when the postmaster is killed with SIGKILL and recovers from its log.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import re
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import (
    PASSWORDS,
    PocztaServer,
    add_test_accounts,
    client_tls,
    make_server,
    postgres_store_config,
)
from tests.pg_server import PostgresServer, postgres_server

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
DOWN_FOR = 10.0  # seconds the database stays stopped
WAIT = 30.0  # seconds: a bound on each wait, not a measurement
CLIENTS = 3


@dataclass(frozen=True)
class Attempt:
    """One message a client tried to send: when, and the reply that decided it (the
    first refusal, or the one to the end of DATA; None when the connection was lost)."""

    client: int
    message_id: str
    started: float
    ended: float
    code: int | None
    text: str


@dataclass
class SmtpLoad:
    """A few clients sending to alice, one connection per message, until `stop`."""

    port: int
    attempts: list[Attempt] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for client in range(CLIENTS):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Attempt]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(WAIT)
        return list(self.attempts)

    def _run(self, client: int) -> None:
        n = 0
        while not self._stopping.is_set():
            n += 1
            message_id = f"<load-{client}-{n}-{time.monotonic_ns()}@outage.test>"
            started = time.monotonic()
            code, text = self._send(message_id)
            with self._lock:
                self.attempts.append(
                    Attempt(client, message_id, started, time.monotonic(), code, text)
                )
            time.sleep(0.02)

    def _send(self, message_id: str) -> tuple[int | None, str]:
        message = (
            f"From: carol@remote.test\r\nTo: {ALICE}\r\nSubject: load\r\n"
            f"Message-ID: {message_id}\r\n\r\nHello.\r\n"
        )
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=WAIT) as smtp:
                smtp.ehlo("client.test")
                for code, text in (smtp.mail("carol@remote.test"), smtp.rcpt(ALICE)):
                    if code != 250:
                        return code, text.decode()
                try:
                    code, text = smtp.data(message)
                except smtplib.SMTPDataError as refused:
                    code, text = refused.smtp_code, refused.smtp_error
                return code, text.decode()
        except (OSError, smtplib.SMTPException) as exc:
            return None, repr(exc)

    def since(self, moment: float) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.started >= moment]

    def wait_until_each_client_is_accepted(self, after: float) -> None:
        """Wait until every client got a 250 for a message it began after `after`."""
        deadline = time.monotonic() + WAIT
        while {a.client for a in self.since(after) if a.code == 250} != set(range(CLIENTS)):
            assert time.monotonic() < deadline, Counter(a.code for a in self.since(after))
            time.sleep(0.05)


@dataclass
class Outage:
    """The private cluster and the poczta serving from it."""

    postgres: PostgresServer
    poczta: PocztaServer
    database: str

    def stored_message_ids(self) -> Counter[str]:
        rows = StoreBackend("postgres", self.postgres).fetch(
            self.poczta, "SELECT message_id FROM messages"
        )
        return Counter(str(message_id) for (message_id,) in rows)

    def worker_pids(self) -> list[str]:
        return re.findall(r"worker\.started pid=(\d+)", self.poczta.log_text())


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    with postgres_server() as postgres:
        database = postgres.new_database("outage")
        srv = make_server(
            tmp_path_factory.mktemp("outage"),
            services=("smtp", "submissions", "imaps", "pop3s"),
            top_config="workers = 2\n",
            store=postgres_store_config(postgres.dsn(database), postgres.password_file),
        )
        add_test_accounts(srv)
        srv.start()
        try:
            yield Outage(postgres, srv, database)
        finally:
            if srv.proc is not None:
                srv.stop()


def assert_every_acknowledged_message_stored_once(outage: Outage, attempts: list[Attempt]) -> None:
    stored = outage.stored_message_ids()
    acknowledged = [a.message_id for a in attempts if a.code == 250]
    assert acknowledged, "nothing was accepted"
    missing = [m for m in acknowledged if stored[m] == 0]
    twice = [m for m in acknowledged if stored[m] > 1]
    assert (missing, twice) == ([], [])
    assert not [a for a in attempts if a.code is not None and a.code >= 500]
    assert not [a for a in attempts if a.code is None], "a connection was lost"


def assert_no_worker_died(outage: Outage, pids: list[str]) -> None:
    """The master started no worker again: the ones of before still run."""
    assert outage.worker_pids() == pids


class Sessions:
    """An IMAP session of alice with INBOX selected and a POP3 one, opened while the
    database is up."""

    def __init__(self, srv: PocztaServer) -> None:
        self.srv = srv
        self.imap = self.new_imap()
        self.imap.login(ALICE, PASSWORDS[ALICE])
        assert self.imap.select("INBOX")[0] == "OK"
        self.pop = self.new_pop3()
        self.pop.user(ALICE)
        self.pop.pass_(PASSWORDS[ALICE])
        assert self.pop.stat()[0] > 0

    def new_imap(self) -> imaplib.IMAP4_SSL:
        return imaplib.IMAP4_SSL(
            "127.0.0.1", self.srv.ports["imaps"], ssl_context=client_tls(), timeout=WAIT
        )

    def new_pop3(self) -> poplib.POP3_SSL:
        return poplib.POP3_SSL(
            "127.0.0.1", self.srv.ports["pop3s"], context=client_tls(), timeout=WAIT
        )

    def close(self) -> None:
        for leave in (self.imap.logout, self.pop.quit):
            with contextlib.suppress(Exception):
                leave()


def pop3_error(error: poplib.error_proto) -> str:
    """The reply poplib raised (bytes from the server, a str of its own when it got none)."""
    reply = error.args[0]
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def check_sessions_while_down(sessions: Sessions) -> None:
    typ, data = sessions.imap.status("INBOX", "(MESSAGES)")
    assert (typ, data[0][:13]) == ("NO", b"[UNAVAILABLE]"), data
    sessions.imap.send(b"p1 UID FETCH 1 BODY.PEEK[]\r\np2 FETCH 1 (FLAGS)\r\n")  # one run
    answers = [sessions.imap.readline(), sessions.imap.readline()]
    assert [a[:19] for a in answers] == [b"p1 NO [UNAVAILABLE]", b"p2 NO [UNAVAILABLE]"], answers
    fresh = sessions.new_imap()
    with pytest.raises(imaplib.IMAP4.error) as refused:
        fresh.login(ALICE, PASSWORDS[ALICE])
    assert "[UNAVAILABLE]" in str(refused.value), refused.value  # not AUTHENTICATIONFAILED
    fresh.shutdown()
    with pytest.raises(poplib.error_proto) as failed:
        sessions.pop.retr(1)
    assert pop3_error(failed.value).startswith("-ERR [SYS/TEMP]"), failed.value


def check_sessions_after(sessions: Sessions) -> None:
    """The sessions of before work again, and new ones log in."""
    deadline = time.monotonic() + WAIT
    while (typ := sessions.imap.status("INBOX", "(MESSAGES)")[0]) != "OK":
        assert time.monotonic() < deadline, typ
        time.sleep(0.1)
    fresh = sessions.new_imap()
    assert fresh.login(ALICE, PASSWORDS[ALICE])[0] == "OK"
    fresh.logout()
    assert any(line.startswith(b"Message-ID: <load-") for line in sessions.pop.retr(1)[1])
    sessions.pop.quit()  # the maildrop's lock is let go
    pop = sessions.new_pop3()
    pop.user(ALICE)
    assert pop.pass_(PASSWORDS[ALICE]).startswith(b"+OK")
    pop.quit()


def test_a_database_stopped_under_load_gives_only_temporary_failures(outage: Outage) -> None:
    load = SmtpLoad(outage.poczta.ports["smtp"])
    load.start()
    sessions: Sessions | None = None
    try:
        load.wait_until_each_client_is_accepted(after=0)
        pids = outage.worker_pids()
        assert len(pids) == 2
        sessions = Sessions(outage.poczta)
        outage.postgres.stop()  # a fast shutdown: sessions end, new connections are refused
        down_from = time.monotonic()
        check_sessions_while_down(sessions)
        time.sleep(max(0.0, down_from + DOWN_FOR - time.monotonic()))
        down_until = time.monotonic()
        outage.postgres.restart()
        load.wait_until_each_client_is_accepted(after=time.monotonic())
        check_sessions_after(sessions)
    finally:
        attempts = load.stop()
        if sessions is not None:
            sessions.close()
    while_down = [a for a in attempts if down_from <= a.started and a.ended <= down_until]
    assert len(while_down) >= CLIENTS, "no load while the database was down"
    assert {(a.code, a.text[:5]) for a in while_down} == {(451, "4.3.0")}
    assert_every_acknowledged_message_stored_once(outage, attempts)
    assert_no_worker_died(outage, pids)


def test_a_database_killed_under_load_loses_nothing_acknowledged(outage: Outage) -> None:
    load = SmtpLoad(outage.poczta.ports["smtp"])
    load.start()
    try:
        began = time.monotonic()
        load.wait_until_each_client_is_accepted(after=began)
        pids = outage.worker_pids()
        outage.postgres.stop(signal.SIGKILL)  # no shutdown at all: crash recovery at start
        outage.postgres.restart()
        load.wait_until_each_client_is_accepted(after=time.monotonic())
    finally:
        attempts = load.stop()
    assert_every_acknowledged_message_stored_once(
        outage, [a for a in attempts if a.started >= began]
    )
    assert_no_worker_died(outage, pids)


def test_a_pop3_login_while_the_database_is_down_is_a_temporary_failure(
    outage: Outage,
) -> None:
    outage.postgres.stop()
    try:
        pop = poplib.POP3_SSL(
            "127.0.0.1", outage.poczta.ports["pop3s"], context=client_tls(), timeout=WAIT
        )
        pop.user(ALICE)
        with pytest.raises(poplib.error_proto) as failed:
            pop.pass_(PASSWORDS[ALICE])
        assert pop3_error(failed.value).startswith("-ERR [SYS/TEMP]"), failed.value
    finally:
        outage.postgres.restart()


def test_an_smtp_login_while_the_database_is_down_is_a_temporary_failure(
    outage: Outage,
) -> None:
    outage.postgres.stop()
    try:
        with smtplib.SMTP_SSL(
            "127.0.0.1", outage.poczta.ports["submissions"], context=client_tls(), timeout=WAIT
        ) as smtp:
            smtp.ehlo("client.test")
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                smtp.login(ALICE, PASSWORDS[ALICE])
            assert refused.value.smtp_code == 454, refused.value
    finally:
        outage.postgres.restart()
