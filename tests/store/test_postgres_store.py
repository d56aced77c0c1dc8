"""The PostgreSQL store with several nodes and a database that goes away: UIDs taken by
concurrent deliveries from several pools never repeat, and a dead database makes calls
fail with StoreUnavailable (never a hang), after which the store works again by itself;
`open_store` opens it when configured, and refuses a schema newer than this poczta's."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from poczta.config import Config
from poczta.config_schema import StoreSettings
from poczta.message import parse_message
from poczta.store import (
    DeliveryTarget,
    FlagMode,
    LimitExceeded,
    MailboxId,
    NotFound,
    StoreUnavailable,
    UserId,
    open_store,
)
from poczta.store.postgres import messages
from poczta.store.postgres.access import Database
from poczta.store.postgres.batch import file_new_messages
from poczta.store.postgres.bodies import CHUNK, blob_digest
from poczta.store.postgres.connect import (
    IDLE_IN_TRANSACTION_TIMEOUT,
    LOCK_WAIT_SHARE,
    create_pool,
)
from poczta.store.postgres.connect import connect as connect_store
from poczta.store.postgres.store import PostgresStore
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import connect, store_settings
from tests.store.store_helpers import WHEN, make_message, with_user

WAIT = 30.0  # seconds: a bound for a hung test, not a measurement


async def _deliver_data(
    store: PostgresStore, data: bytes, users: list[UserId]
) -> list[tuple[int, int]]:
    done = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(u) for u in users])
    return [(d.mailbox_id, d.uid) for d in done]


async def _deliver(store: PostgresStore, n: int, users: list[UserId]) -> list[tuple[int, int]]:
    return await _deliver_data(store, make_message(n), users)


def test_concurrent_deliveries_from_several_pools_never_share_a_uid(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        nodes = [await PostgresStore.open(settings, tmp_path, max_size=4) for _ in range(4)]
        try:
            bob = await with_user(nodes[0], "bob@example.com")
            carol = await with_user(nodes[0], "carol@example.com")
            # each message to both users, in either order: the two INBOX rows are locked
            # the same way round whichever comes first, so no two deliveries deadlock
            pairs = [[bob, carol], [carol, bob]]
            work = [
                _deliver(node, 100 * i + n, pairs[n % 2])
                for i, node in enumerate(nodes)
                for n in range(20)
            ]
            results = await asyncio.wait_for(asyncio.gather(*work), WAIT)
            taken = [place for result in results for place in result]
            assert len(taken) == len(set(taken)) == 160
            for user in (bob, carol):
                inbox = await nodes[1].get_mailbox(user, "INBOX")
                metas = await nodes[2].fetch_meta(inbox.id)
                assert [m.uid for m in metas] == list(range(1, 81))
                assert len({m.modseq for m in metas}) == 80
                assert inbox.uidnext == 81 and inbox.messages == 80
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())


def test_concurrent_deliveries_into_one_mailbox_take_consecutive_uids_new_body_or_not(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    shared = make_message(999)  # every fourth message: a body that is stored already

    async def main() -> None:
        nodes = [await PostgresStore.open(settings, tmp_path, max_size=4) for _ in range(4)]
        try:
            bob = await with_user(nodes[0], "bob@example.com")
            bodies = [shared if n % 4 == 0 else make_message(n) for n in range(80)]
            work = [_deliver_data(nodes[n % 4], data, [bob]) for n, data in enumerate(bodies)]
            results = await asyncio.wait_for(asyncio.gather(*work), WAIT)
            inbox = await nodes[1].get_mailbox(bob, "INBOX")
            assert sorted(uid for [(_, uid)] in results) == list(range(1, 81))
            assert inbox.uidnext == 81 and inbox.messages == 80
            metas = await nodes[2].fetch_meta(inbox.id)
            assert len({m.modseq for m in metas}) == 80
            for data, [(mailbox_id, uid)] in zip(bodies, results, strict=True):
                assert await nodes[3].read_message(mailbox_id, uid) == data
        finally:
            for node in nodes:
                await node.close()
        conn = await connect(postgres, postgres_dsn)
        try:
            refs = await conn.fetchval(
                "SELECT refs FROM blobs WHERE digest = $1", blob_digest(shared)
            )
            bodies_stored = await conn.fetchval("SELECT count(*) FROM blobs")
        finally:
            await conn.close()
        assert (refs, bodies_stored) == (20, 61)

    asyncio.run(main())


def test_a_new_body_for_a_mailbox_deleted_meanwhile_is_rolled_back_with_the_delivery(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    data = make_message(5)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        try:
            bob = await with_user(store)
            archive = await store.get_mailbox(bob, "Archive")
            await store.delete_mailbox(bob, "Archive")
            # what a delivery does after it found the mailbox, had it been deleted since:
            # the one statement stores nothing, the transaction is rolled back
            parsed = parse_message(data)
            filing = messages.Filing([archive.id], [[]], {})
            item = messages.new_message(data, parsed, WHEN, filing)
            alone = await store._db.statement(lambda c: file_new_messages(c, [item]))
            assert alone == [None]
            with pytest.raises(NotFound):
                await store._db.write(
                    lambda c: messages.file_message(c, data, parsed, WHEN, [archive.id], [[]], None)
                )
            with pytest.raises(NotFound):
                await store.blobs.read(blob_digest(data))
        finally:
            await store.close()

    asyncio.run(main())


def test_one_statement_files_a_batch_in_order_and_leaves_out_bodies_already_there(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        try:
            bob = await with_user(store)
            inbox, archive = [await store.get_mailbox(bob, n) for n in ("INBOX", "Archive")]
            stored = make_message(0)
            [before] = await _deliver_data(store, stored, [bob])
            boxes = [inbox.id, archive.id, inbox.id, archive.id, inbox.id, inbox.id]
            bodies = [make_message(n) for n in (1, 2, 3, 1, 0, 4)]  # 1 twice, 0 stored
            flags = [[], ["\\Seen"], [], [], [], ["$Label", "\\Flagged"]]
            items = [
                messages.new_message(
                    data, parse_message(data), WHEN, messages.Filing([box], [f], {})
                )
                for box, data, f in zip(boxes, bodies, flags, strict=True)
            ]
            done = await store._db.statement(lambda c: file_new_messages(c, items))
            places = [None if d is None else (d.mailbox_id, d.uid) for d in done]
            assert before == (inbox.id, 1)
            assert places == [
                (inbox.id, 2),
                (archive.id, 1),
                (inbox.id, 3),
                None,  # the same body as the first: left for a transaction
                None,  # stored before the batch
                (inbox.id, 4),
            ]
            metas = await store.fetch_meta(inbox.id)
            assert [(m.uid, sorted(m.flags)) for m in metas] == [
                (1, []),
                (2, []),
                (3, []),
                (4, ["$Label", "\\Flagged"]),
            ]
            assert len({m.modseq for m in metas}) == 4
            assert [m.flags for m in await store.fetch_meta(archive.id)] == [{"\\Seen"}]
            for place, data in zip(places, bodies, strict=True):
                if place is not None:
                    assert await store.read_message(*place) == data
            assert (await store.quota_states([bob]))[bob].usage.messages == 5
        finally:
            await store.close()

    asyncio.run(main())


def test_concurrent_renames_to_one_name_from_several_pools_get_already_exists(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        nodes = [await PostgresStore.open(settings, tmp_path, max_size=2) for _ in range(3)]
        try:
            bob = await with_user(nodes[0], "bob@example.com")
            for round_ in range(5):
                names = [f"R{round_}.{n}" for n in range(len(nodes))]
                for name in names:
                    await nodes[0].create_mailbox(bob, name)
                renames = [
                    node.rename_mailbox(bob, name, f"Same{round_}")
                    for node, name in zip(nodes, names, strict=True)
                ]
                results = await asyncio.gather(*renames, return_exceptions=True)
                assert sorted(type(r).__name__ for r in results) == [
                    "AlreadyExists",
                    "AlreadyExists",
                    "NoneType",
                ], results
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())


class _Gate:
    """A TCP relay to the database that can be cut (connections dropped, new ones
    refused) or made to swallow everything (a server that no longer answers)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mute = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0  # accepted so far

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if not self.mute:
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def _through(settings: StoreSettings, gate: _Gate, dsn: str) -> StoreSettings:
    database = dsn.rpartition("/")[2]
    user = dsn.partition("//")[2].partition("@")[0]
    return StoreSettings(
        backend="postgres",
        dsn=f"postgresql://{user}@127.0.0.1:{gate.port}/{database}",
        password_file=settings.password_file,
    )


