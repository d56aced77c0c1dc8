"""Outbound delivery end to end: `poczta serve` delivering its queue to other servers.

A real DNS server (dnsmasq) publishes remote.test's MX (a second poczta on 127.0.0.2),
the sender domain's SPF record (`ip4:127.0.0.1`) and its DKIM keys. Alice submits to
the sending poczta; the receiving one stores the message with SPF and DKIM passing.
A third poczta on 127.0.0.3 is the smarthost of a fourth: AUTH over STARTTLS on its
submission port, with its certificate trusted through `relay_ca_file`.
"""

from __future__ import annotations

import json
import os
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import StoreBackend
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import (
    PASSWORDS,
    PocztaServer,
    client_tls,
    eventually,
    make_server,
    start_servers,
    stop_servers,
)

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
BOB = "bob@remote.test"
BOB_PASSWORD = "bob-remote-secret-9"
RECEIVER, RELAY, DOWN = "127.0.0.2", "127.0.0.3", "127.0.0.9"  # nothing listens on DOWN
WAIT = 30.0  # a bound on every wait for mail to arrive


@dataclass
class Servers:
    receiver: PocztaServer
    sender: PocztaServer
    relay: PocztaServer
    relayed: PocztaServer  # sends everything through `relay`


def _dns(port: int) -> str:
    return f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {port}\ntimeout = 1.0\n'


def _outbound(port: int, extra: str = "") -> str:
    return (
        f"\n[outbound]\nport = {port}\nloopback_is_local = false\nretry_first = 0.5\n"
        f"retry_max = 2\nconnect_timeout = 2\ncommand_timeout = 10\n{extra}"
    )


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend
) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("outbound")
    for name in ("rx", "tx", "relay", "relayed"):
        (root / name).mkdir()
    remote = ("mx.remote.test", ("remote.test",))
    receiver = make_server(
        root / "rx",
        services=("smtp",),
        host=RECEIVER,
        hostname=remote[0],
        domains=remote[1],
        store=store_backend.config(*remote),
    )
    receiver.cli("user", "add", BOB, "--password-stdin", stdin=BOB_PASSWORD + "\n")
    sender = make_server(
        root / "tx", services=("smtp", "submissions"), store=store_backend.config()
    )
    sender.cli("dkim", "generate", "example.test")
    sender.cli("dkim", "generate", "example.test", "-s", "ed", "-a", "ed25519")
    keys = json.loads(sender.cli("dkim", "list", "--json").stdout)
    relay = make_server(
        root / "relay",
        services=("smtp", "submission"),
        host=RELAY,
        hostname="smtp.relay.test",
        store=store_backend.config("smtp.relay.test"),
    )
    relayed = make_server(
        root / "relayed", services=("smtp", "submissions"), store=store_backend.config()
    )
    txt = {"example.test": "v=spf1 ip4:127.0.0.1 -all"}
    txt |= {f"{k['selector']}._domainkey.{k['domain']}": k["record"] for k in keys}
    hosts = {"mx.remote.test": RECEIVER, "smtp.relay.test": RELAY, "mx.down.test": DOWN}
    mx = [("remote.test", "mx.remote.test", 10), ("down.test", "mx.down.test", 10)]
    with dnsmasq_server(root, txt=txt, hosts=hosts, mx=mx) as dns:
        receiver.extra_config += _dns(dns) + "\n[checks]\ngreylisting = false\n"
        sender.extra_config += _dns(dns) + _outbound(receiver.ports["smtp"])
        relay.extra_config += _dns(dns) + _outbound(receiver.ports["smtp"])
        credentials = relayed.root / "data" / "relay-passwords"
        credentials.write_text(
            f"smtp.relay.test:{relay.ports['submission']} {ALICE}:{PASSWORDS[ALICE]}\n"
        )
        os.chmod(credentials, 0o600)
        relayed.extra_config += _dns(dns) + _outbound(
            receiver.ports["smtp"],
            f'relay = "smtp.relay.test:{relay.ports["submission"]}"\n'
            f'relay_ca_file = "{relay.root / "data" / "tls" / "cert.pem"}"\n',
        )
        group = Servers(receiver, sender, relay, relayed)
        for server in (receiver, sender, relay, relayed):
            server.write_config()
        start_servers(receiver, sender, relay, relayed)
        try:
            yield group
        finally:
            stop_servers(receiver, sender, relay, relayed)


def submit(server: PocztaServer, subject: str, to: str = BOB) -> None:
    message = (
        f"From: Alice <{ALICE}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nHello Bob.\r\n"
    ).encode()
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], timeout=10, context=client_tls()
    ) as client:
        client.login(ALICE, PASSWORDS[ALICE])
        client.sendmail(ALICE, [to], message)


