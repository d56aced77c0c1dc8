"""Helpers of the whole-store copy tests: a store filled through the store's interfaces,
everything in a SQLite store read back raw, and what a user's IMAP client sees."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from poczta.mailauth.greylist import GreylistTriplet, NetworkRecord, TripletRecord
from poczta.message import parse_message
from poczta.store import DeliveryTarget, FlagMode, MailStore, Outbound, QueueId
from poczta.store.base import CachedStsPolicy, RecipientAttempt
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import make_message

BIG = 600 * 1024  # a body of several PostgreSQL chunks
EAST = timezone(timedelta(hours=2))


async def fill_store(store: MailStore) -> None:
    """Accounts, mailboxes with flags, keywords and expunged UIDs, a shared and a big body,
    a queue entry after an attempt, greylisting, sending limits and an MTA-STS policy."""
    for domain in ("example.com", "example.org"):
        await store.add_domain(domain)
    bob = await store.add_user("bob@example.com", "$argon2id$v=19$m=65536$bob", "scram-bob")
    carol = await store.add_user("carol@example.org", "$argon2id$v=19$m=65536$carol", "s-c")
    await store.add_alias("postmaster@example.com", "bob@example.com")
    await store.add_alias("@example.org", "carol@example.org")  # a catch-all
    await store.set_quota(bob, {"storage": 50_000_000, "messages": None})
    sending = await store.sending_store()
    await sending.set_overrides("bob@example.com", {"messages_per_hour": 40})
    await sending.record_sent("bob@example.com", 3, now=1_700_000_000.0)
    await store.create_mailbox(bob, "Projects")
    await store.create_mailbox(bob, "Lists/python")
    await store.subscribe(bob, "Lists/python")
    await store.subscribe(bob, "Not/There")  # a subscription without a mailbox
    inbox = await store.get_mailbox(bob, "INBOX")
    for n in range(8):
        data = make_message(n)
        when = datetime(2024, 3, 1 + n, 9, 30, 15, 250_000 * (n % 2), tzinfo=EAST)
        await store.deliver(data, parse_message(data), when, [DeliveryTarget(bob, "INBOX")])
    await store.set_flags(inbox.id, [1, 2, 5], ["\\Seen", "$Forwarded"], FlagMode.ADD)
    await store.set_flags(inbox.id, [3, 6], ["\\Deleted"], FlagMode.ADD)
    await store.expunge(inbox.id)  # UIDs 3 and 6 gone: gaps, and VANISHED rows
    await store.set_flags(inbox.id, [7], ["\\Flagged", "work"], FlagMode.ADD)
    await store.claim_recent(inbox.id)
    shared = make_message(100, subject="To both")
    targets = [DeliveryTarget(bob, "Archive", frozenset({"\\Seen"})), DeliveryTarget(carol)]
    await store.deliver(shared, parse_message(shared), datetime(2024, 4, 1, tzinfo=UTC), targets)
    big = make_message(200, size=BIG)
    await store.deliver(big, parse_message(big), datetime(2024, 4, 2, tzinfo=UTC),
                        [DeliveryTarget(bob, "Lists/python")])  # fmt: skip
    await _queue_one(store, carol)
    greylist = await store.greylist_store()
    triplet = GreylistTriplet("192.0.2.0/24", "alice@example.net", "bob@example.com")
    await greylist.put_triplet(TripletRecord(triplet, 1000.5, 1300.25, 90_000.0, 1300.25, 2))
    await greylist.put_network(NetworkRecord("198.51.100.0/24", 3, 1200.0, 0.0, 99_000.0))
    fetched = datetime(2024, 5, 1, 8, 0, 0, 123_456, tzinfo=UTC)
    policy = CachedStsPolicy("example.net", "20240501", "version: STSv1\nmode: enforce\n",
                             fetched, fetched + timedelta(days=7))  # fmt: skip
    await store.save_mta_sts_policy(policy, fetched)


async def _queue_one(store: MailStore, carol: Any) -> QueueId:
    data = make_message(300, subject="Out")
    outbound = Outbound("carol@example.org", ("dave@example.net", "erin@example.net"),
                        envid="ENV1", ret="HDRS")  # fmt: skip
    accepted = await store.accept(data, parse_message(data), datetime(2024, 4, 3, tzinfo=UTC),
                                  [DeliveryTarget(carol, "Sent")], outbound)  # fmt: skip
    assert accepted.queue_id is not None
    attempt = RecipientAttempt("dave@example.net", "pending", "451 4.7.1 try later", 451,
                               "4.7.1", "mx.example.net", "TLSv1.3")  # fmt: skip
    await store.record_attempt(accepted.queue_id, [attempt], datetime(2024, 4, 3, 1, tzinfo=UTC))
    return accepted.queue_id


async def fill_sqlite(root: Path) -> None:
    store = await SqliteStore.open(root / "poczta.db", root / "blobs")
    try:
        await fill_store(store)
    finally:
        await store.close()


def sqlite_tables(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite store (only the times of the schema's own
    migrations left out), sorted."""
    conn = sqlite3.connect(db_path)
    try:
        names = [
            str(row[0])
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        found: dict[str, list[tuple[Any, ...]]] = {}
        for name in names:
            columns = "version, name" if name == "schema_version" else "*"
            rows = conn.execute(f"SELECT {columns} FROM {name}").fetchall()
            found[name] = sorted(rows, key=repr)
        return found
    finally:
        conn.close()


def body_files(root: Path) -> dict[str, str]:
    """Each body file's name and the SHA-256 of its content."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (root / "blobs").glob("[0-9a-f][0-9a-f]/*")
    }


async def imap_view(store: MailStore, address: str) -> list[tuple[Any, ...]]:
    """What a client of `address` sees: per mailbox its UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ
    and each message's UID, flags, MODSEQ, INTERNALDATE, size and body."""
    user = await store.get_user(address)
    assert user is not None
    view: list[tuple[Any, ...]] = []
    for box in sorted(await store.list_mailboxes(user.id), key=lambda b: b.name):
        messages = [
            (m.uid, sorted(m.flags), m.modseq, m.internal_date.isoformat(), m.size,
             await store.read_message(box.id, m.uid))
            for m in await store.fetch_meta(box.id)
        ]  # fmt: skip
        view.append((box.name, box.uidvalidity, box.uidnext, box.highestmodseq, messages))
    view.append(("subscriptions", sorted(await store.subscriptions(user.id))))
    return view
