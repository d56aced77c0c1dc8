"""CLI commands that show and move stored mail: mail list/show/move (and mail mailbox)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from poczta.accounts import normalize_address
from poczta.cli.common import Failure, config_options, print_table, resolve_config, run_with_store
from poczta.cli.mailbox import mailbox
from poczta.store.base import MailboxId, MailStore, NotFound, UserId


async def _user_id(store: MailStore, address: str) -> UserId:
    user = await store.get_user(normalize_address(address))
    if user is None:
        raise Failure(f"no user {address}")
    return user.id


async def _mailbox_of(store: MailStore, user_id: UserId, address: str, name: str) -> MailboxId:
    try:
        return (await store.get_mailbox(user_id, name)).id
    except NotFound:
        raise Failure(f"{address} has no mailbox {name!r}") from None


async def _mailbox_id(store: MailStore, address: str, mailbox: str) -> MailboxId:
    return await _mailbox_of(store, await _user_id(store, address), address, mailbox)


async def read_stored(store: MailStore, address: str, mailbox: str, uid: int) -> bytes:
    """The stored bytes of one message; a clear error when it does not exist."""
    try:
        return await store.read_message(await _mailbox_id(store, address, mailbox), uid)
    except NotFound:
        raise Failure(f"no message with uid {uid} in {mailbox}") from None


@click.group()
def mail() -> None:
    """Look at stored mail and mailboxes without a mail client."""


mail.add_command(mailbox)


@mail.command("list")
@config_options
@click.option("--mailbox", default="INBOX", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.argument("address")
def mail_list(
    config_path: Path | None, data_dir: Path | None, address: str, mailbox: str, as_json: bool
) -> None:
    """List the messages of a user's mailbox: uid, date, from, subject, size, flags."""
    config = resolve_config(config_path, data_dir)

    async def collect(store: MailStore) -> list[dict[str, Any]]:
        metas = await store.fetch_meta(await _mailbox_id(store, address, mailbox))
        return [
            {
                "uid": m.uid,
                "date": m.internal_date.isoformat(),
                "from": ", ".join(a.address or "" for a in m.envelope.from_),
                "subject": m.envelope.subject or "",
                "size": m.size,
                "flags": sorted(m.flags),
            }
            for m in metas
        ]

    rows = run_with_store(config, collect)
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    columns = ["uid", "date", "from", "subject", "size", "flags"]
    table = [
        [
            str(r["uid"]),
            r["date"][:19],
            r["from"],
            r["subject"],
            str(r["size"]),
            " ".join(r["flags"]),
        ]
        for r in rows
    ]
    title = f"{address} {mailbox}: {len(rows)} messages"
    print_table(title, columns, table, right=("uid", "size"))


@mail.command("show")
@config_options
@click.argument("address")
@click.argument("mailbox")
@click.argument("uid", type=int)
def mail_show(
    config_path: Path | None, data_dir: Path | None, address: str, mailbox: str, uid: int
) -> None:
    """Print the stored bytes of one message."""
    config = resolve_config(config_path, data_dir)
    data = run_with_store(config, lambda store: read_stored(store, address, mailbox, uid))
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@mail.command("move")
@config_options
@click.argument("address")
@click.argument("mailbox")
@click.argument("uid", type=int)
@click.argument("target")
def mail_move(
    config_path: Path | None,
    data_dir: Path | None,
    address: str,
    mailbox: str,
    uid: int,
    target: str,
) -> None:
    """Move one message to another mailbox of the same user (e.g. from Junk to INBOX)."""
    config = resolve_config(config_path, data_dir)

    async def move(store: MailStore) -> int:
        user_id = await _user_id(store, address)
        for name in (mailbox, target):
            await _mailbox_of(store, user_id, address, name)
        try:
            return await store.move_message(user_id, mailbox, uid, target)
        except NotFound:
            raise Failure(f"no message with uid {uid} in {mailbox}") from None

    new_uid = run_with_store(config, move)
    click.echo(f"moved uid {uid} of {mailbox} to {target}: uid {new_uid}")
