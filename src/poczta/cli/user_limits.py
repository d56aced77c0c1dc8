"""CLI commands `poczta user show` and `poczta user limits`: mailboxes, quota, sending limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from poczta.cli.common import (
    Failure,
    config_options,
    limit_value,
    print_table,
    resolve_config,
    valid_address,
)
from poczta.cli.user_quota import print_quota, quota_defaults, quota_report
from poczta.config import Config
from poczta.sending_limits import LIMIT_NAMES, SendingLimits, SendingState
from poczta.store.base import MailStore, NotFound, SendingStore

T = TypeVar("T")


def _defaults(config: Config) -> SendingLimits:
    from poczta.app_settings import sending_limits

    return sending_limits(config)


def _with_stores(config: Config, action: Callable[[MailStore, SendingStore], Awaitable[T]]) -> T:
    """Open the mail store and the sending-limit tables beside it, run `action`, close."""
    from poczta.app import open_configured_store

    async def go() -> T:
        store = await open_configured_store(config)
        try:
            return await action(store, await store.sending_store())
        finally:
            await store.close()

    return asyncio.run(go())


def _limits_report(defaults: SendingLimits, state: SendingState) -> dict[str, Any]:
    effective = defaults.with_overrides(state.overrides)
    return {
        "limits": {
            name: {
                "value": getattr(effective, name),
                "source": "user" if getattr(state.overrides, name) is not None else "default",
            }
            for name in LIMIT_NAMES
        },
        "usage": {
            "messages_last_hour": state.usage.messages_last_hour,
            "recipients_last_day": state.usage.recipients_last_day,
        },
    }


def _print_limits(report: dict[str, Any]) -> None:
    rows = []
    for name, limit in report["limits"].items():
        value = str(limit["value"]) if limit["value"] else "no limit"
        rows.append([name, value, limit["source"]])
    print_table("sending limits", ["limit", "value", "set by"], rows)
    usage = report["usage"]
    rows = [[name, str(count)] for name, count in usage.items()]
    print_table("sent", ["count", "value"], rows, right=("value",))


@click.command("limits")
@config_options
@click.option("--messages-per-hour", metavar="N|default", help="Messages in any hour.")
@click.option("--recipients-per-message", metavar="N|default", help="Recipients of one message.")
@click.option("--recipients-per-day", metavar="N|default", help="Recipients in any 24 hours.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("address")
def user_limits(
    config_path: Path | None,
    data_dir: Path | None,
    address: str,
    as_json: bool,
    **given: str | None,
) -> None:
    """Show or set a user's sending limits: N (0: no limit) or `default` (the [submission]
    setting) for each one given; without options, show them."""
    address = valid_address(address)
    config = resolve_config(config_path, data_dir)
    changes = {
        name: limit_value("--" + name.replace("_", "-"), text)
        for name, text in given.items()
        if text is not None
    }

    async def act(store: MailStore, sending: SendingStore) -> SendingState:
        if await store.get_user(address) is None:
            raise Failure(f"no user {address}")
        if changes:
            try:
                await sending.set_overrides(address, changes)
            except NotFound:
                raise Failure(f"no user {address}") from None
        return await sending.sending_state(address, time.time())

    report = _limits_report(_defaults(config), _with_stores(config, act))
    if as_json:
        click.echo(json.dumps({"address": address, **report}, indent=1))
        return
    if changes:
        click.echo(f"changed the sending limits of {address}")
    _print_limits(report)


@click.command("show")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("address")
def user_show(config_path: Path | None, data_dir: Path | None, address: str, as_json: bool) -> None:
    """Show a user: created, mailboxes (messages, size), quota, sending limits and what it
    sent."""
    address = valid_address(address)
    config = resolve_config(config_path, data_dir)

    async def collect(store: MailStore, sending: SendingStore) -> dict[str, Any]:
        found = await store.get_user(address)
        if found is None:
            raise Failure(f"no user {address}")
        boxes = []
        for box in await store.list_mailboxes(found.id):
            size = sum(s.size for s in await store.fetch_summaries(box.id))
            boxes.append({"name": box.name, "messages": box.messages, "size": size})
        state = await sending.sending_state(address, time.time())
        quota = (await store.quota_states([found.id]))[found.id]
        return {
            "address": found.address,
            "created": found.created.isoformat(),
            "mailboxes": boxes,
            "quota": quota_report(quota_defaults(config), quota),
            **_limits_report(_defaults(config), state),
        }

    report = _with_stores(config, collect)
    if as_json:
        click.echo(json.dumps(report, indent=1, ensure_ascii=False))
        return
    click.echo(f"address: {report['address']}")
    click.echo(f"created: {report['created']}")
    rows = [[b["name"], str(b["messages"]), str(b["size"])] for b in report["mailboxes"]]
    print_table("mailboxes", ["mailbox", "messages", "size"], rows, right=("messages", "size"))
    print_quota(report["quota"])
    _print_limits(report)
