"""CLI command `poczta user quota`: a user's storage quota (own limits or [quota]'s) and usage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from poczta.accounts import normalize_address
from poczta.cli.common import Failure, config_options, print_table, resolve_config
from poczta.config import Config
from poczta.quota import QuotaLimits
from poczta.sizes import format_size, parse_size
from poczta.store.base import QUOTA_RESOURCES, MailStore, NotFound, QuotaState

__all__ = ["print_quota", "quota_defaults", "quota_report", "user_quota"]

DEFAULT = "default"


def quota_defaults(config: Config) -> QuotaLimits:
    return QuotaLimits(config.quota.storage, config.quota.messages)


def valid_address(value: str) -> str:
    try:
        return normalize_address(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a valid address ({exc})") from exc


def _storage_value(text: str) -> int | None:
    """--storage: a size ("500MiB", "1G", octets; 0: no limit), or `default` (None)."""
    if text.lower() == DEFAULT:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}, or 'default'", param_hint="--storage") from None


def _messages_value(text: str) -> int | None:
    if text.lower() == DEFAULT:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    problem = f"{text!r} is not a count (0: no limit) or 'default'"
    raise click.BadParameter(problem, param_hint="--messages")


def quota_report(defaults: QuotaLimits, state: QuotaState) -> dict[str, Any]:
    """Each resource's usage, limit (0: none), who set it and the share used."""
    limits = defaults.with_overrides(state.overrides)
    report: dict[str, Any] = {}
    for name in QUOTA_RESOURCES:
        used, limit = getattr(state.usage, name), getattr(limits, name)
        report[name] = {
            "used": used,
            "limit": limit,
            "source": "user" if getattr(state.overrides, name) is not None else "default",
            "percent": round(100 * used / limit, 1) if limit else None,
        }
    return report


def print_quota(report: dict[str, Any]) -> None:
    rows = []
    for name, entry in report.items():
        shown = format_size if name == "storage" else str
        limit = shown(entry["limit"]) if entry["limit"] else "no limit"
        percent = f"{entry['percent']}%" if entry["percent"] is not None else ""
        rows.append([name, shown(entry["used"]), limit, percent, entry["source"]])
    columns = ["resource", "used", "limit", "used %", "set by"]
    print_table("quota", columns, rows, right=("used", "limit", "used %"))


@click.command("quota")
@config_options
@click.option("--storage", metavar="SIZE|default", help="Total size of the user's messages.")
@click.option("--messages", metavar="N|default", help="Number of the user's messages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("address")
def user_quota(
    config_path: Path | None,
    data_dir: Path | None,
    address: str,
    storage: str | None,
    messages: str | None,
    as_json: bool,
) -> None:
    """Show or set a user's quota: --storage a size like 500MiB or 1G (0: no limit),
    --messages a count, or `default` (the [quota] setting); without options, show it."""
    from poczta.app import open_configured_store

    address = valid_address(address)
    config = resolve_config(config_path, data_dir)
    changes: dict[str, int | None] = {}
    if storage is not None:
        changes["storage"] = _storage_value(storage)
    if messages is not None:
        changes["messages"] = _messages_value(messages)

    async def act(store: MailStore) -> QuotaState:
        found = await store.get_user(address)
        if found is None:
            raise Failure(f"no user {address}")
        if changes:
            try:
                await store.set_quota(found.id, changes)
            except NotFound:
                raise Failure(f"no user {address}") from None
        return (await store.quota_states([found.id]))[found.id]

    async def go() -> QuotaState:
        store = await open_configured_store(config)
        try:
            return await act(store)
        finally:
            await store.close()

    report = quota_report(quota_defaults(config), asyncio.run(go()))
    if as_json:
        click.echo(json.dumps({"address": address, "quota": report}, indent=1))
        return
    if changes:
        click.echo(f"changed the quota of {address}")
    print_quota(report)
