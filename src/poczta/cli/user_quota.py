"""CLI command `poczta user quota`: a user's storage quota (own limits or [quota]'s) and usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from poczta.cli.common import (
    DEFAULT,
    Failure,
    config_options,
    limit_value,
    print_table,
    resolve_config,
    run_with_store,
    valid_address,
)
from poczta.config import Config
from poczta.quota import QuotaLimits
from poczta.sizes import format_size, parse_size
from poczta.store.base import QUOTA_RESOURCES, MailStore, NotFound, QuotaState

__all__ = ["print_quota", "quota_defaults", "quota_report", "user_quota"]


def quota_defaults(config: Config) -> QuotaLimits:
    return QuotaLimits(config.quota.storage, config.quota.messages)


def _storage_value(text: str) -> int | None:
    """--storage: a size ("500MiB", "1G", octets; 0: no limit), or `default` (None)."""
    if text.lower() == DEFAULT:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}, or 'default'", param_hint="--storage") from None


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
    address = valid_address(address)
    config = resolve_config(config_path, data_dir)
    changes: dict[str, int | None] = {}
    if storage is not None:
        changes["storage"] = _storage_value(storage)
    if messages is not None:
        changes["messages"] = limit_value("--messages", messages)

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

    report = quota_report(quota_defaults(config), run_with_store(config, act))
    if as_json:
        click.echo(json.dumps({"address": address, "quota": report}, indent=1))
        return
    if changes:
        click.echo(f"changed the quota of {address}")
    print_quota(report)
