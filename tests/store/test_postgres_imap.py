"""IMAP's writes on the PostgreSQL store from several pools at once: flag changes made at
the same moment on the same messages all count, none lost, each with a MODSEQ of its
own; an expunge meanwhile only takes messages out of them; claims of \\Recent messages
never hand one message to two sessions; and changes asked of one store all at once (a
session's pipelined STOREs) are made in the order asked, each answered as if made alone
(its own MODSEQ, UNCHANGEDSINCE against the earlier ones'), and the change feed told."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from poczta.message import parse_message
from poczta.store import DeliveryTarget, FlagMode, MailboxId, NotFound, UserId
from poczta.store.postgres.flags import FEW_UIDS, FlagBatches
from poczta.store.postgres.store import PostgresStore
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import store_settings
from tests.store.store_helpers import WHEN, make_message, with_user

WAIT = 30.0  # seconds: a bound for a hung test, not a measurement


Body = Callable[[list[PostgresStore], UserId, MailboxId], Awaitable[None]]


def _on_nodes(postgres: PostgresServer, dsn: str, tmp_path: Path, count: int, body: Body) -> None:
    """Run `body` with `count` stores on one database (each its own pool), a user and
    the user's INBOX."""

    async def main() -> None:
        settings = store_settings(postgres, dsn, tmp_path)
        nodes = [await PostgresStore.open(settings, tmp_path, max_size=3) for _ in range(count)]
        try:
            user = await with_user(nodes[0], "bob@example.com")
            inbox = await nodes[0].get_mailbox(user, "INBOX")
            await body(nodes, user, inbox.id)
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())