def test_a_dead_database_fails_calls_and_the_store_recovers_by_itself(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        gate = _Gate(postgres.host, postgres.port)
        await gate.open()
        store = await PostgresStore.open(
            _through(settings, gate, postgres_dsn), tmp_path, command_timeout=1.0
        )
        try:
            bob = await with_user(store)
            gate.mute = True  # the server stops answering: a statement times out
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.list_domains(), WAIT)
            gate.mute = False
            await gate.cut()  # the server is gone: connections drop, new ones are refused
            for call in (store.list_domains(), _deliver(store, 1, [bob])):
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(call, WAIT)
            await gate.open()  # back, on the same port
            assert await asyncio.wait_for(store.list_domains(), WAIT) == ["example.com"]
            assert await _deliver(store, 2, [bob]) != []
        finally:
            gate.mute = False
            await store.close()
            await gate.cut()

    asyncio.run(main())


def test_a_node_frozen_in_a_transaction_holds_up_the_others_only_briefly(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """A node that stops in the middle of a delivery (its machine frozen or cut off: no
    kernel closes its connection) leaves its transaction idle with the INBOX row locked;
    the server ends that session after the idle limit poczta sets on each connection,
    so the other nodes' deliveries go on, and the frozen one fails when it wakes."""
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        default = await create_pool(settings, tmp_path, min_size=1, max_size=1)
        frozen_pool = await create_pool(settings, tmp_path, max_size=1, idle_timeout=0.5)
        try:
            shown = await default.fetchval("SHOW idle_in_transaction_session_timeout")
            assert shown == f"{IDLE_IN_TRANSACTION_TIMEOUT:g}s"
            bob = await with_user(store)
            inbox = await store.get_mailbox(bob, "INBOX")
            locked, woken = asyncio.Event(), asyncio.Event()

            async def delivery_cut_short(conn: Any) -> None:
                await conn.execute("SELECT 1 FROM mailboxes WHERE id = $1 FOR UPDATE", inbox.id)
                locked.set()
                await woken.wait()  # frozen here: the transaction idle, the row locked
                await conn.execute("SELECT 1")

            frozen = asyncio.ensure_future(Database(frozen_pool).write(delivery_cut_short))
            await asyncio.wait_for(locked.wait(), WAIT)
            assert await asyncio.wait_for(_deliver(store, 1, [bob]), WAIT) == [(inbox.id, 1)]
            woken.set()
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(frozen, WAIT)
        finally:
            await store.close()
            await default.close()
            frozen_pool.terminate()

    asyncio.run(main())


def test_the_frozen_nodes_other_waits_for_the_lock_give_up_before_it_is_free(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """A frozen node may have had a second delivery waiting for the INBOX row it locked.
    That wait gives up before the idle limit ends the holder, so when the row is free
    the live node's delivery, queued after it, takes it, not the frozen one."""
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        default = await create_pool(settings, tmp_path, min_size=1, max_size=1)
        frozen_pool = await create_pool(settings, tmp_path, max_size=2, idle_timeout=0.5)
        try:
            shown = await default.fetchval("SHOW lock_timeout")
            assert shown == f"{LOCK_WAIT_SHARE * IDLE_IN_TRANSACTION_TIMEOUT:g}s"
            bob = await with_user(store)
            inbox = await store.get_mailbox(bob, "INBOX")
            locked, woken = asyncio.Event(), asyncio.Event()
            taken: list[str] = []

            def frozen_delivery(name: str) -> Any:
                async def deliver(conn: Any) -> None:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT 1 FROM mailboxes WHERE id = $1 FOR UPDATE", inbox.id
                        )
                        taken.append(name)
                        locked.set()
                        await woken.wait()  # frozen here: the transaction idle, the row locked
                        await conn.execute("SELECT 1")

                async def on_its_connection() -> None:  # a frozen node runs nothing again
                    async with frozen_pool.acquire() as conn:
                        await deliver(conn)

                return on_its_connection()

            async def waiting_for_the_row(count: int) -> None:
                while (
                    await default.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                    < count
                ):
                    await asyncio.sleep(0.02)

            first = asyncio.ensure_future(frozen_delivery("first"))
            await asyncio.wait_for(locked.wait(), WAIT)
            second = asyncio.ensure_future(frozen_delivery("second"))
            await asyncio.wait_for(waiting_for_the_row(1), WAIT)
            live = asyncio.ensure_future(_deliver(store, 1, [bob]))
            assert await asyncio.wait_for(live, WAIT) == [(inbox.id, 1)]
            assert taken == ["first"]  # the second frozen one did not take the row first
            woken.set()
            with pytest.raises(asyncpg.LockNotAvailableError):  # it gave up waiting
                await asyncio.wait_for(second, WAIT)
            with contextlib.suppress(asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                await asyncio.wait_for(first, WAIT)  # ended by the server meanwhile
        finally:
            await store.close()
            await default.close()
            frozen_pool.terminate()

    asyncio.run(main())


def test_open_store_opens_postgres_and_refuses_a_newer_schema_in_one_line(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    config = Config.dev(tmp_path).replace(store=settings)

    async def main() -> None:
        store = await open_store(config)
        try:
            await store.add_domain("example.com")
        finally:
            await store.close()
        reopened = await open_store(config)  # migrated already: nothing to do
        try:
            assert await reopened.list_domains() == ["example.com"]
        finally:
            await reopened.close()
        conn = await connect(postgres, postgres_dsn)
        try:
            await conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'x')")
        finally:
            await conn.close()
        with pytest.raises(StoreUnavailable) as refused:
            await open_store(config)
        assert "newer" in str(refused.value) and "\n" not in str(refused.value)

    asyncio.run(main())


def test_a_big_body_is_kept_in_chunks_and_read_back_whole(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    data = make_message(1, size=3 * CHUNK + 17)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        try:
            bob = await with_user(store)
            [(mailbox_id, uid)] = await _deliver_data(store, data, [bob])
            assert await store.read_message(mailbox_id, uid) == data
        finally:
            await store.close()
        conn = await connect(postgres, postgres_dsn)
        try:
            sizes = await conn.fetch(
                "SELECT octet_length(data) FROM blob_chunks ORDER BY blob_id, seq"
            )
        finally:
            await conn.close()
        assert [row[0] for row in sizes] == [CHUNK, CHUNK, CHUNK, len(data) - 3 * CHUNK]

    asyncio.run(main())


def test_watchers_hear_of_changes_after_the_listening_connection_was_lost(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        gate = _Gate(postgres.host, postgres.port)
        await gate.open()
        watching = await PostgresStore.open(_through(settings, gate, postgres_dsn), tmp_path)
        writing = await PostgresStore.open(settings, tmp_path)
        try:
            bob = await with_user(writing)
            inbox = await watching.get_mailbox(bob, "INBOX")
            changes = watching.changes(inbox.id, await watching.mailbox_version(inbox.id))
            first = asyncio.ensure_future(anext(changes))
            await _deliver(writing, 1, [bob])
            assert (await asyncio.wait_for(first, WAIT)).messages == 1
            await gate.cut()  # the listening connection is lost ...
            second = asyncio.ensure_future(anext(changes))
            await _deliver(writing, 2, [bob])  # ... while this commits
            await gate.open()
            assert (await asyncio.wait_for(second, WAIT)).messages == 2
            await changes.aclose()
        finally:
            await writing.close()
            await watching.close()
            await gate.cut()

    asyncio.run(main())


def test_a_listening_connection_that_stops_answering_is_made_again(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        gate = _Gate(postgres.host, postgres.port)
        await gate.open()
        writing = await PostgresStore.open(settings, tmp_path)
        # Only the listening connection goes through the gate: its reads of mailbox states
        # and the test's calls do not.
        watching = PostgresStore(
            await create_pool(settings, tmp_path),
            listen=lambda: connect_store(_through(settings, gate, postgres_dsn), tmp_path),
            listen_keepalive=0.2,
            listen_timeout=1.0,
        )
        try:
            bob = await with_user(writing)
            inbox = await watching.get_mailbox(bob, "INBOX")
            changes = watching.changes(inbox.id, await watching.mailbox_version(inbox.id))
            first = asyncio.ensure_future(anext(changes))
            await _deliver(writing, 1, [bob])
            assert (await asyncio.wait_for(first, WAIT)).messages == 1
            opened = gate.connections
            gate.mute = True  # connected, but nothing comes back: the notification is lost
            second = asyncio.ensure_future(anext(changes))
            await _deliver(writing, 2, [bob])
            async with asyncio.timeout(WAIT):  # the listener gave the silent connection up
                while gate.connections == opened:
                    await asyncio.sleep(0.05)
            gate.mute = False
            assert (await asyncio.wait_for(second, WAIT)).messages == 2
            await changes.aclose()
        finally:
            gate.mute = False
            await writing.close()
            await watching.close()
            await gate.cut()

    asyncio.run(main())


def test_a_live_write_whose_wait_for_a_lock_gives_up_is_run_again(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """A wait past `lock_timeout` (here 0.4 s) is a failure the write runs again, so a
    live node whose lock is held a little longer still succeeds."""
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        holder = await create_pool(settings, tmp_path, min_size=1, max_size=1)
        waiting = await create_pool(settings, tmp_path, max_size=1, idle_timeout=0.5)
        try:
            bob = await with_user(store)
            inbox = await store.get_mailbox(bob, "INBOX")
            locked, tries = asyncio.Event(), []

            async def hold() -> None:
                async with holder.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT 1 FROM mailboxes WHERE id = $1 FOR UPDATE", inbox.id)
                    locked.set()
                    await asyncio.sleep(1.0)  # longer than one wait, shorter than the retries

            async def lock_it(conn: Any) -> int:
                tries.append(1)
                return int(
                    await conn.fetchval(
                        "SELECT uidnext FROM mailboxes WHERE id = $1 FOR UPDATE", inbox.id
                    )
                )

            held = asyncio.ensure_future(hold())
            await asyncio.wait_for(locked.wait(), WAIT)
            assert await asyncio.wait_for(Database(waiting).write(lock_it), WAIT) == 1
            assert len(tries) > 1  # it gave up waiting at least once, and was run again
            await held
        finally:
            await store.close()
            await holder.close()
            waiting.terminate()

    asyncio.run(main())


def test_flags_too_long_for_the_index_are_refused_and_the_others_in_the_batch_made(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """Keywords past what the MODSEQ index can hold (IMAP refuses them before: this is
    two sessions adding at once) give LimitExceeded for that change alone; the changes
    batched with it are made."""
    settings = store_settings(postgres, postgres_dsn, tmp_path)

    async def main() -> None:
        store = await PostgresStore.open(settings, tmp_path)
        try:
            bob = await with_user(store, "bob@example.com")
            [(inbox, first), (_, second)] = [
                *(await _deliver(store, 1, [bob])),
                *(await _deliver(store, 2, [bob])),
            ]
            keywords = [f"k{n:04d}{'x' * 20}{n * 7919 % 10007}" for n in range(600)]
            too_long = store.set_flags(MailboxId(inbox), [first], keywords, FlagMode.ADD)
            fine = store.set_flags(MailboxId(inbox), [second], ["$Label1"], FlagMode.ADD)
            results = await asyncio.gather(too_long, fine, return_exceptions=True)
            assert isinstance(results[0], LimitExceeded)
            [meta_first, meta_second] = await store.fetch_meta(MailboxId(inbox), [first, second])
            assert meta_first.flags == frozenset()
            assert meta_second.flags == frozenset({"$Label1"})
        finally:
            await store.close()

    asyncio.run(main())
