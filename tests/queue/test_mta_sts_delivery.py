"""Delivery under MTA-STS over loopback: the queue runner, an HTTPS policy server and
STARTTLS peers whose certificates a test CA signed (or another CA, or for other names).

What the peers received and what the queue recorded per recipient (state, text, TLS
outcome) are what the tests look at.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from poczta.dns import ZoneResolver
from poczta.queue.mta_sts_cache import MtaStsPolicies
from poczta.queue.mta_sts_fetch import PolicyFetcher
from poczta.store.base import DELIVERED, PENDING, QueueRecipient
from poczta.store.sqlite.store import SqliteStore
from tests.certificates import TestCa
from tests.e2e.harness import free_port
from tests.queue.peer import ScriptedMx, serving
from tests.queue.policy_server import serving_policies
from tests.queue.test_runner import MovingClock, Setup, run, setup

GOOD, STRANGER, PLAIN = "127.0.0.1", "127.0.0.2", "127.0.0.3"  # the MX peers' addresses
KEEPER = "keeper@plain.test"  # always deferred (no STARTTLS where TLS is required)
# domain: (mode, the policy's mx patterns, the domain's MX hosts as (name, address))
DOMAINS = {
    "sts.test": ("enforce", "mx.sts.test", [("mx.sts.test", GOOD)]),
    "wrongname.test": ("enforce", "mx.wrongname.test", [("mx.wrongname.test", GOOD)]),
    "untrusted.test": ("enforce", "mx.untrusted.test", [("mx.untrusted.test", STRANGER)]),
    "unlisted.test": ("enforce", "mx.elsewhere.test", [("mx.sts.test", GOOD)]),
    "mixed.test": ("enforce", "*.sts.test", [("mx.mixed.test", GOOD), ("mx2.sts.test", GOOD)]),
    "plain.test": ("enforce", "mx.plain.test", [("mx.plain.test", PLAIN)]),
    "testing.test": ("testing", "mx.testing.test", [("mx.testing.test", GOOD)]),
}


def zone() -> ZoneResolver:
    resolver = ZoneResolver.from_mapping({"remote.test": {"MX": [(10, "mx.sts.test")]}})
    for domain, (_, _, hosts) in DOMAINS.items():
        resolver.add(domain, "MX", *((10 * (n + 1), name) for n, (name, _) in enumerate(hosts)))
        for name, address in hosts:
            if not resolver.records.get(name):
                resolver.add(name, "A", address)
        resolver.add(f"_mta-sts.{domain}", "TXT", "v=STSv1; id=1")
        resolver.add(f"mta-sts.{domain}", "A", "127.0.0.1")
    return resolver


@dataclass
class World:
    setup: Setup
    good: ScriptedMx  # a certificate of the test CA for mx.sts.test and mx2.sts.test
    stranger: ScriptedMx  # a certificate of another CA, for mx.untrusted.test
    plain: ScriptedMx  # no STARTTLS

    async def send(self, *recipients: str) -> list[QueueRecipient]:
        """Queue a message to `recipients`, deliver it, and return what the queue recorded
        for them. (With a recipient more that stays pending, so that the entry and its
        delivered recipients stay to be looked at.)"""
        await self.setup.queue(*recipients, KEEPER)
        queue_id = max(e.id for e in await self.setup.store.list_queue())  # the newest
        await self.setup.runner.run_once()
        entry = await self.setup.store.get_queue_entry(queue_id)
        return [r for r in entry.recipients if r.address != KEEPER]


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    ca, stranger_ca = TestCa(), TestCa("another CA")
    good = ScriptedMx(tls=ca.issue("mx.sts.test", "mx2.sts.test").server_context(tmp_path))
    stranger = ScriptedMx(
        tls=stranger_ca.issue("mx.untrusted.test").server_context(tmp_path, with_chain=False)
    )
    plain = ScriptedMx()
    port = free_port()
    async with AsyncExitStack() as stack:
        for peer, address in ((good, GOOD), (stranger, STRANGER), (plain, PLAIN)):
            await stack.enter_async_context(serving(peer, address, port))
        hosts = [f"mta-sts.{d}" for d in DOMAINS]
        policies = stack.enter_context(serving_policies(ca.issue(*hosts).server_context(tmp_path)))
        for domain, (mode, patterns, _) in DOMAINS.items():
            mx = "".join(f"mx: {p}\n" for p in patterns.split())
            text = f"version: STSv1\nmode: {mode}\n{mx}max_age: 86400\n"
            policies.policies[f"mta-sts.{domain}"] = text.encode()
        resolver, trusted = zone(), ca.client_context()

        def mta_sts(store: SqliteStore, clock: MovingClock) -> MtaStsPolicies:
            fetcher = PolicyFetcher(resolver, trusted, port=policies.port, timeout=10)
            return MtaStsPolicies(resolver, store, fetcher, clock)

        runner = setup(tmp_path, port, resolver=resolver, mta_sts=mta_sts, mta_sts_tls=trusted)
        yield World(await stack.enter_async_context(runner), good, stranger, plain)


def test_enforce_with_a_listed_mx_and_a_good_certificate_delivers_verified(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            [bob] = await w.send("bob@sts.test")
            assert bob.status == DELIVERED
            [received] = w.good.messages
            assert received.recipients == ["bob@sts.test"] and received.tls.startswith("TLSv1.")

    run(test)


def test_the_tls_outcome_names_mta_sts(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            [bob] = await w.send("bob@sts.test")
            assert bob.status == DELIVERED and bob.remote_mta == "mx.sts.test"
            assert bob.tls is not None and bob.tls.startswith("mta-sts verified TLSv1.")

    run(test)


def test_an_unlisted_mx_is_never_used(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            [bob] = await w.send("bob@unlisted.test")
            assert bob.status == PENDING and bob.reply_enhanced == "4.7.0"
            assert bob.last_error == (
                "4.7.0 MTA-STS policy of unlisted.test (enforce) lists none of its MX hosts"
                " (mx.sts.test); it allows mx.elsewhere.test"
            )
            assert w.good.connections == 0

    run(test)


def test_unlisted_mx_hosts_are_skipped_for_a_listed_one(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            [bob, dave] = await w.send("bob@mixed.test", "dave@sts.test")
            assert (bob.status, bob.remote_mta) == (DELIVERED, "mx2.sts.test")
            assert bob.tls is not None and bob.tls.startswith("mta-sts verified")
            assert dave.status == DELIVERED and w.good.connections == 2

    run(test)


@pytest.mark.parametrize(
    ("recipient", "why"),
    [
        ("bob@wrongname.test", "Hostname mismatch"),
        ("bob@untrusted.test", "unable to get local issuer certificate"),
        ("bob@plain.test", "TLS is required, but was not offered by mx.plain.test"),
    ],
)
def test_enforce_without_a_valid_certificate_defers(
    tmp_path: Path, recipient: str, why: str
) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            [bob] = await w.send(recipient)
            domain = recipient.partition("@")[2]
            assert bob.status == PENDING and bob.reply_enhanced in ("4.7.4", "4.7.5")
            assert bob.last_error is not None and why in bob.last_error
            assert bob.last_error.startswith(f"MTA-STS policy of {domain} (enforce): ")
            assert w.good.messages == w.stranger.messages == w.plain.messages == []
            entry = (await w.setup.store.list_queue())[0]
            assert entry.attempts == 1 and entry.next_attempt > w.setup.clock.now  # retried

    run(test)


def test_a_verified_connection_serves_only_the_name_it_was_verified_for(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            await w.send("bob@sts.test")
            [carol] = await w.send("carol@wrongname.test")  # the same address and port
            assert carol.status == PENDING and "Hostname mismatch" in (carol.last_error or "")
            assert len(w.good.messages) == 1 and w.good.connections == 2

    run(test)


def test_an_opportunistic_connection_is_not_reused_under_a_policy(tmp_path: Path) -> None:
    async def test() -> None:
        async with world(tmp_path) as w:
            [bob] = await w.send("bob@remote.test")  # no policy: to mx.sts.test all the same
            assert bob.tls is not None and bob.tls.startswith("opportunistic TLSv1.")
            [carol] = await w.send("carol@sts.test")
            assert carol.tls is not None and carol.tls.startswith("mta-sts verified")
            assert w.good.connections == 2

    run(test)


def test_testing_mode_logs_the_failure_and_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")

    async def test() -> None:
        async with world(tmp_path) as w:
            [bob] = await w.send("bob@testing.test")
            assert bob.status == DELIVERED
            assert bob.tls is not None and bob.tls.startswith("opportunistic TLSv1.")
            assert len(w.good.messages) == 1

    run(test)
    [line] = [r for r in caplog.records if r.getMessage() == "mta_sts.testing"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["domain"] == "testing.test" and fields["host"].startswith("mx.testing.test[")
    assert "Hostname mismatch" in fields["failure"]
