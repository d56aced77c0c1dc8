"""Contract tests of what a store keeps beside its mail: greylisting and sending limits,
each opened once on first use and closed with the store; and `open_store`, which opens
the configured backend."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from poczta.config import Config
from poczta.mailauth.greylist import GreylistTriplet, TripletRecord
from poczta.store import MailStore, NotFound, StoreUnavailable, open_store
from tests.store.store_helpers import Backend, with_user

TRIPLET = GreylistTriplet("192.0.2.0/24", "a@example.org", "bob@example.com")


def test_the_greylist_store_is_opened_once_and_keeps_records(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        first, second = await asyncio.gather(store.greylist_store(), store.greylist_store())
        assert first is second is await store.greylist_store()
        assert await first.get_triplet(TRIPLET) is None
        record = TripletRecord(TRIPLET, 100.0, 100.0, 500.0, None, 1)
        await first.put_triplet(record)
        assert await first.get_triplet(TRIPLET) == record
        assert await first.sweep(now=499.0) == 0
        assert await first.sweep(now=500.0) == 1
        assert await first.get_triplet(TRIPLET) is None

    backend.run(body)


def test_the_sending_store_counts_per_user_and_knows_its_users(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        await with_user(store, "bob@example.com")
        sending = await store.sending_store()
        assert sending is await store.sending_store()
        await sending.record_sent("Bob@example.com", 3, now=1_000_000.0)
        state = await sending.sending_state("bob@example.com", now=1_000_060.0)
        assert (state.usage.messages_last_hour, state.usage.recipients_last_day) == (1, 3)
        await sending.set_overrides("bob@example.com", {"messages_per_hour": 7})
        state = await sending.sending_state("bob@example.com", now=1_000_060.0)
        assert state.overrides.messages_per_hour == 7
        with pytest.raises(NotFound):
            await sending.set_overrides("carol@example.com", {"messages_per_hour": 1})

    backend.run(body)


def test_what_is_kept_beside_the_store_closes_with_it(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        greylist, sending = await store.greylist_store(), await store.sending_store()
        await store.close()
        with pytest.raises(StoreUnavailable):
            await greylist.get_triplet(TRIPLET)
        with pytest.raises(StoreUnavailable):
            await sending.sending_state("bob@example.com", now=0.0)
        with pytest.raises(StoreUnavailable):
            await store.greylist_store()

    backend.run(body)


def test_open_store_opens_the_configured_backend_under_the_data_directory(
    tmp_path: Path,
) -> None:
    config = Config.dev(tmp_path / "data")

    async def main() -> None:
        store = await open_store(config)
        try:
            await store.add_domain("example.com")
            digest = await store.blobs.put(b"Subject: x\r\n\r\nbody\r\n")
        finally:
            await store.close()
        assert config.store.path.is_file()
        assert (config.data_dir / "blobs" / digest[:2] / digest).is_file()
        reopened = await open_store(config)
        try:
            assert await reopened.list_domains() == ["example.com"]
        finally:
            await reopened.close()
        other = config.replace(store=dataclasses.replace(config.store, backend="postgres"))
        with pytest.raises(StoreUnavailable):
            await open_store(other)

    asyncio.run(main())
