"""Sending limits: the replies at MAIL and RCPT, the windows, and the counts in SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from poczta import sending_limits
from poczta.sending_limits import (
    LimitOverrides,
    SendingLimiter,
    SendingLimits,
    SendingUsage,
    mail_refusal,
    recipient_refusal,
)
from poczta.store.base import NotFound
from poczta.store.sqlite.sending import SqliteSendingStore
from poczta.store.sqlite.store import SqliteStore
from tests.clock import Clock

T = TypeVar("T")
T0 = 1_700_000_040.0  # on a minute boundary
LIMITS = SendingLimits(messages_per_hour=3, recipients_per_message=2, recipients_per_day=5)
USER = "alice@example.test"


def test_mail_is_refused_once_the_hourly_count_is_reached() -> None:
    assert mail_refusal(USER, LIMITS, SendingUsage(messages_last_hour=2)) is None
    refusal = mail_refusal(USER, LIMITS, SendingUsage(messages_last_hour=3))
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (450, "4.7.1")
    assert USER in refusal.text and "3 messages in the last hour" in refusal.text


def test_mail_is_refused_once_the_daily_recipients_are_reached() -> None:
    refusal = mail_refusal(USER, LIMITS, SendingUsage(recipients_last_day=5))
    assert refusal is not None
    assert (refusal.code, refusal.enhanced, refusal.limit) == (450, "4.7.1", "recipients_per_day")


def test_recipient_beyond_the_message_limit_gets_452() -> None:
    assert recipient_refusal(USER, LIMITS, SendingUsage(), accepted=1) is None
    refusal = recipient_refusal(USER, LIMITS, SendingUsage(), accepted=2)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (452, "4.5.3")


def test_recipient_beyond_the_daily_count_gets_450() -> None:
    usage = SendingUsage(recipients_last_day=4)
    assert recipient_refusal(USER, LIMITS, usage, accepted=0) is None
    refusal = recipient_refusal(USER, LIMITS, usage, accepted=1)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced, refusal.limit) == (450, "4.7.1", "recipients_per_day")


def test_zero_is_no_limit() -> None:
    open_ended = SendingLimits(0, 0, 0)
    busy = SendingUsage(messages_last_hour=10**6, recipients_last_day=10**6)
    assert mail_refusal(USER, open_ended, busy) is None
    assert recipient_refusal(USER, open_ended, busy, accepted=10**4) is None


def test_overrides_replace_only_what_they_set() -> None:
    limits = LIMITS.with_overrides(LimitOverrides(messages_per_hour=50))
    assert limits == SendingLimits(50, 2, 5)


# --- the store ---------------------------------------------------------------------


def run(tmp_path: Path, body: Callable[[SqliteSendingStore], Awaitable[T]]) -> T:
    async def main() -> T:
        mail = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            if not await mail.domain_exists("example.test"):
                await mail.add_domain("example.test")
            for address in (USER, "bob@example.test"):
                if await mail.get_user(address) is None:
                    await mail.add_user(address, "x", "x")
        finally:
            await mail.close()
        store = await SqliteSendingStore.open(tmp_path / "mail.db")
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_counts_cover_the_last_hour_and_day(tmp_path: Path) -> None:
    async def body(store: SqliteSendingStore) -> list[SendingUsage]:
        await store.record_sent(USER, 2, T0)
        await store.record_sent(USER, 3, T0 + 30)  # the same minute: one row
        await store.record_sent(USER, 1, T0 + 1800)
        seen = []
        for at in (T0 + 1800, T0 + 3600, T0 + 5400, T0 + 86_400 + 1799, T0 + 86_400 + 1800):
            seen.append((await store.sending_state(USER, at)).usage)
        return seen

    assert run(tmp_path, body) == [
        SendingUsage(3, 6),
        SendingUsage(1, 6),  # the first minute has left the hour
        SendingUsage(0, 6),
        SendingUsage(0, 1),  # and the day
        SendingUsage(0, 0),
    ]


def test_counts_are_per_user_and_survive_reopening(tmp_path: Path) -> None:
    async def send(store: SqliteSendingStore) -> None:
        await store.record_sent(USER, 4, T0)

    async def read(store: SqliteSendingStore) -> tuple[SendingUsage, SendingUsage]:
        mine = (await store.sending_state(USER, T0 + 60)).usage
        other = (await store.sending_state("bob@example.test", T0 + 60)).usage
        return mine, other

    run(tmp_path, send)
    assert run(tmp_path, read) == (SendingUsage(1, 4), SendingUsage(0, 0))


def test_two_connections_share_the_counts(tmp_path: Path) -> None:
    async def body(first: SqliteSendingStore) -> SendingUsage:
        second = await SqliteSendingStore.open(first.db_path)
        try:
            await first.record_sent(USER, 1, T0)
            await second.record_sent(USER, 1, T0)
            return (await first.sending_state(USER, T0)).usage
        finally:
            await second.close()

    assert run(tmp_path, body) == SendingUsage(2, 2)


def test_overrides_are_set_and_cleared(tmp_path: Path) -> None:
    async def body(store: SqliteSendingStore) -> list[LimitOverrides]:
        seen = [(await store.sending_state(USER, T0)).overrides]
        await store.set_overrides(USER, {"messages_per_hour": 10, "recipients_per_day": 0})
        seen.append((await store.sending_state(USER, T0)).overrides)
        await store.set_overrides(USER, {"messages_per_hour": None})
        seen.append((await store.sending_state(USER, T0)).overrides)
        seen.append((await store.sending_state("bob@example.test", T0)).overrides)
        return seen

    assert run(tmp_path, body) == [
        LimitOverrides(),
        LimitOverrides(messages_per_hour=10, recipients_per_day=0),
        LimitOverrides(recipients_per_day=0),
        LimitOverrides(),
    ]


def test_overrides_of_an_unknown_user_are_refused(tmp_path: Path) -> None:
    async def body(store: SqliteSendingStore) -> None:
        await store.set_overrides("nobody@example.test", {"messages_per_hour": 1})

    with pytest.raises(NotFound):
        run(tmp_path, body)


def test_limiter_refuses_the_next_message_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(T0)
    logged: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(
        sending_limits, "log", lambda event, **fields: logged.append((event, fields))
    )

    async def body(store: SqliteSendingStore) -> list[object]:
        limiter = SendingLimiter(store, LIMITS, clock)
        outcomes: list[object] = []
        for _ in range(3):
            allowance = await limiter.at_mail(USER)
            outcomes.append(allowance.refusal)
            outcomes.append([allowance.add_recipient() for _ in range(1)])
            await allowance.sent(1)
            clock.now += 60
        refused = await limiter.at_mail(USER)
        outcomes.append(refused.refusal and refused.refusal.code)
        clock.now = T0 + 3600  # the first message has left the hour
        outcomes.append((await limiter.at_mail(USER)).refusal)
        return outcomes

    outcomes = run(tmp_path, body)
    assert outcomes == [None, [None], None, [None], None, [None], 450, None]
    assert [event for event, _ in logged] == ["submission.limit"]
    fields = logged[0][1]
    assert (fields["user"], fields["limit"], fields["value"]) == (USER, "messages_per_hour", 3)
    assert fields["messages_last_hour"] == 3


def test_recipient_refusals_log_once_per_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    monkeypatch.setattr(sending_limits, "log", lambda event, **fields: logged.append(event))

    async def body(store: SqliteSendingStore) -> list[int | None]:
        allowance = await SendingLimiter(store, LIMITS, Clock(T0)).at_mail(USER)
        refusals = [allowance.add_recipient() for _ in range(5)]
        return [r.code if r else None for r in refusals]

    assert run(tmp_path, body) == [None, None, 452, 452, 452]
    assert logged == ["submission.limit"]
