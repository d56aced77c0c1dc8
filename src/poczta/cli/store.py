"""CLI commands for the store as a whole: store copy (to PostgreSQL and back to SQLite)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from poczta.cli.common import config_options, print_table, resolve_config
from poczta.store.copy import CopyReport, copy_store
from poczta.store.copy.targets import TARGET_FORMS, open_source, open_target


class RichProgress:
    """A progress bar per step on stderr (a terminal), or one line per step elsewhere."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self._quiet = not console.is_terminal
        self._bar = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=self._quiet,
        )
        self._task: Any = None

    def start(self, step: str, total: int, done: int = 0) -> None:
        if self._quiet:
            resumed = f", {done} there already" if done else ""
            click.echo(f"{step}: {total}{resumed}", err=True)
            return
        if self._task is None:
            self._bar.start()
        else:
            self._bar.update(self._task, completed=self._bar.tasks[-1].total)
        self._task = self._bar.add_task(step, total=total, completed=done)

    def advance(self, items: int, *, octets: int = 0) -> None:
        if self._task is not None:
            self._bar.advance(self._task, items)

    def finish(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None


@click.group("store")
def store() -> None:
    """The store as a whole: copy it to another backend."""


@store.command("copy")
@config_options
@click.option(
    "--to",
    "target",
    required=True,
    metavar="TARGET",
    help=f"Where to copy the store: {TARGET_FORMS} (an empty store, or one this copy began).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The PostgreSQL target's password, its first line (default: $PGPASSWORD).",
)
def store_copy(
    config_path: Path | None, data_dir: Path | None, target: str, password_file: Path | None
) -> None:
    """Copy the whole store (accounts, mailboxes with their UIDs, bodies, queue, greylisting)
    to TARGET, then compare both. Stop the server first. An interrupted copy goes on where
    it stopped when run again."""
    config = resolve_config(config_path, data_dir)
    progress = RichProgress()

    async def run() -> tuple[CopyReport, str, str]:
        source = await open_source(config)
        try:
            copy = await open_target(target, password_file=password_file)
            try:
                report = await copy_store(source, copy, progress=progress)
                return report, source.description, copy.description
            finally:
                progress.finish()
                await copy.close()
        finally:
            await source.close()

    report, source_name, target_name = asyncio.run(run())
    _print_summary(report, source_name, target_name)


def _print_summary(report: CopyReport, source: str, target: str) -> None:
    checks = report.verification
    print_table(
        f"{source} -> {target}",
        ["table", "rows", "copied now", "verified"],
        [
            [c.name, str(c.target_rows), str(report.copied.get(c.name, 0)), "same"]
            for c in checks.tables
        ],
        right=("rows", "copied now"),
    )
    resumed = " (resumed)" if report.resumed else ""
    octets = f"{checks.body_octets / 1e6:.1f} MB"
    click.echo(
        f"copied{resumed} and verified: {sum(c.target_rows for c in checks.tables)} rows,"
        f" {checks.bodies} bodies ({octets}), every body matching its digest",
        file=sys.stdout,
    )
