"""CLI commands for a user's mailboxes: mail mailbox list/create/delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from poczta.accounts import normalize_address
from poczta.cli.common import (
    Failure,
    config_options,
    confirm_removal,
    print_table,
    resolve_config,
    run_with_store,
)
from poczta.imap.names import canonical, name_problem
from poczta.store.base import SPECIAL_USES, AlreadyExists, MailStore, NotFound, UserId


async def _user(store: MailStore, address: str) -> UserId:
    user = await store.get_user(normalize_address(address))
    if user is None:
        raise Failure(f"no user {address}")
    return user.id


@click.group("mailbox")
def mailbox() -> None:
    """A user's mailboxes (folders)."""


@mailbox.command("list")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.argument("address")
def mailbox_list(
    config_path: Path | None, data_dir: Path | None, address: str, as_json: bool
) -> None:
    """List a user's mailboxes: name, special use, messages, unseen, size."""

    async def collect(store: MailStore) -> list[dict[str, Any]]:
        rows = []
        for box in await store.list_mailboxes(await _user(store, address)):
            messages, unseen, _, size = await store.mailbox_counts(box.id)
            rows.append(
                {
                    "name": box.name,
                    "special_use": box.special_use or "",
                    "messages": messages,
                    "unseen": unseen,
                    "size": size,
                    "uidvalidity": box.uidvalidity,
                    "uidnext": box.uidnext,
                }
            )
        return rows

    rows = run_with_store(resolve_config(config_path, data_dir), collect)
    if as_json:
        click.echo(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    columns = ("name", "special_use", "messages", "unseen", "size")
    print_table(
        f"mailboxes of {address}",
        columns,
        [[str(row[c]) for c in columns] for row in rows],
        right=("messages", "unseen", "size"),
    )


@mailbox.command("create")
@config_options
@click.option("--special-use", type=click.Choice(SPECIAL_USES), help="e.g. \\\\Archive")
@click.argument("address")
@click.argument("name")
def mailbox_create(
    config_path: Path | None,
    data_dir: Path | None,
    address: str,
    name: str,
    special_use: str | None,
) -> None:
    """Create a mailbox for a user ("/" separates levels; missing parents are created)."""
    name = canonical(name.strip("/"))
    problem = name_problem(name)
    if problem is not None:
        raise Failure(problem)

    async def create(store: MailStore) -> None:
        try:
            await store.create_mailbox(await _user(store, address), name, special_use)
        except AlreadyExists:
            raise Failure(f"{address} has a mailbox {name!r} already") from None

    run_with_store(resolve_config(config_path, data_dir), create)
    click.echo(f"created mailbox {name} for {address}")


@mailbox.command("delete")
@config_options
@click.option("--force", "--yes", "-y", "force", is_flag=True, help="Do not ask.")
@click.argument("address")
@click.argument("name")
def mailbox_delete(
    config_path: Path | None, data_dir: Path | None, address: str, name: str, force: bool
) -> None:
    """Delete a user's mailbox and the mail in it (asks first when it holds mail)."""
    name = canonical(name)
    if name == "INBOX":
        raise Failure("INBOX cannot be deleted")

    async def delete(store: MailStore) -> None:
        user = await _user(store, address)
        boxes = await store.list_mailboxes(user)
        box = next((b for b in boxes if b.name == name), None)
        if box is None:
            raise Failure(f"{address} has no mailbox {name!r}")
        if any(b.name.startswith(name + "/") for b in boxes):
            raise Failure(f"{name!r} has child mailboxes: delete those first")
        if box.messages:
            confirm_removal(
                f"Delete {name} of {address} with its {box.messages} message(s)?", force
            )
        try:
            await store.delete_mailbox(user, name)
        except NotFound:
            raise Failure(f"{address} has no mailbox {name!r}") from None

    run_with_store(resolve_config(config_path, data_dir), delete)
    click.echo(f"deleted mailbox {name} of {address}")
