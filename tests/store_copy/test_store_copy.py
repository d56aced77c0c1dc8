"""`poczta store copy`: a whole store from SQLite to PostgreSQL and back, identical, with
UIDVALIDITY and UIDs kept; an interrupted copy goes on; a store in use is not a target."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from poczta.store.copy import CopyError, CopyLimits, StoreTables, copy_store
from poczta.store.copy.run import _BodyStream
from poczta.store.copy.tables import TABLES, Kind, Row, Table
from poczta.store.postgres import dump as postgres_dump
from poczta.store.postgres.dump import PostgresTables
from poczta.store.postgres.store import PostgresStore
from poczta.store.sqlite import dump as sqlite_dump
from poczta.store.sqlite.dump import SqliteTables
from poczta.store.sqlite.store import SqliteStore
from tests.postgres.pg_helpers import connect, store_settings
from tests.store_copy.copy_helpers import body_files, imap_view, sqlite_tables

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer

USERS = ("bob@example.com", "carol@example.org")


async def _sqlite(root: Path, *, create: bool = False) -> SqliteTables:
    return await SqliteTables.open(root / "poczta.db", root / "blobs", create=create)


async def _postgres(server: PostgresServer, dsn: str, root: Path) -> PostgresTables:
    data_dir = root / "pg"
    return await PostgresTables.open(store_settings(server, dsn, data_dir), data_dir)


async def _copy(source: StoreTables, target: StoreTables, **options: Any) -> Any:
    try:
        return await copy_store(source, target, **options)
    finally:
        await source.close()
        await target.close()


async def _views_sqlite(root: Path) -> list[Any]:
    store = await SqliteStore.open(root / "poczta.db", root / "blobs")
    try:
        return [await imap_view(store, user) for user in USERS]
    finally:
        await store.close()


async def _views_postgres(server: PostgresServer, dsn: str, root: Path) -> list[Any]:
    data_dir = root / "pg"
    store = await PostgresStore.open(store_settings(server, dsn, data_dir), data_dir)
    try:
        return [await imap_view(store, user) for user in USERS]
    finally:
        await store.close()


def test_round_trip_through_postgres_gives_an_identical_store(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path, original: Path
) -> None:
    back = tmp_path / "back"
    seen_before = asyncio.run(_views_sqlite(original))
    before = sqlite_tables(original / "poczta.db")

    async def there_and_back() -> tuple[Any, Any]:
        middle = await _postgres(postgres, postgres_dsn, tmp_path)
        out = await _copy(await _sqlite(original), middle)
        middle = await _postgres(postgres, postgres_dsn, tmp_path)
        return out, await _copy(middle, await _sqlite(back, create=True))

    out, home = asyncio.run(there_and_back())
    assert out.verification.ok and home.verification.ok
    # 8 in INBOX (the 2 expunged are released, kept for the grace period), one shared by
    # two users, the big one, the one queued
    assert out.verification.bodies == home.verification.bodies == 11
    assert sqlite_tables(back / "poczta.db") == before
    assert body_files(back) == body_files(original)
    assert all(name == digest for name, digest in body_files(back).items())
    assert asyncio.run(_views_postgres(postgres, postgres_dsn, tmp_path)) == seen_before
    assert asyncio.run(_views_sqlite(back)) == seen_before
    assert asyncio.run(_made_on_postgres(postgres, postgres_dsn)) == (0, 0)


async def _made_on_postgres(server: PostgresServer, dsn: str) -> tuple[int, int]:
    """What the copy's target makes itself: (messages without FETCH text, mailboxes whose
    count is not that of their messages)."""
    conn = await connect(server, dsn)
    try:
        without = await conn.fetchval("SELECT count(*) FROM messages WHERE imap_envelope IS NULL")
        miscounted = await conn.fetchval(
            "SELECT count(*) FROM mailboxes b WHERE b.messages !="
            " (SELECT count(*) FROM messages m WHERE m.mailbox_id = b.id)"
        )
        return int(without), int(miscounted)
    finally:
        await conn.close()


def test_a_new_mailbox_on_the_copy_gets_a_new_uidvalidity_and_queue_ids_are_not_reused(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path, original: Path
) -> None:

    async def go() -> tuple[list[int], int, list[int]]:
        await _copy(await _sqlite(original), await _postgres(postgres, postgres_dsn, tmp_path))
        data_dir = tmp_path / "pg"
        store = await PostgresStore.open(store_settings(postgres, postgres_dsn, data_dir), data_dir)
        try:
            bob = await store.get_user("bob@example.com")
            assert bob is not None
            old = [box.uidvalidity for box in await store.list_mailboxes(bob.id)]
            made = await store.create_mailbox(bob.id, "New")
            queued = [entry.id for entry in await store.list_queue()]
            new_id = await store.enqueue("bob@example.com", ["x@example.net"], *await _body(store))
            return old, made.uidvalidity, [*queued, new_id]
        finally:
            await store.close()

    old, new, queue_ids = asyncio.run(go())
    assert new > max(old)
    assert queue_ids[-1] > max(queue_ids[:-1])


async def _body(store: PostgresStore) -> tuple[str, int]:
    data = b"Subject: x\r\n\r\nx\r\n"
    return await store.blobs.put(data), len(data)


class Interrupted(Exception):
    pass


class FailingTarget:
    """A target that fails its `allowed`+1st write of `table`, as a copy killed midway."""

    def __init__(self, inner: StoreTables, table: str, allowed: int) -> None:
        self.inner = inner
        self.table = table
        self.allowed = allowed
        self.description = inner.description

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _spend(self, table: str) -> None:
        if table != self.table:
            return
        if self.allowed == 0:
            raise Interrupted
        self.allowed -= 1

    async def write_rows(self, table: Table, rows: Sequence[Row], mark: str) -> None:
        self._spend(table.name)
        await self.inner.write_rows(table, rows, mark)

    async def write_bodies(
        self, rows: Sequence[Row], bodies: Sequence[AsyncGenerator[bytes, None]], mark: str
    ) -> None:
        self._spend("blobs")
        await self.inner.write_bodies(rows, bodies, mark)


SMALL = CopyLimits(rows=2, bodies=2, body_octets=1)  # many batches: one body per transaction


def _interrupt(
    source: Path, open_target: Callable[[], Awaitable[StoreTables]], table: str, allowed: int
) -> None:
    """A copy from the SQLite store at `source` that fails after `allowed` writes of `table`."""

    async def run() -> None:
        target = FailingTarget(await open_target(), table, allowed)
        with pytest.raises(Interrupted):
            await _copy(await _sqlite(source), target, limits=SMALL)

    asyncio.run(run())


@pytest.mark.parametrize(("table", "allowed"), [("users", 1), ("blobs", 3), ("messages", 0)])
def test_an_interrupted_copy_to_postgres_resumes_and_ends_identical(
    postgres: PostgresServer,
    postgres_dsn: str,
    tmp_path: Path,
    original: Path,
    table: str,
    allowed: int,
) -> None:
    back = tmp_path / "back"
    before = sqlite_tables(original / "poczta.db")

    _interrupt(original, lambda: _postgres(postgres, postgres_dsn, tmp_path), table, allowed)

    async def resumed() -> Any:
        return await _copy(
            await _sqlite(original), await _postgres(postgres, postgres_dsn, tmp_path), limits=SMALL
        )

    report = asyncio.run(resumed())
    assert report.resumed and report.verification.ok
    assert sum(report.copied.values()) < sum(c.target_rows for c in report.verification.tables)

    async def home() -> None:
        middle = await _postgres(postgres, postgres_dsn, tmp_path)
        await _copy(middle, await _sqlite(back, create=True))

    asyncio.run(home())
    assert sqlite_tables(back / "poczta.db") == before
    assert body_files(back) == body_files(original)


def test_an_interrupted_copy_to_sqlite_resumes_and_ends_identical(
    tmp_path: Path, original: Path
) -> None:
    copy = tmp_path / "copy"
    before = sqlite_tables(original / "poczta.db")
    _interrupt(original, lambda: _sqlite(copy, create=True), "blobs", 4)
    # a body whose file was in place when the copy was killed, before its row committed
    missing = sorted(set(body_files(original)) - set(body_files(copy)))[-1]
    shutil.copy(original / "blobs" / missing[:2] / missing, copy / "blobs" / missing[:2])
    _interrupt(original, lambda: _sqlite(copy, create=True), "messages", 2)
    report = asyncio.run(_copy_sqlite(original, copy))
    assert report.resumed and report.verification.ok
    assert sqlite_tables(copy / "poczta.db") == before
    assert body_files(copy) == body_files(original)


async def _copy_sqlite(original: Path, copy: Path) -> Any:
    return await _copy(await _sqlite(original), await _sqlite(copy, create=True), limits=SMALL)


def test_a_store_that_is_not_empty_is_refused(tmp_path: Path, original: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(original, other)
    before = sqlite_tables(other / "poczta.db")
    with pytest.raises(CopyError, match=r"is not empty \(2 rows in domains\)"):
        asyncio.run(_copy_sqlite(original, other))
    assert sqlite_tables(other / "poczta.db") == before


def test_an_unfinished_copy_of_another_store_is_refused(tmp_path: Path, original: Path) -> None:
    first, second, copy = original, tmp_path / "second", tmp_path / "copy"
    shutil.copytree(original, second)

    _interrupt(first, lambda: _sqlite(copy, create=True), "mailboxes", 1)
    with pytest.raises(CopyError, match="holds an unfinished copy of another store"):
        asyncio.run(_copy_sqlite(second, copy))


def test_a_source_that_changed_during_the_copy_fails_verification(
    tmp_path: Path, original: Path
) -> None:
    copy = tmp_path / "copy"

    _interrupt(original, lambda: _sqlite(copy, create=True), "aliases", 0)

    async def change_a_password() -> None:  # a change in rows already copied
        store = await SqliteStore.open(original / "poczta.db", original / "blobs")
        try:
            await store.set_password("bob@example.com", "$argon2id$new", "scram-new")
        finally:
            await store.close()

    asyncio.run(change_a_password())
    with pytest.raises(CopyError, match="differs from the source: users: 2 rows in the source"):
        asyncio.run(_copy_sqlite(original, copy))


def _expected_columns(
    left_out: dict[str, frozenset[str] | None], zones: bool
) -> dict[str, set[str]]:
    expected = {
        table.name: {
            name
            for column in table.columns
            for name in (
                (column.name, f"{column.name}_zone")
                if zones and column.kind is Kind.ZONED_TIME
                else (column.name,)
            )
        }
        for table in TABLES
    }
    for name, columns in left_out.items():
        if columns is None:
            expected[name] = set()
        else:
            expected[name] |= columns
    return expected


def test_every_table_and_column_of_the_sqlite_schema_is_copied_or_left_out_on_purpose(
    original: Path,
) -> None:
    conn = sqlite3.connect(original / "poczta.db")
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        found = {
            name: {str(row[1]) for row in conn.execute(f"PRAGMA table_info({name})")}
            for name in tables
        }
    finally:
        conn.close()
    expected = _expected_columns(sqlite_dump.LEFT_OUT, zones=False)
    assert set(found) == set(expected)
    kept = [n for n in expected if sqlite_dump.LEFT_OUT.get(n, frozenset()) is not None]
    assert {n: found[n] for n in kept} == {n: expected[n] for n in kept}


def test_every_table_and_column_of_the_postgres_schema_is_copied_or_left_out_on_purpose(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def columns() -> dict[str, set[str]]:
        tables = await _postgres(postgres, postgres_dsn, tmp_path)
        await tables.close()
        conn = await connect(postgres, postgres_dsn)
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            )
        finally:
            await conn.close()
        found: dict[str, set[str]] = {}
        for row in rows:
            found.setdefault(row["table_name"], set()).add(row["column_name"])
        return found

    found = asyncio.run(columns())
    expected = _expected_columns(postgres_dump.LEFT_OUT, zones=True)
    assert set(found) == set(expected)
    kept = [n for n in expected if postgres_dump.LEFT_OUT.get(n, frozenset()) is not None]
    assert {n: found[n] for n in kept} == {n: expected[n] for n in kept}


class ChunkedSource:
    """A source whose bodies come in pieces: only `read_bodies` is used."""

    description = "pieces"

    def __init__(self, bodies: dict[str, list[bytes]]) -> None:
        self.bodies = bodies

    async def read_bodies(self, digests: Sequence[str]) -> AsyncGenerator[tuple[str, bytes], None]:
        for digest in digests:
            for piece in self.bodies.get(digest, []):
                yield digest, piece


def test_a_batch_of_bodies_read_as_one_stream_gives_each_body_its_own_bytes() -> None:
    source = ChunkedSource({"a": [b"a1", b"a2"], "b": [b"b1", b"b2", b"b3"], "d": [b"d1"]})

    async def read() -> list[bytes]:
        stream = _BodyStream(source, ["a", "b", "c", "d"])  # type: ignore[arg-type]
        try:
            got = []
            for digest in ("b", "c", "d"):  # "a" is skipped, as a body the target has
                got.append(b"".join([piece async for piece in stream.body(digest)]))
            return got
        finally:
            await stream.close()

    assert asyncio.run(read()) == [b"b1b2b3", b"", b"d1"]


def test_an_empty_store_copies_to_an_empty_store(tmp_path: Path) -> None:
    empty, copy = tmp_path / "empty", tmp_path / "copy"

    async def make_empty() -> None:
        await (await _sqlite(empty, create=True)).close()

    asyncio.run(make_empty())
    report = asyncio.run(_copy_sqlite(empty, copy))
    assert report.verification.ok and report.verification.bodies == 0
    assert sqlite_tables(copy / "poczta.db") == sqlite_tables(empty / "poczta.db")


def test_a_value_the_target_refuses_stops_the_copy_with_one_line(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path, original: Path
) -> None:
    conn = sqlite3.connect(original / "poczta.db")
    with conn:  # SQLite keeps a NUL in text; PostgreSQL's text cannot hold one
        conn.execute("UPDATE greylist_networks SET network = ?", ("bad\x00net",))
    conn.close()

    async def go() -> None:
        await _copy(await _sqlite(original), await _postgres(postgres, postgres_dsn, tmp_path))

    with pytest.raises(CopyError) as refused:
        asyncio.run(go())
    assert str(refused.value).startswith("postgresql://poczta@127.0.0.1:")
    assert "\n" not in str(refused.value)
