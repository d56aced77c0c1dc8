"""Delivery: Return-Path on local copies only, the client's own Return-Path removed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.delivery import Delivery, DeliveryPlan
from poczta.store import MailboxId, MailStore, MessageMeta, UserId
from poczta.store.sqlite.store import SqliteStore
from poczta.trace import with_return_path

MESSAGE = (
    b"Received: from client.test ([192.0.2.1])\r\n\tby mx.example.test (poczta); x\r\n"
    b"From: a@client.test\r\nSubject: hi\r\n\r\nbody\r\n"
)
CLIENT_RETURN_PATH = (
    b"Received: from client.test ([192.0.2.1])\r\n"
    b"Return-Path: <forged@evil.test>\r\n"
    b"From: a@client.test\r\n"
    b"RETURN-PATH\t:\r\n\t<folded@evil.test>\r\n (and a comment)\r\n"
    b"Return-Paths: not the same field\r\n"
    b"Subject: hi\r\n\r\n"
    b"Return-Path: <in the body, kept>\r\n"
)


def test_with_return_path_puts_ours_first_and_drops_the_clients() -> None:
    assert with_return_path(CLIENT_RETURN_PATH, "a@client.test") == (
        b"Return-Path: <a@client.test>\r\n"
        b"Received: from client.test ([192.0.2.1])\r\n"
        b"From: a@client.test\r\n"
        b"Return-Paths: not the same field\r\n"
        b"Subject: hi\r\n\r\n"
        b"Return-Path: <in the body, kept>\r\n"
    )
    assert with_return_path(MESSAGE, "") == b"Return-Path: <>\r\n" + MESSAGE


@pytest.mark.parametrize(
    ("data", "stored"),
    [
        (b"Subject: x\r\nReturn-Path: <a>\r\n\tfolded\r\n\r\n", b"Subject: x\r\n\r\n"),
        (b"Return-Path: <a>\r\nSubject: no body", b"Subject: no body"),
        (b"\r\nReturn-Path: <only in the body>\r\n", b"\r\nReturn-Path: <only in the body>\r\n"),
        (b"X: 1\nreturn-path:<a>\nY: 2\n\nbody\n", b"X: 1\nY: 2\n\nbody\n"),
    ],
)
def test_with_return_path_edges(data: bytes, stored: bytes) -> None:
    assert with_return_path(data, "s@x.test") == b"Return-Path: <s@x.test>\r\n" + stored


@given(st.text(), st.lists(st.sampled_from(["Return-Path: <a>", " folded", "X: y", "", "b"])))
def test_with_return_path_adds_one_clean_line_and_only_removes_whole_lines(
    sender: str, lines: list[str]
) -> None:
    data = "".join(line + "\r\n" for line in lines).encode()
    ours, _, rest = with_return_path(data, sender).partition(b"\r\n")
    assert ours.startswith(b"Return-Path: <") and ours.endswith(b">")
    assert b"\r" not in ours and b"\n" not in ours and ours.decode().isprintable()
    assert set(rest.split(b"\r\n")) <= set(data.split(b"\r\n"))  # nothing new, no line cut


def run(tmp_path: Path, body: Callable[[MailStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def user(store: MailStore, address: str) -> UserId:
    if not await store.domain_exists("example.test"):
        await store.add_domain("example.test")
    return await store.add_user(address, "hash", "scram")


async def only_inbox_message(store: MailStore, user_id: UserId) -> tuple[MessageMeta, bytes]:
    box = await store.get_mailbox(user_id, "INBOX")
    [meta] = await store.fetch_meta(box.id)
    return meta, await store.read_message(MailboxId(box.id), meta.uid)


@pytest.mark.parametrize("sender", ["a@client.test", ""])
def test_local_copies_get_return_path_and_the_queue_copy_does_not(
    tmp_path: Path, sender: str
) -> None:
    async def body(store: MailStore) -> None:
        bob, carol = await user(store, "bob@example.test"), await user(store, "carol@example.test")
        plan = DeliveryPlan(user_ids=[bob, carol], remote=["dave@remote.test"])
        await Delivery(store).deliver(CLIENT_RETURN_PATH, plan, sender)
        for user_id in (bob, carol):
            meta, local = await only_inbox_message(store, user_id)
            assert local.startswith(f"Return-Path: <{sender}>\r\nReceived: ".encode())
            assert b"evil.test" not in local
            # the stored facts describe the stored bytes
            assert (meta.size, meta.header_size) == (len(local), local.index(b"\r\n\r\n") + 4)
        [entry] = await store.list_queue()
        assert entry.sender == sender
        assert await store.blobs.read(entry.digest) == CLIENT_RETURN_PATH  # relayed untouched

    run(tmp_path, body)


def test_remote_only_mail_is_queued_without_return_path(tmp_path: Path) -> None:
    async def body(store: MailStore) -> None:
        plan = DeliveryPlan(remote=["dave@remote.test"])
        await Delivery(store).deliver(MESSAGE, plan, "a@example.test")
        [entry] = await store.list_queue()
        assert await store.blobs.read(entry.digest) == MESSAGE

    run(tmp_path, body)


def test_final_delivery_makes_a_part_holding_a_nul_textual() -> None:
    data = b"Subject: x\r\nContent-Type: text/plain\r\n\r\nab\x00cd\r\n"
    stored = with_return_path(data, "a@client.test")
    assert b"\x00" not in stored
    assert stored.startswith(b"Return-Path: <a@client.test>\r\nSubject: x\r\n")
    assert stored.endswith(b"Content-Transfer-Encoding: base64\r\n\r\nYWIAY2QNCg==\r\n")
    assert with_return_path(b"Subject: y\r\n\r\nplain\r\n", "") == (
        b"Return-Path: <>\r\nSubject: y\r\n\r\nplain\r\n"
    )
