"""Operating a running poczta: certificate reload on SIGHUP, storage failures answered 451."""

from __future__ import annotations

import hashlib
import shutil
import signal
import smtplib
import ssl
import time

import pytest

from poczta.net.tls import write_self_signed
from tests.e2e.harness import PocztaServer

pytestmark = pytest.mark.e2e


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context) as client:
        assert client.sock is not None
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert der
    return bytes(der)


def test_sighup_reloads_the_certificate(fresh_poczta: PocztaServer) -> None:
    port = fresh_poczta.ports["submissions"]
    before = hashlib.sha256(served_certificate(port)).hexdigest()
    tls_dir = fresh_poczta.root / "data" / "tls"
    write_self_signed(tls_dir / "cert.pem", tls_dir / "key.pem", "renewed.example.test")
    assert fresh_poczta.proc is not None
    fresh_poczta.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.1)
        after = hashlib.sha256(served_certificate(port)).hexdigest()
    assert after != before, "the new certificate was not served after SIGHUP"
    assert "tls.reloaded" in fresh_poczta.log_text()


def test_storage_failure_answers_451_and_keeps_nothing(fresh_poczta: PocztaServer) -> None:
    """A broken body directory (here: the temp dir replaced by a file) must give a 4xx."""
    staging = fresh_poczta.root / "data" / "blobs" / "tmp"
    shutil.rmtree(staging)
    staging.write_text("not a directory")
    try:
        with smtplib.SMTP("127.0.0.1", fresh_poczta.ports["smtp"], timeout=10) as client:
            client.ehlo("client.test")
            client.mail("carol@elsewhere.test")
            client.rcpt("alice@example.test")
            code, text = client.data(b"Subject: lost?\r\n\r\nbody\r\n")
            assert code == 451 and b"4.3.0" in text
            assert client.noop()[0] == 250  # the session goes on
    finally:
        staging.unlink()
        staging.mkdir()
    assert "lost?" not in [m["subject"] for m in fresh_poczta.messages("alice@example.test")]
    with smtplib.SMTP("127.0.0.1", fresh_poczta.ports["smtp"], timeout=10) as client:
        client.sendmail(
            "carol@elsewhere.test", ["alice@example.test"], b"Subject: after repair\r\n\r\nbody\r\n"
        )
    assert "after repair" in [m["subject"] for m in fresh_poczta.messages("alice@example.test")]
