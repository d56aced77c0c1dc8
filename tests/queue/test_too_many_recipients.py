"""Recipients a server refuses with 452 (too many recipients) go in a new transaction of
the same attempt; other temporary refusals, and a server that takes nobody, wait for
the queue's retry."""

from __future__ import annotations

from pathlib import Path

from poczta.smtp.events import Accept, Reject
from poczta.store.base import DELIVERED, PENDING
from tests.queue.peer import ScriptedMx, serving
from tests.queue.test_runner import SENDER, run, setup

RECIPIENTS = [f"user{n}@remote.test" for n in range(5)]


def test_452_after_two_recipients_sends_the_rest_in_more_transactions(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(max_recipients=2)
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.queue(*RECIPIENTS)
            assert await s.runner.run_once() == 1
            batches = [sorted(m.recipients) for m in mx.messages]
            assert [len(b) for b in batches] == [2, 2, 1]
            assert sorted(r for b in batches for r in b) == sorted(RECIPIENTS)  # each once
            assert all(m.sender == SENDER for m in mx.messages)
            assert mx.connections == 1 and mx.transactions == 3
            assert await s.store.list_queue() == []
            assert await s.inbox(s.alice) == []

    run(test)


def test_a_server_that_452s_every_recipient_leaves_them_for_the_retry(tmp_path: Path) -> None:
    async def test() -> None:
        mx = ScriptedMx(max_recipients=0)
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            queue_id = await s.queue(*RECIPIENTS[:3])
            await s.runner.run_once()
            assert mx.transactions == 1 and mx.messages == []  # no second try in the attempt
            entry = await s.store.get_queue_entry(queue_id)
            assert entry.attempts == 1
            assert {(r.status, r.reply_code) for r in entry.recipients} == {(PENDING, 452)}
            s.clock.advance(60)
            mx.max_recipients = None
            assert await s.runner.run_once() == 1
            [received] = mx.messages
            assert sorted(received.recipients) == RECIPIENTS[:3]

    run(test)


def test_other_temporary_refusals_wait_for_the_retry(tmp_path: Path) -> None:
    async def test() -> None:
        def rcpt(address: str) -> Accept | Reject:
            if address == RECIPIENTS[1]:
                return Reject(451, "4.3.0", "try later")
            return Accept()

        mx = ScriptedMx(rcpt=rcpt)
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            queue_id = await s.queue(*RECIPIENTS[:3])
            await s.runner.run_once()
            assert mx.transactions == 1
            [received] = mx.messages
            assert sorted(received.recipients) == [RECIPIENTS[0], RECIPIENTS[2]]
            entry = await s.store.get_queue_entry(queue_id)
            states = {r.address: (r.status, r.reply_code) for r in entry.recipients}
            assert states[RECIPIENTS[1]] == (PENDING, 451)
            assert states[RECIPIENTS[0]][0] == DELIVERED

    run(test)


def test_452_mixed_with_a_refusal_in_the_next_transaction(tmp_path: Path) -> None:
    async def test() -> None:
        def rcpt(address: str) -> Accept | Reject:
            if address == RECIPIENTS[3]:
                return Reject(550, "5.1.1", "no such user")
            return Accept()

        mx = ScriptedMx(rcpt=rcpt, max_recipients=2)
        async with serving(mx, "127.0.0.1", 0) as port, setup(tmp_path, port) as s:
            await s.queue(*RECIPIENTS)
            await s.runner.run_once()
            delivered = sorted(r for m in mx.messages for r in m.recipients)
            assert delivered == sorted(set(RECIPIENTS) - {RECIPIENTS[3]})
            assert await s.store.list_queue() == []
            [bounce] = await s.inbox(s.alice)
            assert RECIPIENTS[3] in bounce.as_string()

    run(test)
