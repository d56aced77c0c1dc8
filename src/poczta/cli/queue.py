"""CLI commands for the outbound queue: queue list/show/flush/delete/bounce/hold/release.

They change the queue in the store; a running server's queue runner sees the change
within a second (it polls the queue's next due time), so `queue flush` is delivered
at once and `queue bounce` sends its bounce then.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from poczta.cli.common import Failure, config_options, print_table, resolve_config, run_with_store
from poczta.store.base import MailStore, NotFound, QueueEntry, QueueId, QueueRecipient

BOUNCED_BY_ADMIN = "5.0.0 returned to the sender by the administrator (poczta queue bounce)"


def _time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment is not None else ""


def _recipient_row(r: QueueRecipient) -> dict[str, Any]:
    return {
        "address": r.address,
        "status": r.status,
        "attempts": r.attempts,
        "last_attempt": _time(r.last_attempt),
        "reply_code": r.reply_code,
        "reply_enhanced": r.reply_enhanced,
        "last_reply": r.last_error or "",
        "remote_mta": r.remote_mta or "",
        "tls": r.tls or "",
        "notify": list(r.notify) if r.notify is not None else None,
        "orcpt": r.orcpt,
        "reported": r.reported,
    }


def _entry_row(e: QueueEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "created": _time(e.created),
        "sender": e.sender,
        "recipients": [r.address for r in e.recipients],
        "pending": [r.address for r in e.pending()],
        "size": e.size,
        "attempts": e.attempts,
        "next_attempt": _time(e.next_attempt),
        "held": e.held,
        "last_error": e.last_error or "",
        "envid": e.envid,
        "ret": e.ret,
    }


@click.group()
def queue() -> None:
    """Look at and manage the outbound queue."""


@queue.command("list")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def queue_list(config_path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """List queued outbound messages: id, sender, recipients, attempts, next attempt, error."""
    entries = run_with_store(resolve_config(config_path, data_dir), lambda s: s.list_queue())
    rows = [_entry_row(e) for e in entries]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    print_table(
        f"outbound queue: {len(rows)} messages",
        ["id", "sender", "recipients", "attempts", "next_attempt", "last_error"],
        [
            [
                str(row["id"]),
                row["sender"] or "<>",
                ", ".join(row["recipients"]),
                str(row["attempts"]),
                "held" if row["held"] else row["next_attempt"],
                row["last_error"],
            ]
            for row in rows
        ],
        right=("id", "attempts"),
    )


async def _entry(store: MailStore, queue_id: int) -> QueueEntry:
    try:
        return await store.get_queue_entry(QueueId(queue_id))
    except NotFound:
        raise Failure(f"no queue entry {queue_id}") from None


@queue.command("show")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.argument("queue_id", type=int)
def queue_show(
    config_path: Path | None, data_dir: Path | None, queue_id: int, as_json: bool
) -> None:
    """Show one entry: per recipient its state, attempts, last reply and TLS outcome."""
    entry = run_with_store(resolve_config(config_path, data_dir), lambda s: _entry(s, queue_id))
    row = _entry_row(entry) | {"recipients": [_recipient_row(r) for r in entry.recipients]}
    if as_json:
        click.echo(json.dumps(row, indent=1))
        return
    state = "held" if entry.held else f"next attempt {row['next_attempt']}"
    click.echo(
        f"queue entry {entry.id}: from {entry.sender or '<>'}, {entry.size} bytes,"
        f" queued {row['created']}, {entry.attempts} attempts, {state}"
    )
    print_table(
        "recipients",
        ["address", "state", "attempts", "last_reply", "remote_mta", "tls"],
        [
            [
                r["address"],
                r["status"],
                str(r["attempts"]),
                r["last_reply"],
                r["remote_mta"],
                r["tls"],
            ]
            for r in row["recipients"]
        ],
        right=("attempts",),
    )


def _change(config_path: Path | None, data_dir: Path | None, action: Any) -> Any:
    async def run(store: MailStore) -> Any:
        try:
            return await action(store)
        except NotFound as exc:
            raise Failure(str(exc)) from None

    return run_with_store(resolve_config(config_path, data_dir), run)


def _now() -> datetime:
    return datetime.now(UTC)


@queue.command("flush")
@config_options
@click.argument("queue_id", type=int, required=False)
def queue_flush(config_path: Path | None, data_dir: Path | None, queue_id: int | None) -> None:
    """Try the entry (or every entry not held) now."""
    target = QueueId(queue_id) if queue_id is not None else None
    count = _change(config_path, data_dir, lambda s: s.flush_queue(_now(), target))
    click.echo(f"{count} queue entries due now")


@queue.command("delete")
@config_options
@click.argument("queue_id", type=int)
def queue_delete(config_path: Path | None, data_dir: Path | None, queue_id: int) -> None:
    """Remove the entry without telling the sender."""
    _change(config_path, data_dir, lambda s: s.delete_queue_entry(QueueId(queue_id)))
    click.echo(f"deleted queue entry {queue_id}")


@queue.command("bounce")
@config_options
@click.argument("queue_id", type=int)
def queue_bounce(config_path: Path | None, data_dir: Path | None, queue_id: int) -> None:
    """Give up on the entry's pending recipients; the sender gets a bounce."""
    bounce = lambda s: s.bounce_queue_entry(QueueId(queue_id), BOUNCED_BY_ADMIN, _now())  # noqa: E731
    _change(config_path, data_dir, bounce)
    click.echo(f"queue entry {queue_id} bounces (the running server sends the report)")


@queue.command("hold")
@config_options
@click.argument("queue_id", type=int)
def queue_hold(config_path: Path | None, data_dir: Path | None, queue_id: int) -> None:
    """Keep the entry in the queue without trying it until released."""
    _change(config_path, data_dir, lambda s: s.hold_queue_entry(QueueId(queue_id), True))
    click.echo(f"queue entry {queue_id} held")


@queue.command("release")
@config_options
@click.argument("queue_id", type=int)
def queue_release(config_path: Path | None, data_dir: Path | None, queue_id: int) -> None:
    """Release a held entry (it is tried at its next attempt time; flush it to try now)."""
    _change(config_path, data_dir, lambda s: s.hold_queue_entry(QueueId(queue_id), False))
    click.echo(f"queue entry {queue_id} released")
