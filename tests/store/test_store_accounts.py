"""Contract tests of the store's accounts: domains, users, default mailboxes, aliases."""

from __future__ import annotations

import asyncio

import pytest

from poczta.store import DEFAULT_MAILBOXES, AlreadyExists, MailStore, NotFound, StoreError
from tests.store.store_helpers import Backend, deliver_one, with_user


def test_domains(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        await store.add_domain("Example.COM")
        await store.add_domain("example.org")
        assert await store.list_domains() == ["example.com", "example.org"]
        assert await store.domain_exists("EXAMPLE.com")
        assert not await store.domain_exists("example.net")
        with pytest.raises(AlreadyExists):
            await store.add_domain("example.com")
        await store.remove_domain("example.org")
        assert await store.list_domains() == ["example.com"]
        with pytest.raises(NotFound):
            await store.remove_domain("example.org")

    backend.run(body)


def test_remove_domain_refuses_with_users_unless_forced(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store, "bob@example.com")
        await deliver_one(store, user)
        await store.add_alias("info@example.com", "bob@example.com")
        with pytest.raises(StoreError):
            await store.remove_domain("example.com")
        assert await store.get_user("bob@example.com") is not None
        await store.remove_domain("example.com", force=True)
        assert await store.list_domains() == []
        assert await store.list_users() == []
        assert await store.list_aliases() == []

    backend.run(body)


def test_users(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        with pytest.raises(NotFound):
            await store.add_user("bob@nowhere.test", "h", "s")
        await store.add_domain("example.com")
        user_id = await store.add_user("Bob@Example.com", "hash1", "scram1")
        with pytest.raises(AlreadyExists):
            await store.add_user("bob@example.com", "h", "s")
        record = await store.get_user("BOB@example.COM")
        assert record is not None
        assert (record.id, record.address, record.password_hash, record.scram) == (
            user_id,
            "bob@example.com",
            "hash1",
            "scram1",
        )
        assert record.created.tzinfo is not None
        await store.set_password("bob@example.com", "hash2", "scram2")
        again = await store.get_user("bob@example.com")
        assert again is not None and (again.password_hash, again.scram) == ("hash2", "scram2")
        with pytest.raises(NotFound):
            await store.set_password("carol@example.com", "h", "s")
        await store.add_user("alice@example.com", "h", "s")
        assert [u.address for u in await store.list_users()] == [
            "alice@example.com",
            "bob@example.com",
        ]
        assert [u.address for u in await store.list_users("example.com")] == [
            "alice@example.com",
            "bob@example.com",
        ]
        await store.remove_user("bob@example.com")
        assert await store.get_user("bob@example.com") is None
        with pytest.raises(NotFound):
            await store.remove_user("bob@example.com")

    backend.run(body)


def test_new_user_has_default_mailboxes(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        user = await with_user(store)
        boxes = await store.list_mailboxes(user)
        assert sorted((b.name, b.special_use) for b in boxes) == sorted(DEFAULT_MAILBOXES)
        for box in boxes:
            assert box.uidnext == 1 and box.messages == 0 and box.uidvalidity > 0
        assert len({b.uidvalidity for b in boxes}) == len(boxes)

    backend.run(body)


def test_aliases_and_resolution(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store, "bob@example.com")
        alice = await with_user(store, "alice@example.com")
        await store.add_alias("team@example.com", "bob@example.com")
        await store.add_alias("team@example.com", "Alice@example.com")
        await store.add_alias("team@example.com", "partner@remote.test")
        await store.add_alias("@example.com", "alice@example.com")
        await store.add_alias("ghost@example.com", "nobody@example.com")
        with pytest.raises(AlreadyExists):
            await store.add_alias("team@example.com", "bob@example.com")
        with pytest.raises(NotFound):
            await store.add_alias("x@unknown.test", "bob@example.com")

        exact = await store.resolve_recipient("BOB@example.com")
        assert exact is not None and [u.id for u in exact.local_users] == [bob]
        team = await store.resolve_recipient("team@example.com")
        assert team is not None
        assert sorted(u.id for u in team.local_users) == sorted([bob, alice])
        assert team.remote_addresses == ("partner@remote.test",)
        plus = await store.resolve_recipient("bob+lists@example.com")
        assert plus is not None and [u.id for u in plus.local_users] == [bob]
        plus_alias = await store.resolve_recipient("team+x@example.com")
        assert plus_alias is not None and len(plus_alias.local_users) == 2
        catch = await store.resolve_recipient("whoever@example.com")
        assert catch is not None and [u.id for u in catch.local_users] == [alice]
        dangling = await store.resolve_recipient("ghost@example.com")
        assert dangling is not None and [u.id for u in dangling.local_users] == [alice]
        assert await store.resolve_recipient("bob@remote.test") is None

        assert ("@example.com", "alice@example.com") in await store.list_aliases("example.com")
        await store.remove_alias("@example.com")
        assert await store.resolve_recipient("whoever@example.com") is None
        await store.remove_alias("team@example.com", "bob@example.com")
        team = await store.resolve_recipient("team@example.com")
        assert team is not None and [u.id for u in team.local_users] == [alice]
        with pytest.raises(NotFound):
            await store.remove_alias("team@example.com", "bob@example.com")

    backend.run(body)


def test_find_addresses_tells_what_each_address_is(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        bob = await with_user(store, "bob@example.com")
        await with_user(store, "carol@example.org")
        await store.add_alias("team@example.com", "zed@remote.test")
        await store.add_alias("team@example.com", "Bob@example.com")
        await store.add_alias("@example.com", "carol@example.org")
        asked = [
            "TEAM@example.com",
            "bob@EXAMPLE.com",
            "@example.com",
            "nobody@example.org",
            "bob@remote.test",
            "no-at-sign",
            "bob@example.com",
        ]
        entries = await store.find_addresses(asked)
        assert [e.address for e in entries] == [a.lower() for a in asked]
        assert [e.local_domain for e in entries] == [True, True, True, True, False, False, True]
        assert [e.user.id if e.user else None for e in entries] == [
            None, bob, None, None, None, None, bob,
        ]  # fmt: skip
        assert [e.alias_targets for e in entries] == [
            ("bob@example.com", "zed@remote.test"),  # in address order
            (),
            ("carol@example.org",),
            (),
            (),
            (),
            (),
        ]
        assert await store.find_addresses([]) == []

    backend.run(body)


def test_find_addresses_reads_many_at_once(backend: Backend) -> None:
    async def body(store: MailStore) -> None:
        await with_user(store, "bob@example.com")
        members = [f"member{n:03}@remote.test" for n in range(600)]  # more than one IN list
        await asyncio.gather(*(store.add_alias("list@example.com", m) for m in members))
        [entry] = await store.find_addresses(["list@example.com"])
        assert list(entry.alias_targets) == members
        found = await store.find_addresses([*members, "bob@example.com"] * 2)
        assert [e.address for e in found] == [*members, "bob@example.com"] * 2
        assert [e.user is not None for e in found] == ([False] * 600 + [True]) * 2

    backend.run(body)
