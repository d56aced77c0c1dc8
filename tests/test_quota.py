"""Quotas: sizes as written, the [quota] section, the room a user has, and SMTP delivery's
answers and bounces for full mailboxes (against a real SQLite store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.config import ConfigError, validate_text
from poczta.delivery import Delivery, DeliveryPlan
from poczta.quota import OverQuota, QuotaLimits, Quotas, UserQuota
from poczta.sizes import format_size, parse_size
from poczta.store import MailStore, UserId
from poczta.store.base import QuotaOverrides, QuotaUsage, RecipientDsn
from poczta.store.sqlite.store import SqliteStore

T = TypeVar("T")
BASE = 'hostname = "mail.example.org"\ndata_dir = "/srv/mail"\n'
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
MESSAGE = b"From: carol@remote.test\r\nSubject: big news\r\nMessage-ID: <1@remote.test>\r\n\r\n"


# --- sizes and the config ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("512B", 512),
        ("1K", 1024),
        ("500MiB", 500 * 2**20),
        ("500 mib", 500 * 2**20),
        ("1G", 2**30),
        ("1.5GiB", 3 * 2**29),
        ("2T", 2 * 2**40),
    ],
)
def test_sizes_are_read_in_binary_units(text: str, octets: int) -> None:
    assert parse_size(text) == octets


@pytest.mark.parametrize("text", ["", "MiB", "-1G", "1MB", "1 GB", "1.5", "1e6", "١G", "1 G B"])
def test_what_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.integers(0, 2**50))
def test_a_formatted_size_reads_back_close(octets: int) -> None:
    back = parse_size(format_size(octets).replace(" ", ""))
    assert abs(back - octets) <= max(octets // 20, 0)


def test_quota_section_defaults_and_values() -> None:
    default = validate_text(BASE, "poczta.toml").quota
    assert (default.storage, default.messages, default.over_quota) == (0, 0, "temporary")
    text = BASE + '[quota]\nstorage = "1GiB"\nmessages = 5000\nover_quota = "permanent"\n'
    quota = validate_text(text, "poczta.toml").quota
    assert (quota.storage, quota.messages, quota.over_quota) == (2**30, 5000, "permanent")
    assert (
        validate_text(BASE + "[quota]\nstorage = 1000000\n", "poczta.toml").quota.storage == 10**6
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[quota]\nstorage = "1GB"\n', "poczta.toml:4: quota.storage: '1GB': unknown unit 'GB'"),
        ("[quota]\nstorage = -1\n", "poczta.toml:4: quota.storage: must not be negative"),
        ("[quota]\nstorage = true\n", "poczta.toml:4: quota.storage: expected an integer"),
        ('[quota]\nover_quota = "bounce"\n', "poczta.toml:4: quota.over_quota: unknown value"),
    ],
)
def test_quota_section_errors(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_text(BASE + extra, "poczta.toml")
    assert str(info.value).startswith(expected)


# --- room and what IMAP is told ---------------------------------------------------------


def test_room_counts_octets_and_messages_and_zero_is_no_limit() -> None:
    limits = QuotaLimits(storage=10_000, messages=3)
    assert UserQuota(limits, QuotaUsage(9_000, 2)).room_for(1_000)
    assert not UserQuota(limits, QuotaUsage(9_000, 2)).room_for(1_001)
    assert not UserQuota(limits, QuotaUsage(0, 3)).room_for(1)
    assert UserQuota(QuotaLimits(), QuotaUsage(10**15, 10**9)).room_for(10**9)
    assert limits.with_overrides(QuotaOverrides(messages=0)) == QuotaLimits(10_000, 0)


def test_imap_is_told_kib_rounded_up_and_only_limited_resources() -> None:
    quota = UserQuota(QuotaLimits(storage=500 * 1024), QuotaUsage(1025, 7))
    assert quota.imap_resources() == [("STORAGE", 2, 500)]
    both = UserQuota(QuotaLimits(2048, 10), QuotaUsage(0, 7))
    assert both.imap_resources() == [("STORAGE", 0, 2), ("MESSAGE", 7, 10)]
    assert UserQuota(QuotaLimits(), QuotaUsage(5, 5)).imap_resources() == []


# --- delivery ---------------------------------------------------------------------------


def run(tmp_path: Path, body: Callable[[MailStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            await store.add_domain("example.test")
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def inbox_count(store: MailStore, user: UserId) -> int:
    return (await store.get_mailbox(user, "INBOX")).messages


async def plan_for(
    delivery: Delivery, *addresses: str, notify: tuple[str, ...] | None = None
) -> DeliveryPlan:
    plan = DeliveryPlan()
    for address in addresses:
        plan.add(await delivery.classify(address), RecipientDsn(notify) if notify else None)
    return plan


def test_a_full_recipient_is_refused_at_rcpt_temporarily_or_permanently(tmp_path: Path) -> None:
    async def body(store: MailStore) -> list[tuple[int, str, str] | None]:
        ann = await store.add_user("ann@example.test", "x", "x")
        await store.add_user("ben@example.test", "x", "x")
        await store.add_alias("both@example.test", "ann@example.test")
        await store.add_alias("both@example.test", "ben@example.test")
        await store.set_quota(ann, {"messages": 1})
        temporary = Delivery(store, cache_ttl=0, quotas=Quotas(store))
        permanent = Delivery(store, cache_ttl=0, quotas=Quotas(store, permanent=True))
        seen = []
        for delivery, address, size in [
            (temporary, "ann@example.test", None),  # empty: room for one message
            (temporary, "ben@example.test", None),
        ]:
            refusal = await delivery.recipient_quota(await delivery.classify(address), size)
            seen.append(None if refusal is None else (refusal.code, refusal.enhanced, refusal.text))
        await temporary.deliver(MESSAGE, await plan_for(temporary, "ann@example.test"), "", NOW)
        for delivery, address in [
            (temporary, "ann@example.test"),
            (permanent, "ann+tag@example.test"),
            (temporary, "both@example.test"),  # ben has room: decided at DATA
        ]:
            refusal = await delivery.recipient_quota(await delivery.classify(address))
            seen.append(None if refusal is None else (refusal.code, refusal.enhanced, refusal.text))
        return seen

    assert run(tmp_path, body) == [
        None,
        None,
        (452, "4.2.2", "<ann@example.test>: Mailbox full"),
        (552, "5.2.2", "<ann+tag@example.test>: Mailbox full"),
        None,
    ]


def test_a_declared_size_that_does_not_fit_is_refused_at_rcpt(tmp_path: Path) -> None:
    async def body(store: MailStore) -> tuple[bool, bool]:
        ann = await store.add_user("ann@example.test", "x", "x")
        await store.set_quota(ann, {"storage": 10_000})
        delivery = Delivery(store, cache_ttl=0)
        verdict = await delivery.classify("ann@example.test")
        fits = await delivery.recipient_quota(verdict, 10_000) is None
        too_big = await delivery.recipient_quota(verdict, 10_001) is None
        return fits, too_big

    assert run(tmp_path, body) == (True, False)


def test_a_message_that_fits_no_recipient_is_refused_whole(tmp_path: Path) -> None:
    async def body(store: MailStore) -> tuple[str, int]:
        ann = await store.add_user("ann@example.test", "x", "x")
        await store.set_quota(ann, {"storage": len(MESSAGE)})  # no room for Return-Path too
        delivery = Delivery(store, cache_ttl=0)
        plan = await plan_for(delivery, "ann@example.test")
        with pytest.raises(OverQuota) as info:
            await delivery.deliver(MESSAGE, plan, "carol@remote.test", NOW, quota=True)
        refusal = info.value.refusal
        return f"{refusal.code} {refusal.enhanced} {refusal.text}", await inbox_count(store, ann)

    assert run(tmp_path, body) == ("452 4.2.2 Mailbox full", 0)


def test_the_others_get_the_message_and_the_sender_a_bounce(tmp_path: Path) -> None:
    async def body(store: MailStore) -> tuple[int, int, list[str], bytes]:
        ann = await store.add_user("ann@example.test", "x", "x")
        ben = await store.add_user("ben@example.test", "x", "x")
        sender = await store.add_user("sue@example.test", "x", "x")
        await store.set_quota(ann, {"messages": 0, "storage": 10})
        await store.set_quota(sender, {"storage": 1})  # a report is filed all the same
        delivery = Delivery(store, cache_ttl=0, hostname="mx.example.test")
        plan = await plan_for(delivery, "ann@example.test", "ben@example.test")
        plan.envid = "ENV-1"
        await delivery.deliver(MESSAGE, plan, "sue@example.test", NOW, quota=True)
        sue_inbox = await store.get_mailbox(sender, "INBOX")
        [report] = await store.fetch_meta(sue_inbox.id)
        data = await store.read_message(sue_inbox.id, report.uid)
        queue = [e.sender for e in await store.list_queue()]
        return await inbox_count(store, ann), await inbox_count(store, ben), queue, data

    ann, ben, queue, report = run(tmp_path, body)
    assert (ann, ben, queue) == (0, 1, [])
    assert report.startswith(b"Return-Path: <>\r\n")
    assert b"Content-Type: multipart/report; report-type=delivery-status" in report
    assert report.count(b"Final-Recipient:") == 1  # ben got the message
    assert b"Final-Recipient: rfc822; ann@example.test" in report
    assert b"Status: 5.2.2" in report and b"Original-Envelope-Id: ENV-1" in report
    assert b"Subject: big news" in report  # the returned headers


def test_a_remote_sender_gets_the_bounce_through_the_queue_unless_notify_says_never(
    tmp_path: Path,
) -> None:
    async def body(store: MailStore) -> list[tuple[str, tuple[str, ...]]]:
        ann = await store.add_user("ann@example.test", "x", "x")
        await store.add_user("ben@example.test", "x", "x")
        await store.set_quota(ann, {"messages": 0, "storage": 10})
        delivery = Delivery(store, cache_ttl=0)
        for notify in (None, ("NEVER",)):
            plan = await plan_for(delivery, "ann@example.test", notify=notify)
            plan.add(await delivery.classify("ben@example.test"))
            await delivery.deliver(MESSAGE, plan, "carol@remote.test", NOW, quota=True)
        entries = await store.list_queue()
        return [(e.sender, tuple(r.address for r in e.recipients)) for e in entries]

    assert run(tmp_path, body) == [("", ("carol@remote.test",))]


def test_without_quota_checks_nothing_is_refused(tmp_path: Path) -> None:
    async def body(store: MailStore) -> int:
        ann = await store.add_user("ann@example.test", "x", "x")
        await store.set_quota(ann, {"messages": 0, "storage": 1})
        delivery = Delivery(store, cache_ttl=0)
        await delivery.deliver(MESSAGE, await plan_for(delivery, "ann@example.test"), "", NOW)
        return await inbox_count(store, ann)

    assert run(tmp_path, body) == 1
