"""Servers for the IMAP benchmark: poczta and a private Dovecot, holding the same mail.

The mail plan is the same for both: ``big@`` has the corpus INBOX of ``--messages``
messages and 20 folders of fewer (the five special-use ones poczta creates for every
user, fifteen more), each of ``--clients`` users has a copy of one smaller INBOX
(``--user-messages``), and each of ``--idle`` users a copy of a tiny one. Flags and
internal dates come from the corpus. poczta is filled through its store API, Dovecot's
Maildirs are written as files (see `dovecot_instance.MaildirWriter`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import poczta_instance
from _common import BenchError, ServerProcess, make_certificate, wait_port
from dovecot_instance import (
    DovecotInstance,
    Listener,
    MaildirWriter,
    argon2id,
    install_dovecot,
    password_hash,
)
from mailgen import DOMAIN, Corpus, CorpusMessage

HOST = "127.0.0.1"
PASSWORD = "bench-password-1"
SPECIAL = [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Junk", "\\Junk")]
SPECIAL += [("Trash", "\\Trash"), ("Archive", "\\Archive")]
OTHER: tuple[str, ...] = (
    "Work",
    "Family",
    "Receipts",
    "Travel",
    "Lists-dev",
    "Lists-announce",
    "Projects",
)
OTHER += ("Friends", "Newsletters", "Bank", "Photos", "Old-2023", "Old-2024", "Invoices", "Notes")
FOLDERS: list[tuple[str, str | None]] = [*SPECIAL, *((name, None) for name in OTHER)]
MOVE_TARGET = "Archive"


class NotAvailable(BenchError):
    """The target cannot serve IMAP (yet); the other targets are still measured."""


@dataclass(frozen=True)
class Mailbox:
    """One mailbox of the plan: its name, its corpus stream and how many messages."""

    name: str
    stream: str
    count: int
    special_use: str | None = None


def folder_count(k: int, messages: int) -> int:
    return max(5, messages // (10 + 5 * k))


class Plan:
    """Who has which mailboxes, the same for every target."""

    def __init__(self, opts: argparse.Namespace, corpus: Corpus) -> None:
        self.opts = opts
        self.corpus = corpus
        self.big_user = f"big@{DOMAIN}"
        self.big = [Mailbox("INBOX", "inbox", opts.messages)] + [
            Mailbox(name, f"folder{k}", folder_count(k, opts.messages), use)
            for k, (name, use) in enumerate(FOLDERS)
        ]
        self.client_box = Mailbox("INBOX", "client", opts.user_messages)
        self.idle_box = Mailbox("INBOX", "idle", opts.idle_messages)

    @staticmethod
    def client(i: int) -> str:
        return f"user{i}@{DOMAIN}"

    @staticmethod
    def idler(i: int) -> str:
        return f"idle{i}@{DOMAIN}"

    def users(self) -> list[str]:
        return [
            self.big_user,
            *(self.client(i) for i in range(self.opts.clients)),
            *(self.idler(i) for i in range(self.opts.idle)),
        ]

    @functools.cached_property
    def password_hashes(self) -> dict[str, str]:
        """User -> argon2id hash: poczta's standard one (t=3, m=64 MiB), but a light one
        (t=1, m=1 MiB) for the idle users, so that thousands of logins take seconds
        rather than minutes on both servers (poczta replaces it at the first login)."""
        full, light = argon2id(PASSWORD), argon2id(PASSWORD, time_cost=1, memory_kib=1024)
        hashes = dict.fromkeys(self.users(), full)
        hashes.update(dict.fromkeys((self.idler(i) for i in range(self.opts.idle)), light))
        return hashes

    def holdings(self) -> Iterator[tuple[Mailbox, list[str]]]:
        """Each mailbox content once, with the users holding a copy of it."""
        for box in self.big:
            yield box, [self.big_user]
        yield self.client_box, [self.client(i) for i in range(self.opts.clients)]
        yield self.idle_box, [self.idler(i) for i in range(self.opts.idle)]

    def messages(self, box: Mailbox) -> list[CorpusMessage]:
        return self.corpus.mailbox(box.stream, box.count)

    @property
    def inbox(self) -> list[CorpusMessage]:
        return self.messages(self.big[0])


class Target:
    """One server under test in `workdir`, IMAP on `port` (implicit TLS or plain)."""

    name = "?"
    password = PASSWORD
    db_backed = False  # whether its store is the benchmark's PostgreSQL

    def __init__(self, opts: argparse.Namespace, workdir: Path, port: int, plan: Plan) -> None:
        self.opts = opts
        self.workdir = workdir
        self.port = port
        self.plan = plan
        self.tls = opts.security == "tls"
        self.cert, self.key = make_certificate(workdir.parent)
        self.server = ServerProcess(workdir / "server.log")

    def probe(self) -> None:
        """Raise NotAvailable early, before filling, when the target cannot serve IMAP."""

    def fill(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.server.start(self.command())
        wait_port(HOST, self.port, timeout=60, alive=self.server.alive)

    def roots(self) -> list[int]:
        return self.server.roots()

    def stop(self) -> None:
        self.server.stop()


class PocztaTarget(Target):
    """``poczta serve`` with only an imaps (or imap) listener, one process (the default)."""

    name = "poczta"
    fill_concurrency = 64  # deliveries in flight while filling

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.config = self.workdir / "poczta.toml"
        poczta_instance.write_config(
            self.config,
            self.workdir / "data",
            self.cert,
            self.key,
            {"imaps" if self.tls else "imap": [f"{HOST}:{self.port}"]},
            tls=self.tls,
            max_connections=self.opts.idle + self.opts.clients + 100,
            limits={"max_commands": 1_000_000},  # the big session sends thousands
            store=self.store_table(),
        )

    def store_table(self) -> str:
        return ""

    def command(self) -> list[str]:
        return poczta_instance.serve_command(self.opts.poczta_bin, self.config)

    def start(self) -> None:
        self.server.start(self.command())
        service = "imaps" if self.tls else "imap"
        deadline = time.monotonic() + 60
        while True:
            reason = poczta_instance.not_served(self.server.log_text(), "imap")
            if reason is not None:
                raise NotAvailable(f"poczta does not serve {service}: {reason}")
            if not self.server.alive():
                raise NotAvailable(f"poczta serve exited: {self.server.log_tail()}")
            try:
                wait_port(HOST, self.port, timeout=0.5, alive=self.server.alive)
                return
            except BenchError:
                if time.monotonic() > deadline:
                    raise NotAvailable(f"nothing answers on {service} {HOST}:{self.port}") from None

    def probe(self) -> None:
        try:
            self.start()
        finally:
            self.stop()

    def fill(self) -> None:
        asyncio.run(self._fill_store())

    async def _fill_store(self) -> None:
        from poczta.message import parse_message
        from poczta.store.base import AlreadyExists, DeliveryTarget

        store = await poczta_instance.open_store(self.config)
        scram = poczta_instance.user_secret(PASSWORD)[1]
        hashes = self.plan.password_hashes
        gate = asyncio.Semaphore(self.fill_concurrency)

        async def add_user(address: str) -> Any:
            async with gate:
                return await store.add_user(address, hashes[address], scram)

        users = self.plan.users()
        ids = dict(zip(users, await asyncio.gather(*map(add_user, users)), strict=True))
        for box in self.plan.big[1:]:
            with contextlib.suppress(AlreadyExists):  # the special-use ones every user has
                await store.create_mailbox(ids[self.plan.big_user], box.name, box.special_use)

        async def deliver(message: CorpusMessage, name: str, holders: list[str]) -> None:
            targets = [DeliveryTarget(ids[u], mailbox=name, flags=message.flags) for u in holders]
            async with gate:
                parsed = parse_message(message.data)
                await store.deliver(message.data, parsed, message.internal_date, targets)

        for box, holders in self.plan.holdings():
            if holders:
                await asyncio.gather(
                    *(deliver(m, box.name, holders) for m in self.plan.messages(box))
                )
        await store.close()


class DovecotTarget(Target):
    """A private Dovecot, imap only, Maildirs, its default login mode (one imap-login
    process per connection, "high-security"), process and client limits raised for the
    idle connections."""

    name = "dovecot"

    def fill(self) -> None:
        install_dovecot("dovecot-imapd")
        self.dovecot = DovecotInstance(self.workdir, self.cert, self.key, self.tls)
        self.server = self.dovecot.server
        self.dovecot.write_config(
            "imap",
            [
                Listener("imap-login", "imap", 0 if self.tls else self.port, ssl=False),
                Listener("imap-login", "imaps", self.port if self.tls else 0, ssl=True),
            ],
            extra=self.extra_config(),
            header="Private benchmark instance, written by poczta's bench/imap.",
        )
        hashes = self.plan.password_hashes
        self.dovecot.write_users({user: password_hash(phc) for user, phc in hashes.items()})
        writer = MaildirWriter(self.dovecot.home)
        for box, holders in self.plan.holdings():
            messages = self.plan.messages(box)
            names = [writer.pool_file(m.data, m.internal_date) for m in messages]
            for user in holders:
                maildir = writer.maildir(user, box.name)
                for name, message in zip(names, messages, strict=True):
                    writer.link(maildir, name, message.flags)
        writer.finish()

    def extra_config(self) -> str:
        connections = self.opts.idle + self.opts.clients + 50
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = {use}\n  }}\n" for name, use in SPECIAL
        )
        return f"""namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
