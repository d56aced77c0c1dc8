"""DANE in delivery attempts: a `Deliverer` over loopback TLS to scripted peers, the DNS an
in-memory zone whose secure parts are chosen by each test.

What is looked at is what the queue would record per recipient (status, enhanced code,
text, TLS outcome), what the peer received, and whether it ever saw the message in the
clear.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from poczta.dns import TlsaRecord, ZoneResolver
from poczta.queue.connection import ConnectionCache, ConnectionKey, Timeouts, opportunistic_tls
from poczta.queue.dane import dane_policy
from poczta.queue.deliver import Deliverer, DeliverySettings, DomainJob
from poczta.smtp.client_events import OutboundMessage
from poczta.store.base import DELIVERED, PENDING, QueueId, RecipientAttempt
from tests.certificates import NOW, TestCa, self_signed, tlsa_record
from tests.e2e.harness import free_port
from tests.queue.peer import ScriptedMx, serving

MX, DOMAIN = "mx.dane.test", "dane.test"
BODY = b"From: alice@example.test\r\nSubject: dane\r\n\r\nHello.\r\n"
CA = TestCa()
CA_ISSUED = CA.issue(MX, "mx2.dane.test")
SELF_SIGNED = self_signed(MX)
EXPIRED = CA.issue(
    MX, not_before=NOW - datetime.timedelta(days=30), not_after=NOW - datetime.timedelta(days=1)
)


@dataclass
class Zone:
    """dane.test with its MX on 127.0.0.1; secure unless told otherwise."""

    port: int
    tlsa: Sequence[TlsaRecord | str] = ()
    resolver: ZoneResolver = field(init=False)

    def __post_init__(self) -> None:
        self.resolver = ZoneResolver.from_mapping(
            {
                DOMAIN: {"MX": [(10, MX)]},
                MX: {"A": ["127.0.0.1"]},
                "insecure.test": {"A": ["127.0.0.1"]},
            }
        )
        self.resolver.secure_zones.add(DOMAIN)
        if self.tlsa:
            self.resolver.add(f"_{self.port}._tcp.{MX}", "TLSA", *self.tlsa)


@asynccontextmanager
async def deliverer(zone: Zone) -> AsyncIterator[Deliverer]:
    timeouts = Timeouts(connect=2, command=5, data_init=5, data_block=5, data_end=5)
    settings = DeliverySettings(
        helo="out.example.test", port=zone.port, timeouts=timeouts, loopback_is_local=False
    )
    found = Deliverer(
        zone.resolver, settings, ConnectionCache(5.0), opportunistic=opportunistic_tls()
    )
    try:
        yield found
    finally:
        await found.cache.close()


async def attempt(d: Deliverer, domain: str = DOMAIN) -> RecipientAttempt:
    recorded: list[RecipientAttempt] = []

    async def record(results: Sequence[RecipientAttempt]) -> None:
        recorded.extend(results)

    message = OutboundMessage.to("alice@example.test", [f"bob@{domain}"], BODY)
    await d.deliver(DomainJob(QueueId(1), domain, message), record)
    [result] = recorded
    return result


def run(test: object) -> None:
    asyncio.run(asyncio.wait_for(test, 30))  # type: ignore[arg-type]


def test_a_matching_dane_ee_record_delivers_over_authenticated_tls(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        zone = Zone(port, [tlsa_record(SELF_SIGNED.cert, 3)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == DELIVERED
            assert result.tls is not None and result.tls.startswith("dane verified TLSv1.3 ")
            assert len(mx.messages) == 1 and b"MAIL FROM" in mx.after_tls[0]
            again = await attempt(d)  # the authenticated connection is reused
            assert again.status == DELIVERED and mx.connections == 1

    run(test())


def test_a_mismatching_record_defers_with_quit_and_never_in_plaintext(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        zone = Zone(port, [tlsa_record(CA_ISSUED.cert, 3)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == PENDING and result.reply_enhanced == "4.7.5"
            assert result.text == (
                f"TLS handshake with {MX} failed: DANE authentication failed: the certificate"
                f" chain matches none of the 1 TLSA records at _{port}._tcp.{MX}"
            )
            assert mx.messages == [] and mx.connections == 1  # no second try in plaintext
            await mx.settled()
            assert mx.after_tls == [b"QUIT\r\n"]

    run(test())


def test_dane_ta_delivers_to_a_server_with_a_ca_issued_certificate(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=CA_ISSUED.server_context(tmp_path))
        zone = Zone(port, [tlsa_record(CA.cert, 2)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == DELIVERED and (result.tls or "").startswith("dane verified")

    run(test())


def test_dane_ta_needs_the_whole_chain_from_the_server(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        # the CA certificate is not sent
        mx = ScriptedMx(tls=CA_ISSUED.server_context(tmp_path, with_chain=False))
        zone = Zone(port, [tlsa_record(CA.cert, 2)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == PENDING and "DANE authentication failed" in result.text
            zone.resolver.records[f"_{port}._tcp.{MX}"]["TLSA"] = [tlsa_record(CA.cert, 2, 1, 0)]
            result = await attempt(d)  # unless the record is the CA's key itself
            assert result.status == DELIVERED

    run(test())


def test_without_dnssec_the_records_are_ignored_and_tls_is_opportunistic(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        wrong = [tlsa_record(CA_ISSUED.cert, 3)]
        insecure_zone = Zone(port, wrong)
        insecure_zone.resolver.secure_zones.clear()
        untrusted = Zone(port, wrong)
        untrusted.resolver.validating = False
        insecure_host = Zone(port, wrong)  # a secure MX RRset naming an insecure host
        insecure_host.resolver.records[DOMAIN]["MX"] = [(10, "insecure.test")]
        insecure_host.resolver.add(f"_{port}._tcp.insecure.test", "TLSA", *wrong)
        async with serving(mx, "127.0.0.1", port):
            for zone in (insecure_zone, untrusted, insecure_host):
                async with deliverer(zone) as d:
                    result = await attempt(d)
                    assert result.status == DELIVERED
                    assert (result.tls or "").startswith("opportunistic TLSv1")
            assert len(mx.messages) == 3

    run(test())


def test_a_bogus_tlsa_answer_defers_without_connecting(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        zone = Zone(port)
        zone.resolver.bogus.add((f"_{port}._tcp.{MX}", "TLSA"))
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == PENDING and result.reply_enhanced == "4.7.5"
            assert result.text.startswith(f"4.7.5 TLSA lookup of _{port}._tcp.{MX} failed")
            assert "DNSSEC validation failed" in result.text
            assert mx.connections == 0

    run(test())


def test_a_bogus_first_mx_is_skipped_for_the_next(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=CA_ISSUED.server_context(tmp_path))
        zone = Zone(port, [tlsa_record(CA.cert, 2)])
        zone.resolver.records[DOMAIN]["MX"] = [(5, "mx1.dane.test"), (10, MX)]
        zone.resolver.add("mx1.dane.test", "A", "127.0.0.1")
        zone.resolver.bogus.add((f"_{port}._tcp.mx1.dane.test", "TLSA"))
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == DELIVERED and result.remote_mta == MX

    run(test())


def test_a_dane_host_without_starttls_gets_no_mail(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx()  # no STARTTLS
        zone = Zone(port, [tlsa_record(SELF_SIGNED.cert, 3)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == PENDING and result.reply_enhanced == "4.7.4"
            assert mx.messages == []

    run(test())


def test_only_unusable_records_make_tls_mandatory_but_unauthenticated(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        pkix_only = [tlsa_record(CA_ISSUED.cert, 1), tlsa_record(CA.cert, 0)]
        tls_peer = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        async with serving(tls_peer, "127.0.0.1", port), deliverer(Zone(port, pkix_only)) as d:
            result = await attempt(d)
            assert result.status == DELIVERED
            assert (result.tls or "").startswith("dane unauthenticated TLSv1")
        plain_peer = ScriptedMx()
        async with serving(plain_peer, "127.0.0.1", port), deliverer(Zone(port, pkix_only)) as d:
            result = await attempt(d)
            assert result.status == PENDING and plain_peer.messages == []

    run(test())


def test_a_dane_connection_is_never_taken_for_an_opportunistic_one() -> None:
    policy = dane_policy("_25._tcp.mx.dane.test", [tlsa_record(SELF_SIGNED.cert, 3)], (MX,))
    plain = ConnectionKey("127.0.0.1", 25)
    assert ConnectionKey("127.0.0.1", 25, dane=policy) != plain
    other = dane_policy("_25._tcp.mx.dane.test", [tlsa_record(CA.cert, 2)], (MX,))
    assert ConnectionKey("127.0.0.1", 25, dane=policy) != ConnectionKey("127.0.0.1", 25, dane=other)
    same = dane_policy("_25._tcp.mx.dane.test", [tlsa_record(SELF_SIGNED.cert, 3)], (MX,))
    assert hash(ConnectionKey("127.0.0.1", 25, dane=policy)) == hash(
        ConnectionKey("127.0.0.1", 25, dane=same)
    )


def test_a_domain_without_mx_is_its_own_host_for_dane(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        zone = Zone(port)
        implicit = "implicit.dane.test"
        zone.resolver.add(implicit, "A", "127.0.0.1")  # no MX: the domain itself
        zone.resolver.add(f"_{port}._tcp.{implicit}", "TLSA", tlsa_record(CA_ISSUED.cert, 3))
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d, implicit)
            assert result.status == PENDING and "DANE authentication failed" in result.text
            assert mx.messages == []

    run(test())


def test_a_numeric_mx_is_never_looked_up_for_tlsa(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=SELF_SIGNED.server_context(tmp_path))
        zone = Zone(port)
        zone.resolver.records[DOMAIN]["MX"] = [(10, "127.0.0.1")]
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == DELIVERED and (result.tls or "").startswith("opportunistic")
            assert all(name != "127.0.0.1" for name, _ in zone.resolver.queries)  # not a name

    run(test())


def test_dane_ta_defers_a_host_whose_certificate_expired_and_logs_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")

    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=EXPIRED.server_context(tmp_path))
        zone = Zone(port, [tlsa_record(CA.cert, 2)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == PENDING and result.reply_enhanced == "4.7.5"
            assert "DANE authentication failed" in result.text
            assert f"certificate 0 ({MX}) expired on" in result.text
            assert mx.messages == []

    run(test())
    [line] = [r for r in caplog.records if r.getMessage() == "queue.dane"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["result"] == "chain refused" and fields["tlsa"].endswith(f"._tcp.{MX}")
    assert "expired on" in fields["reason"]


def test_an_expired_dane_ta_host_is_passed_over_for_the_next_mx(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        expired = ScriptedMx(tls=EXPIRED.server_context(tmp_path))
        good = ScriptedMx(tls=CA_ISSUED.server_context(tmp_path))
        zone = Zone(port)
        zone.resolver.records[DOMAIN]["MX"] = [(5, "mx1.dane.test"), (10, MX)]
        zone.resolver.add("mx1.dane.test", "A", "127.0.0.2")
        for host in ("mx1.dane.test", MX):
            zone.resolver.add(f"_{port}._tcp.{host}", "TLSA", tlsa_record(CA.cert, 2))
        async with (
            serving(expired, "127.0.0.2", port),
            serving(good, "127.0.0.1", port),
            deliverer(zone) as d,
        ):
            result = await attempt(d)
        assert result.status == DELIVERED and result.remote_mta == MX
        assert expired.connections == 1 and expired.messages == []
        assert len(good.messages) == 1

    run(test())


def test_dane_ee_delivers_to_a_host_whose_certificate_expired(tmp_path: Path) -> None:
    async def test() -> None:
        port = free_port()
        mx = ScriptedMx(tls=EXPIRED.server_context(tmp_path))
        zone = Zone(port, [tlsa_record(EXPIRED.cert, 3)])
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
            assert result.status == DELIVERED and (result.tls or "").startswith("dane verified")

    run(test())


def test_the_tls_server_name_is_the_tlsa_base_domain_a_cname_led_to(tmp_path: Path) -> None:
    async def test() -> None:
        port, relay = free_port(), "relay.dane.test"
        context = SELF_SIGNED.server_context(tmp_path)
        names: list[str | None] = []
        context.sni_callback = lambda _conn, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
        mx = ScriptedMx(tls=context)
        zone = Zone(port)
        zone.resolver.records[MX] = {"CNAME": [relay]}
        zone.resolver.add(relay, "A", "127.0.0.1")
        zone.resolver.add(f"_{port}._tcp.{relay}", "TLSA", tlsa_record(SELF_SIGNED.cert, 3))
        async with serving(mx, "127.0.0.1", port), deliverer(zone) as d:
            result = await attempt(d)
        assert result.status == DELIVERED
        assert result.tls is not None and result.tls.startswith("dane verified ")
        assert names == [relay]  # RFC 7672 8.1: the SNI is the TLSA base domain

    run(test())
