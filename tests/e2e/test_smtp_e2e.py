"""SMTP end to end: smtplib against a running `poczta serve` on every port and TLS mode."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from email.message import EmailMessage

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import PASSWORDS, PocztaServer

pytestmark = pytest.mark.e2e


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(sender: str, to: str, subject: str, body: str = "Hello there.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def subjects(poczta: PocztaServer, user: str, mailbox: str = "INBOX") -> list[str]:
    return [m["subject"] for m in poczta.messages(user, mailbox)]


def mx(poczta: PocztaServer) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", poczta.ports["smtp"], timeout=10)


def submission(poczta: PocztaServer, user: str = "alice@example.test") -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", poczta.ports["submission"], timeout=10)
    client.starttls(context=client_tls())
    client.login(user, PASSWORDS[user])
    return client


def test_mx_plain_delivers_to_inbox_with_received_header(poczta: PocztaServer) -> None:
    with mx(poczta) as client:
        client.send_message(message("carol@elsewhere.test", "alice@example.test", "plain mx"))
    stored = [m for m in poczta.messages("alice@example.test") if m["subject"] == "plain mx"]
    assert len(stored) == 1
    data = poczta.message_bytes("alice@example.test", stored[0]["uid"])
    assert data.startswith(b"Return-Path: <carol@elsewhere.test>\r\nReceived: from ")
    assert b"by mx.example.test (poczta) with ESMTP id " in data
    assert b"\r\nSubject: plain mx\r\n" in data


def test_mx_starttls_records_tls_in_received(poczta: PocztaServer) -> None:
    with mx(poczta) as client:
        client.starttls(context=client_tls())
        client.send_message(message("carol@elsewhere.test", "bob@example.test", "tls mx"))
    uid = next(m["uid"] for m in poczta.messages("bob@example.test") if m["subject"] == "tls mx")
    data = poczta.message_bytes("bob@example.test", uid)
    assert b"with ESMTPS id" in data
    assert b"\ttls TLS_" in data and b"TLSv1." in data


def test_mx_never_offers_auth_and_refuses_relay(poczta: PocztaServer) -> None:
    with mx(poczta) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        client.starttls(context=client_tls())
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQtMQ==")
        assert code >= 500
        client.mail("carol@elsewhere.test")
        code, text = client.rcpt("victim@remote.test")
        assert code == 554 and b"5.7.1" in text
        code, text = client.rcpt("nobody@example.test")
        assert code == 550 and b"5.1.1" in text


def test_aliases_plus_addressing_and_shared_body(
    poczta: PocztaServer, store_backend: StoreBackend
) -> None:
    before = store_backend.stored_bodies(poczta)
    with mx(poczta) as client:
        client.sendmail(
            "carol@elsewhere.test",
            ["info@example.test", "alice+lists@example.test", "bob@example.test"],
            message("carol@elsewhere.test", "info@example.test", "fan out").as_bytes(),
        )
    # alias and plus-address both reach alice, once; bob gets his own copy
    assert subjects(poczta, "alice@example.test").count("fan out") == 1
    assert subjects(poczta, "bob@example.test").count("fan out") == 1
    assert store_backend.stored_bodies(poczta) == before + 1  # two mailboxes, one stored body


def test_submission_requires_tls_before_auth(poczta: PocztaServer) -> None:
    with smtplib.SMTP("127.0.0.1", poczta.ports["submission"], timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQtMQ==")
        assert code == 530 and b"STARTTLS" in text.upper()
        code, text = client.docmd("MAIL", "FROM:<alice@example.test>")
        assert code == 530


def test_submission_requires_auth_before_mail(poczta: PocztaServer) -> None:
    with smtplib.SMTP("127.0.0.1", poczta.ports["submission"], timeout=10) as client:
        client.starttls(context=client_tls())
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"]
        code, _ = client.mail("alice@example.test")
        assert code == 530


@pytest.mark.sqlite_only("the failure delay, not the store")
def test_submission_wrong_password_is_refused(poczta: PocztaServer) -> None:
    with smtplib.SMTP("127.0.0.1", poczta.ports["submission"], timeout=10) as client:
        client.starttls(context=client_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login("alice@example.test", "wrong")
        assert excinfo.value.smtp_code == 535


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_submission_auth_local_and_remote(poczta: PocztaServer, mechanism: str) -> None:
    with smtplib.SMTP("127.0.0.1", poczta.ports["submission"], timeout=10) as client:
        client.starttls(context=client_tls())
        client.ehlo("client.test")
        client.user, client.password = "alice@example.test", PASSWORDS["alice@example.test"]
        auth = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        code, _ = client.auth(mechanism, auth)
        assert code == 235
        subject = f"submitted {mechanism}"
        client.send_message(
            message("alice@example.test", "bob@example.test", subject),
            to_addrs=["bob@example.test", "dave@remote.test"],
        )
    assert subject in subjects(poczta, "bob@example.test")
    queued = poczta.cli("queue", "list", "--json").stdout
    assert "dave@remote.test" in queued


def test_submissions_implicit_tls(poczta: PocztaServer) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", poczta.ports["submissions"], timeout=10, context=client_tls()
    ) as client:
        client.login("bob@example.test", PASSWORDS["bob@example.test"])
        client.send_message(message("bob@example.test", "alice@example.test", "via 465"))
    assert "via 465" in subjects(poczta, "alice@example.test")


def test_submission_refuses_forged_envelope_sender(poczta: PocztaServer) -> None:
    with submission(poczta) as client:
        code, text = client.mail("bob@example.test")
        assert code == 553 and b"5.7.1" in text
        code, _ = client.mail("alice.smith@example.test")  # alice's own alias is fine
        assert code == 250


def test_submission_refuses_forged_header_from(poczta: PocztaServer) -> None:
    with submission(poczta) as client, pytest.raises(smtplib.SMTPDataError) as excinfo:
        client.sendmail(
            "alice@example.test",
            ["bob@example.test"],
            message("bob@example.test", "bob@example.test", "forged").as_bytes(),
        )
    assert excinfo.value.smtp_code == 550
    assert "forged" not in subjects(poczta, "bob@example.test")


def test_tls_below_1_2_is_refused(poczta: PocztaServer) -> None:
    context = client_tls()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError, OSError)):
        smtplib.SMTP_SSL("127.0.0.1", poczta.ports["submissions"], timeout=10, context=context)