default_process_limit = {connections}
default_client_limit = {2 * connections + 100}
service imap-login {{
  process_limit = {connections}
}}
service imap {{
  process_limit = {connections}
}}
"""

    def command(self) -> list[str]:
        return self.dovecot.command()


class PocztaPgTarget(PocztaTarget):
    """The same on the benchmark's PostgreSQL, in a new database."""

    name = "poczta-pg"
    db_backed = True
    # A message for the 50 clients is one transaction locking their 50 INBOXes; 64 of
    # those at once queue on the same rows and wait for the pool past its timeout.
    fill_concurrency = 8

    def store_table(self) -> str:
        return str(self.opts.postgres.store_config())

    def fill(self) -> None:
        """The mail, then what autovacuum does within its first minute after a bulk
        load (VACUUM ANALYZE: the visibility map that lets a read be answered from an
        index, the planner's statistics), so that the figures are those of a server
        that has been running, as Dovecot's are once its indexes are built."""
        super().fill()
        asyncio.run(self._settle())

    async def _settle(self) -> None:
        from poczta.config import load_config
        from poczta.store.postgres.connect import connect

        config = load_config(self.config)
        conn = await connect(config.store, config.data_dir)
        try:
            await conn.execute("VACUUM (ANALYZE)")
        finally:
            await conn.close()


TARGETS: dict[str, type[Target]] = {
    "poczta": PocztaTarget,
    "poczta-pg": PocztaPgTarget,
    "dovecot": DovecotTarget,
}