async def _fill(store: PostgresStore, user: int, count: int) -> list[int]:
    uids = []
    for n in range(count):
        data = make_message(n)
        [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
        uids.append(done.uid)
    return uids


# one message, a few read by key one by one, more read in one pass over the mailbox
@pytest.mark.parametrize("count", [1, 6, FEW_UIDS + 20])
def test_concurrent_flag_changes_on_the_same_messages_are_all_kept(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path, count: int
) -> None:
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        uids = await _fill(nodes[0], bob, count)
        start = (await nodes[0].mailbox_version(inbox)).highestmodseq
        changes = [
            node.set_flags(inbox, uids, [f"$N{i}R{r}"], FlagMode.ADD)
            for r in range(5)
            for i, node in enumerate(nodes)
        ]
        results = await asyncio.wait_for(asyncio.gather(*changes), WAIT)
        modseqs = sorted(result.highestmodseq for result in results)
        assert modseqs == list(range(start + 1, start + 21))
        for result in results:
            assert [uid for uid, _, _ in result.changed] == uids
            assert {m for _, _, m in result.changed} == {result.highestmodseq}
        every = {f"$N{i}R{r}" for r in range(5) for i in range(4)}
        for meta in await nodes[1].fetch_meta(inbox):
            assert meta.flags == every and meta.modseq == start + 20

    _on_nodes(postgres, postgres_dsn, tmp_path, 4, body)


def test_unchangedsince_and_an_expunge_meanwhile_are_seen_by_a_waiting_flag_change(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        for round_ in range(10):
            uids = await _fill(nodes[0], bob, 4)
            known = (await nodes[0].mailbox_version(inbox)).highestmodseq
            _, guarded, expunging = await asyncio.wait_for(
                asyncio.gather(
                    nodes[0].set_flags(inbox, uids, ["\\Flagged"], FlagMode.ADD),
                    nodes[1].set_flags(inbox, uids, ["$Late"], FlagMode.ADD, known),
                    nodes[2].expunge(inbox, uids[:2]),
                ),
                WAIT,
            )
            assert expunging == uids[:2]
            # The other change is one transaction: the guarded one comes wholly before
            # it (changing what is there) or wholly after (refusing what is there).
            changed = {uid for uid, _, _ in guarded.changed}
            modified = set(guarded.modified)
            assert not (changed and modified), round_
            assert changed | modified <= set(uids)
            assert set(uids[2:]) <= changed | modified  # never expunged
            left = {m.uid: m.flags for m in await nodes[0].fetch_meta(inbox, uids)}
            assert set(left) == set(uids[2:]), round_
            for uid, flags in left.items():
                assert "\\Flagged" in flags
                assert ("$Late" in flags) == (uid in changed)
        with pytest.raises(NotFound):
            await nodes[0].set_flags(inbox + 1000, [1], ["\\Seen"], FlagMode.ADD)

    _on_nodes(postgres, postgres_dsn, tmp_path, 3, body)


def test_concurrent_claims_of_recent_messages_never_share_one(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        for round_ in range(5):
            await _fill(nodes[0], bob, 3)
            uidnext = (await nodes[0].mailbox_version(inbox)).uidnext
            firsts = await asyncio.wait_for(
                asyncio.gather(*(node.claim_recent(inbox) for node in nodes)), WAIT
            )
            # one session gets the three new messages, the others none
            assert sorted(firsts) == [uidnext - 3] + [uidnext] * 3, round_
            assert await nodes[1].recent_mark(inbox) == uidnext
        # a claim up to a UID below the mark leaves it where it is
        assert await nodes[0].claim_recent(inbox, 2) == uidnext
        assert await nodes[0].recent_mark(inbox) == uidnext

    _on_nodes(postgres, postgres_dsn, tmp_path, 4, body)


def test_flag_changes_made_at_once_through_one_store_run_in_the_order_made(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    # a session's pipelined STOREs: the store is asked for all of them before any is done
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        [uid] = await _fill(nodes[0], bob, 1)
        steps = [
            (["\\Flagged"], FlagMode.ADD),
            (["\\Flagged"], FlagMode.REMOVE),
            (["$A", "$B"], FlagMode.ADD),
            (["$A"], FlagMode.REMOVE),
            (["$C"], FlagMode.REPLACE),
            (["\\Flagged"], FlagMode.ADD),
        ]
        for round_ in range(10):
            results = await asyncio.wait_for(
                asyncio.gather(*(nodes[0].set_flags(inbox, [uid], f, m) for f, m in steps)), WAIT
            )
            told = [result.changed[-1][1] if result.changed else None for result in results]
            expected = [{"\\Flagged"}, set(), {"$A", "$B"}, {"$B"}, {"$C"}, {"$C", "\\Flagged"}]
            assert told == expected, round_
            modseqs = [result.highestmodseq for result in results]
            assert modseqs == sorted(modseqs), round_
            [meta] = await nodes[1].fetch_meta(inbox, [uid])
            assert meta.flags == {"$C", "\\Flagged"}
            await nodes[0].set_flags(inbox, [uid], [], FlagMode.REPLACE)

    _on_nodes(postgres, postgres_dsn, tmp_path, 2, body)


def test_changes_asked_at_once_are_answered_as_if_made_one_after_another(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        one, two, three = await _fill(nodes[0], bob, 3)
        start = await nodes[1].mailbox_version(inbox)
        changes = nodes[1].changes(inbox, start)
        told = asyncio.ensure_future(anext(changes))
        before = start.highestmodseq
        asked = [
            nodes[0].set_flags(inbox, [one, two], ["$A"], FlagMode.ADD),
            nodes[0].set_flags(inbox, [two], ["$B"], FlagMode.ADD, before),  # $A came first
            nodes[0].set_flags(inbox, [one], ["$A"], FlagMode.ADD),  # nothing to change
            nodes[0].set_flags(inbox, [one, three, 99], ["$A"], FlagMode.REMOVE, before + 1),
            nodes[0].set_flags(inbox, [three, three], ["$C"], FlagMode.REPLACE),
        ]
        added, refused, same, removed, replaced = await asyncio.wait_for(
            asyncio.gather(*asked), WAIT
        )
        assert added.changed == ((one, {"$A"}, before + 1), (two, {"$A"}, before + 1))
        assert (refused.changed, refused.modified) == ((), (two,))
        assert (same.changed, same.modified, same.highestmodseq) == ((), (), before + 1)
        assert removed.changed == ((one, frozenset(), before + 2),)
        assert replaced.changed == ((three, {"$C"}, before + 3),)
        assert [r.highestmodseq for r in (added, refused, removed, replaced)] == [
            before + 1, before + 1, before + 2, before + 3,
        ]  # fmt: skip
        found = {m.uid: (m.flags, m.modseq) for m in await nodes[1].fetch_meta(inbox)}
        assert found == {
            one: (frozenset(), before + 2),
            two: ({"$A"}, before + 1),
            three: ({"$C"}, before + 3),
        }
        state = await asyncio.wait_for(told, WAIT)
        while state.highestmodseq < before + 3:
            state = await asyncio.wait_for(anext(changes), WAIT)
        assert state.highestmodseq == before + 3

    _on_nodes(postgres, postgres_dsn, tmp_path, 2, body)


def test_changes_to_more_messages_than_a_batch_holds_go_in_several_in_order(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        uids = await _fill(nodes[0], bob, 4)
        nodes[0]._flag_batches = FlagBatches(nodes[0]._db, max_uids=2)
        before = (await nodes[0].mailbox_version(inbox)).highestmodseq
        asked = [nodes[0].set_flags(inbox, [uid], [f"$K{uid}"], FlagMode.ADD) for uid in uids]
        asked.append(nodes[0].set_flags(inbox, uids, ["$K1"], FlagMode.REMOVE))
        results = await asyncio.wait_for(asyncio.gather(*asked), WAIT)
        assert [r.highestmodseq for r in results] == [before + n for n in range(1, 6)]
        found = {m.uid: m.flags for m in await nodes[1].fetch_meta(inbox)}
        assert found == {uid: ({f"$K{uid}"} - {"$K1"}) for uid in uids}

    _on_nodes(postgres, postgres_dsn, tmp_path, 2, body)


def test_a_move_counts_its_mailboxes_itself_and_later_updates_are_counted_again(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """A MOVE tells the per-row counting triggers to leave its rows alone for its own
    transaction only: a later UPDATE of a row's mailbox on the same connection is counted."""

    async def main() -> None:
        settings = store_settings(postgres, postgres_dsn, tmp_path)
        store = await PostgresStore.open(settings, tmp_path, min_size=1, max_size=1)
        try:
            user = await with_user(store, "bob@example.com")
            inbox = await store.get_mailbox(user, "INBOX")
            uids = await _fill(store, user, 3)
            _, pairs = await store.copy_messages(user, inbox.id, uids[:2], "Archive", move=True)
            archive = await store.get_mailbox(user, "Archive")
            assert (await store.get_mailbox(user, "INBOX")).messages == 1
            assert archive.messages == 2
            await store._db.write(
                lambda c: c.execute(
                    "UPDATE messages SET mailbox_id = $2, uid = 100"
                    " WHERE mailbox_id = $1 AND uid = $3",
                    archive.id,
                    inbox.id,
                    pairs[0][1],
                )
            )
            counts = {b.name: b.messages for b in await store.list_mailboxes(user)}
            assert (counts["INBOX"], counts["Archive"]) == (2, 1)
            assert (await store.quota_states([user]))[user].usage.messages == 3
        finally:
            await store.close()

    asyncio.run(main())


def test_the_expunged_uids_of_a_mailbox_go_with_it_and_with_its_user(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def main() -> None:
        settings = store_settings(postgres, postgres_dsn, tmp_path)
        store = await PostgresStore.open(settings, tmp_path)

        async def expunged() -> dict[int, int]:
            rows = await store._db.read(
                lambda c: c.fetch("SELECT mailbox_id, count(*) FROM expunged GROUP BY 1")
            )
            return {int(r[0]): int(r[1]) for r in rows}

        try:
            user = await with_user(store, "bob@example.com")
            inbox = await store.get_mailbox(user, "INBOX")
            uids = await _fill(store, user, 3)
            _, pairs = await store.copy_messages(user, inbox.id, uids, "Archive", move=True)
            archive = await store.get_mailbox(user, "Archive")
            await store.expunge(archive.id, [pairs[0][1]])
            assert await expunged() == {inbox.id: 3, archive.id: 1}
            await store.delete_mailbox(user, "Archive")
            assert await expunged() == {inbox.id: 3}
            await store.remove_user("bob@example.com")
            assert await expunged() == {}
        finally:
            await store.close()

    asyncio.run(main())


def test_bodies_of_one_chunk_come_whole_with_the_facts_and_larger_ones_are_left_to_read(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def body(nodes: list[PostgresStore], bob: UserId, inbox: MailboxId) -> None:
        store = nodes[0]
        sent: dict[int, bytes] = {}
        for n, size in enumerate([0, 600 * 1024, 0]):  # the second in three chunks
            data = make_message(n, size)
            [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(bob)])
            sent[done.uid] = data
        uids = sorted(sent)
        for kept_only in (False, True):
            metas, bodies = await store.fetch_meta_with_bodies(inbox, uids, kept_only=kept_only)
            assert [(m.uid, m.digest) for m in metas] == [
                (m.uid, m.digest) for m in await store.fetch_meta(inbox, uids)
            ]
            assert sorted(bodies.values()) == sorted(sent[u] for u in (uids[0], uids[2]))
            [large] = [m for m in metas if m.digest not in bodies]
            assert await store.blobs.read_many([(large.digest, large.size)]) == [sent[large.uid]]
        with pytest.raises(NotFound):
            await store.fetch_meta_with_bodies(MailboxId(inbox + 1000), uids)

    _on_nodes(postgres, postgres_dsn, tmp_path, 1, body)
