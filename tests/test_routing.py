"""Recipient routing: any form of an address resolves as the rules say, over a real store.

The rules (exact user, alias, `user+tag`, catch-all `@domain`; an alias expands one level,
a target in one of our domains that is no user is dropped, an alias left with no target
counts as absent) are written out here once more as a plain model over the world the
store holds, and hypothesis checks the answers against it for addresses built from the
world's parts: tags, case, surrounding blanks, unknown names and domains. The answers
come from `poczta.routing` over an in-memory address book (the rules alone), and from a
real store (the rules over its lookups, and `Delivery` on top).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poczta.accounts import is_valid_address
from poczta.delivery import Delivery, RecipientKind
from poczta.routing import resolve_recipient
from poczta.store import MailStore, Resolution, UserId, UserRecord, normalize_address
from poczta.store.base import AddressEntry
from poczta.store.sqlite.store import SqliteStore

DOMAINS = ("example.com", "other.test", "third.test")
USERS = ("bob@example.com", "alice@example.com", "a+b@example.com", "carol@other.test")
ALIASES: dict[str, tuple[str, ...]] = {
    "team@example.com": ("bob@example.com", "alice@example.com", "partner@remote.test"),
    "ghost@example.com": ("nobody@example.com",),  # dangling: falls through to the catch-all
    "chain@example.com": ("team@example.com",),  # an alias is not expanded twice
    "loop1@other.test": ("loop2@other.test",),
    "loop2@other.test": ("loop1@other.test",),
    "bob@example.com": ("carol@other.test",),  # the user comes first
    "fwd@other.test": ("zed@remote.test", "bob@example.com", "nobody@other.test"),
    "sales+eu@example.com": ("carol@other.test",),  # the exact alias before its base
    "sales@example.com": ("bob@example.com",),
    "@example.com": ("catchall@remote.test", "alice@example.com"),
    "@third.test": ("nobody@third.test",),  # a catch-all with nothing left
}
LOCALS: tuple[str, ...] = ("bob", "alice", "a", "a+b", "team", "ghost", "chain", "loop1")
LOCALS += ("loop2", "fwd", "sales", "sales+eu", "carol", "nobody", "catchall", "")
OTHER_DOMAINS = ("remote.test", "sub.example.com", "")

T = TypeVar("T")


def model(address: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(local users' addresses, remote addresses) mail for `address` goes to, or None."""
    addr = address.strip().lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or domain not in DOMAINS:
        return None

    def expand(source: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        targets = sorted(ALIASES.get(source, ()))
        users = tuple(t for t in targets if t in USERS)
        remote = tuple(t for t in targets if t not in USERS and t.rpartition("@")[2] not in DOMAINS)
        return (users, remote) if users or remote else None

    def user_or_alias(candidate: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        return ((candidate,), ()) if candidate in USERS else expand(candidate)

    found = user_or_alias(addr)
    base = local.split("+", 1)[0]
    if found is None and "+" in local and base:
        found = user_or_alias(f"{base}@{domain}")
    return found if found is not None else expand(f"@{domain}")


def answer(resolution: Resolution | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if resolution is None:
        return None
    return tuple(u.address for u in resolution.local_users), resolution.remote_addresses


@dataclass
class MemoryBook:
    """The world as an `AddressBook`, noting each round trip (the addresses it was asked)."""

    asked: list[tuple[str, ...]] = field(default_factory=list)

    async def find_addresses(self, addresses: Sequence[str]) -> list[AddressEntry]:
        self.asked.append(tuple(addresses))
        return [self._entry(normalize_address(address)) for address in addresses]

    @staticmethod
    def _entry(address: str) -> AddressEntry:
        _, at, domain = address.rpartition("@")
        user = None
        if address in USERS:
            user = UserRecord(UserId(USERS.index(address) + 1), address, "h", "s", WHEN)
        targets = tuple(sorted(ALIASES.get(address, ())))
        return AddressEntry(address, bool(at) and domain in DOMAINS, user, targets)


WHEN = datetime(2024, 1, 2, tzinfo=UTC)


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    store: MailStore
    user_ids: dict[int, str]

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)


async def _fill(store: MailStore) -> dict[int, str]:
    for domain in DOMAINS:
        await store.add_domain(domain)
    ids = {int(await store.add_user(address, "hash", "scram")): address for address in USERS}
    for source, targets in ALIASES.items():
        for target in targets:
            await store.add_alias(source, target)
    return ids


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="poczta-routing-"))
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(SqliteStore.open(root / "mail.db", root / "blobs"))
    try:
        yield World(loop, store, loop.run_until_complete(_fill(store)))
    finally:
        loop.run_until_complete(store.close())
        loop.close()
        shutil.rmtree(root, ignore_errors=True)