def arrived(server: PocztaServer, user: str, subject: str, containing: str = "") -> bytes:
    """The message with `subject` (and `containing` that text) once it is in the user's
    INBOX, waiting at most WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for meta in server.messages(user):
            if meta["subject"] == subject:
                data = server.message_bytes(user, meta["uid"])
                if containing.encode() in data:
                    return data
        time.sleep(0.2)
    raise AssertionError(f"{subject!r} did not arrive for {user}:\n{server.log_text()[-3000:]}")


def test_delivered_to_another_poczta_signed_and_spf_passing(servers: Servers) -> None:
    submit(servers.sender, "direct delivery")
    stored = arrived(servers.receiver, BOB, "direct delivery").decode()
    results = stored.split("Authentication-Results: ", 1)[1].split("\r\nReceived:", 1)[0]
    assert results.startswith("mx.remote.test;")
    assert "spf=pass" in results and "smtp.mailfrom=alice@example.test" in results
    assert "dkim=pass" in results and "header.d=example.test" in " ".join(results.split())
    assert stored.startswith(f"Return-Path: <{ALICE}>")
    assert "TLS" in stored.split("Received: ", 2)[1]  # it came over STARTTLS
    # the receiver stores the message before the sender has logged the attempt and
    # removed its queue entry
    eventually(lambda: "queue.attempt" in servers.sender.log_text())
    assert "opportunistic" in servers.sender.log_text()
    eventually(lambda: json.loads(servers.sender.cli("queue", "list", "--json").stdout) == [])


def test_a_smarthost_with_auth_over_starttls_relays_everything(servers: Servers) -> None:
    submit(servers.relayed, "through the smarthost")
    stored = arrived(servers.receiver, BOB, "through the smarthost").decode()
    assert "by smtp.relay.test" in stored  # the smarthost's own Received header
    log = servers.relayed.log_text()
    assert "smtp.relay.test[127.0.0.3]" in log and "verified" in log
    relay_log = servers.relay.log_text()
    assert "smtp.accepted" in relay_log and f"user={ALICE}" in relay_log


def test_an_unknown_remote_user_bounces_to_the_sender(servers: Servers) -> None:
    submit(servers.sender, "to nobody", to="nobody@remote.test")
    bounce = arrived(servers.sender, ALICE, "Undelivered Mail Returned to Sender").decode()
    assert "Final-Recipient: rfc822; nobody@remote.test" in bounce
    assert "Status: 5.1.1" in bounce and "Action: failed" in bounce


def _queued(server: PocztaServer) -> list[dict[str, object]]:
    return list(json.loads(server.cli("queue", "list", "--json").stdout))


def _tried(server: PocztaServer, recipient: str) -> dict[str, object]:
    """The queue entry for `recipient` once it has been tried at least once."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for entry in _queued(server):
            if recipient in entry["recipients"] and entry["attempts"]:  # type: ignore[operator]
                return entry
        time.sleep(0.2)
    raise AssertionError(f"no attempt for {recipient}:\n{server.log_text()[-3000:]}")


def test_the_queue_commands(servers: Servers) -> None:
    sender = servers.sender
    submit(sender, "to a dead host", to="carol@down.test")
    entry = _tried(sender, "carol@down.test")
    queue_id = str(entry["id"])
    assert "connect to mx.down.test[127.0.0.9]" in str(entry["last_error"])
    listed = sender.cli("queue", "list").stdout  # not a terminal: whole values, tab-separated
    assert f"{queue_id}\t{ALICE}\tcarol@down.test\t" in listed
    shown = json.loads(sender.cli("queue", "show", queue_id, "--json").stdout)
    [carol] = shown["recipients"]
    assert carol["status"] == "pending" and carol["attempts"] >= 1
    assert "mx.down.test" in carol["last_reply"] and carol["tls"] == ""
    assert "carol@down.test\tpending" in sender.cli("queue", "show", queue_id).stdout

    sender.cli("queue", "hold", queue_id)
    held = next(e for e in _queued(sender) if str(e["id"]) == queue_id)
    assert held["held"] is True and "held" in sender.cli("queue", "list").stdout
    sender.cli("queue", "release", queue_id)
    assert "1 queue entries due now" in sender.cli("queue", "flush", queue_id).stdout

    sender.cli("queue", "bounce", queue_id)
    subject = "Undelivered Mail Returned to Sender"
    bounce = arrived(sender, ALICE, subject, "Final-Recipient: rfc822; carol@down.test").decode()
    assert "returned to the sender by the administrator" in bounce
    deadline = time.monotonic() + WAIT
    while any(str(e["id"]) == queue_id for e in _queued(sender)):
        assert time.monotonic() < deadline, "the bounced entry stays queued"
        time.sleep(0.2)

    submit(sender, "deleted", to="dan@down.test")
    doomed = str(_tried(sender, "dan@down.test")["id"])
    assert "deleted queue entry" in sender.cli("queue", "delete", doomed).stdout
    assert all(str(e["id"]) != doomed for e in _queued(sender))
    missing = sender.cli("queue", "show", doomed, check=False)
    assert missing.returncode != 0 and f"no queue entry {doomed}" in missing.stderr
