"""`poczta serve` on the PostgreSQL store with two workers: mail taken over SMTP reads
back over IMAP and POP3, the way it does on the embedded store."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
from collections.abc import Iterator

import pytest

from tests.e2e.harness import (
    PASSWORDS,
    PocztaServer,
    client_tls,
    make_server,
    postgres_store_config,
    remove_sqlite_files,
)
from tests.pg_server import PostgresServer

ALICE = "alice@example.test"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("poczta-pg")
    store = postgres_store_config(postgres.dsn(postgres.new_database()), postgres.password_file)
    srv = make_server(root, store, services=("smtp", "imaps", "pop3s"), top_config="workers = 2\n")
    remove_sqlite_files(srv.root / "data")  # what `poczta init` made
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def deliver(srv: PocztaServer, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail(
            "carol@remote.test",
            [ALICE],
            f"From: carol@remote.test\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\nHi.\r\n",
        )


def test_mail_taken_on_postgres_reads_back_over_imap_and_pop3(server: PocztaServer) -> None:
    for n in range(6):  # the two workers each take some of the connections
        deliver(server, f"pg {n}")
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls())
    try:
        imap.login(ALICE, PASSWORDS[ALICE])
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data == [b"6"]
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = sorted(part[1].decode().strip() for part in data if isinstance(part, tuple))
        assert subjects == [f"Subject: pg {n}" for n in range(6)]
        typ, data = imap.uid("SEARCH", "ALL")
        assert data[0].split() == [str(uid).encode() for uid in range(1, 7)]
    finally:
        imap.logout()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    pop = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=context, timeout=30)
    try:
        pop.user(ALICE)
        pop.pass_(PASSWORDS[ALICE])
        count, _ = pop.stat()
        assert count == 6
        lines = pop.retr(1)[1]
        assert any(line.startswith(b"Subject: pg ") for line in lines)
    finally:
        pop.quit()


def test_the_store_is_the_database_not_the_data_dir(server: PocztaServer) -> None:
    deliver(server, "where")
    assert not list((server.root / "data").glob("poczta.db*"))
    assert "where" in [m["subject"] for m in server.messages(ALICE)], "the CLI reads it too"