def _recase(text: str, flips: list[bool]) -> str:
    """`text` with the letters at the True places of `flips` in upper case."""
    flips = flips + [False] * (len(text) - len(flips))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=False))


@st.composite
def addresses(draw: st.DrawFn) -> str:
    local = draw(st.sampled_from(LOCALS) | st.text("ab+.-", max_size=4))
    for tag in draw(st.lists(st.text("xyz+", max_size=3), max_size=2)):
        local += "+" + tag
    domain = draw(st.sampled_from(DOMAINS + OTHER_DOMAINS))
    address = draw(st.sampled_from([f"{local}@{domain}", local, f"{local}@@{domain}"]))
    address = _recase(address, draw(st.lists(st.booleans(), max_size=len(address))))
    return draw(st.sampled_from(["", " ", "\t"])) + address + draw(st.sampled_from(["", " "]))


_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@settings(max_examples=300, deadline=None)
@given(address=addresses())
def test_the_rules_route_any_form_of_an_address(address: str) -> None:
    assert answer(asyncio.run(resolve_recipient(MemoryBook(), address))) == model(address)


@pytest.mark.parametrize(
    ("address", "round_trips"),
    [
        ("bob@example.com", 1),  # a user: the RCPT hot path, however many aliases exist
        ("Bob+News@Example.com", 1),
        ("nobody@other.test", 1),  # unknown, no catch-all
        ("someone@remote.test", 1),  # not ours
        ("team@example.com", 2),  # an alias: then its targets
        ("whoever@example.com", 2),  # the catch-all, an alias too
        ("ghost+x@example.com", 2),  # a dangling alias, then the catch-all: still two
        ("not an address", 0),
    ],
)
def test_round_trips_to_the_store(address: str, round_trips: int) -> None:
    book = MemoryBook()
    asyncio.run(resolve_recipient(book, address))
    assert len(book.asked) == round_trips


@_SETTINGS
@given(address=addresses())
def test_any_form_of_an_address_resolves_as_the_rules_say(world: World, address: str) -> None:
    assert answer(world.run(world.store.resolve_recipient(address))) == model(address)


@_SETTINGS
@given(address=addresses())
def test_delivery_classifies_a_recipient_by_the_rules(world: World, address: str) -> None:
    verdict = world.run(Delivery(world.store, cache_ttl=0).classify(address))
    expected = model(address)
    if not is_valid_address(address):
        assert verdict.kind is RecipientKind.UNKNOWN_USER
    elif address.strip().lower().rpartition("@")[2] not in DOMAINS:
        assert verdict.kind is RecipientKind.REMOTE
        assert verdict.remote_addresses == (address.strip().lower(),)
    elif expected is None:
        assert verdict.kind is RecipientKind.UNKNOWN_USER
    else:
        assert verdict.kind is RecipientKind.LOCAL
        users = tuple(world.user_ids[int(user_id)] for user_id in verdict.local_user_ids)
        assert (users, verdict.remote_addresses) == expected


@pytest.mark.parametrize(
    ("user", "sender", "allowed"),
    [
        ("bob@example.com", "BOB@example.com", True),
        ("bob@example.com", "bob+lists@example.com", True),
        ("bob@example.com", "sales@example.com", True),  # an alias of bob's alone
        ("bob@example.com", "team@example.com", False),  # shared with alice
        ("alice@example.com", "whoever@example.com", True),  # the catch-all is alice's
        ("bob@example.com", "whoever@example.com", False),
        ("bob@example.com", "bob@remote.test", False),
        ("bob@example.com", "not an address", False),
    ],
)
def test_who_may_send_as_whom(world: World, user: str, sender: str, allowed: bool) -> None:
    assert world.run(Delivery(world.store, cache_ttl=0).may_send_as(user, sender)) is allowed
