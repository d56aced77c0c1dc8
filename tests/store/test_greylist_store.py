"""Greylisting state in SQLite: the migration, the `GreylistStore` contract, and reopening."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from poczta.mailauth.greylist import (
    Greylister,
    GreylistOutcome,
    GreylistSettings,
    GreylistStore,
    GreylistTriplet,
    MemoryGreylistStore,
    NetworkRecord,
    TripletRecord,
)
from poczta.store.base import StoreUnavailable
from poczta.store.sqlite.greylist import SqliteGreylistStore
from poczta.store.sqlite.migrate import available_migrations, current_version, migrate

T0 = 1_700_000_000.0
TRIPLET = GreylistTriplet("192.0.2.0/24", "alice@example.org", "bob@example.test")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_migration_applies_on_an_existing_version_1_database(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "mail.db", isolation_level=None)
    first = [m for m in available_migrations() if m[0] == 1]
    assert migrate(conn, first) == [1]
    conn.execute("INSERT INTO domains (name, created) VALUES ('example.test', 'now')")
    applied = migrate(conn)
    assert 2 in applied and current_version(conn) >= 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"greylist_triplets", "greylist_networks"} <= tables
    assert conn.execute("SELECT name FROM domains").fetchall() == [("example.test",)]
    assert migrate(conn) == []


async def _contract(store: GreylistStore) -> None:
    assert await store.get_triplet(TRIPLET) is None
    pending = TripletRecord(TRIPLET, T0, T0, T0 + 86_400)
    await store.put_triplet(pending)
    assert await store.get_triplet(TRIPLET) == pending
    passed = TripletRecord(TRIPLET, T0, T0 + 300, T0 + 400, passed_at=T0 + 300, attempts=2)
    await store.put_triplet(passed)
    assert await store.get_triplet(TRIPLET) == passed
    null_sender = GreylistTriplet("2001:db8::/64", "", "bob@example.test")
    await store.put_triplet(TripletRecord(null_sender, T0, T0, T0 + 100))
    assert await store.get_network("192.0.2.0/24") is None
    network = NetworkRecord("192.0.2.0/24", 3, T0 + 300, T0 + 500, T0 + 500)
    await store.put_network(network)
    assert await store.get_network("192.0.2.0/24") == network
    assert await store.sweep(T0 + 99) == 0
    assert await store.sweep(T0 + 100) == 1
    assert await store.get_triplet(null_sender) is None
    assert await store.sweep(T0 + 500) == 2
    assert await store.get_triplet(TRIPLET) is None
    assert await store.get_network("192.0.2.0/24") is None


def test_memory_store_contract() -> None:
    asyncio.run(_contract(MemoryGreylistStore()))


def test_sqlite_store_contract(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteGreylistStore.open(tmp_path / "mail.db")
        try:
            await _contract(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_state_survives_closing_and_reopening(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "data" / "mail.db"

    async def attempt() -> GreylistOutcome:
        store = await SqliteGreylistStore.open(path)
        try:
            greylist = Greylister(store, GreylistSettings(), clock)
            decision = await greylist.check("192.0.2.10", "alice@example.org", "bob@example.test")
            return decision.outcome
        finally:
            await store.close()

    assert asyncio.run(attempt()) is GreylistOutcome.DEFER
    clock.now += 300
    assert asyncio.run(attempt()) is GreylistOutcome.PASS
    clock.now += 86_400
    assert asyncio.run(attempt()) is GreylistOutcome.WHITELISTED


def test_concurrent_checks_share_one_connection(tmp_path: Path) -> None:
    async def main() -> list[GreylistOutcome]:
        store = await SqliteGreylistStore.open(tmp_path / "mail.db")
        try:
            greylist = Greylister(store, clock=Clock())
            decisions = await asyncio.gather(
                *(greylist.check("198.51.100.1", "", f"u{n}@example.test") for n in range(50))
            )
            return [d.outcome for d in decisions]
        finally:
            await store.close()

    assert asyncio.run(main()) == [GreylistOutcome.DEFER] * 50


def test_closed_store_refuses(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteGreylistStore.open(tmp_path / "mail.db")
        await store.close()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.get_triplet(TRIPLET)

    asyncio.run(main())


def test_unopenable_database_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    async def main() -> None:
        await SqliteGreylistStore.open(blocker / "mail.db")

    with pytest.raises(StoreUnavailable):
        asyncio.run(main())
