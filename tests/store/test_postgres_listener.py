"""The change feed's listening connection on PostgreSQL: kept alive by its own questions
while notifications flow, and ended by the server once a frozen node stops asking."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, UserId
from poczta.store.postgres.connect import connect as connect_store
from poczta.store.postgres.connect import create_pool
from poczta.store.postgres.store import PostgresStore
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import store_settings
from tests.store.store_helpers import WHEN, make_message, with_user

WAIT = 30.0  # seconds: a bound for a hung test, not a measurement
KEEPALIVE = 0.25  # seconds: the server ends the listening session after 1 s without a question


async def _deliver(store: PostgresStore, n: int, user: UserId) -> None:
    data = make_message(n)
    await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])


def test_a_listening_session_that_stops_asking_is_ended_and_made_again(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = store_settings(postgres, postgres_dsn, tmp_path)
    opened: list[Any] = []

    async def listen() -> Any:
        conn = await connect_store(settings, tmp_path)
        opened.append(conn)
        return conn

    async def main() -> None:
        writing = await PostgresStore.open(settings, tmp_path)
        watching = PostgresStore(
            await create_pool(settings, tmp_path), listen=listen, listen_keepalive=KEEPALIVE
        )
        try:
            bob = await with_user(writing)
            inbox = await watching.get_mailbox(bob, "INBOX")
            changes = watching.changes(inbox.id, await watching.mailbox_version(inbox.id))
            n = 0
            # notifications every 0.1 s for 2 s: the questions still go on, the session stays
            for n in range(1, 21):
                following = asyncio.ensure_future(anext(changes))
                await _deliver(writing, n, bob)
                assert (await asyncio.wait_for(following, WAIT)).messages == n
                await asyncio.sleep(0.1)
            assert len(opened) == 1
            (timeout,) = await opened[0].fetchrow("SHOW idle_session_timeout")
            assert timeout == "1s"

            awake = asyncio.Event()

            async def frozen() -> None:  # the node stops: no more questions
                await awake.wait()

            listener = watching._listener
            assert listener is not None
            monkeypatch.setattr(listener, "_ping", frozen)
            async with asyncio.timeout(WAIT):  # the server ended the silent session
                while not opened[0].is_closed():
                    await asyncio.sleep(0.05)
            monkeypatch.undo()  # the node wakes up: it listens again
            awake.set()
            following = asyncio.ensure_future(anext(changes))
            await _deliver(writing, n + 1, bob)
            assert (await asyncio.wait_for(following, WAIT)).messages == n + 1
            assert len(opened) == 2
            await changes.aclose()
        finally:
            await writing.close()
            await watching.close()

    asyncio.run(main())
