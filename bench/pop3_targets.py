"""Servers for the POP3 benchmark: poczta and a private Dovecot, filled with the same mail."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import poczta_instance
from _common import ServerProcess, make_certificate, wait_port
from dovecot_instance import (
    DovecotInstance,
    Listener,
    MaildirWriter,
    argon2id,
    install_dovecot,
    password_hash,
)
from mailgen import DOMAIN, make_message

__all__ = ["HOST", "TARGETS", "Target", "make_message"]

HOST = "127.0.0.1"
PASSWORD = "bench-password-1"


class Target:
    """One server under test, in `workdir`, listening on `port` (implicit TLS or plain)."""

    name = "?"
    big_user = f"big@{DOMAIN}"
    password = PASSWORD
    db_backed = False  # whether its store is the benchmark's PostgreSQL

    def __init__(self, opts: argparse.Namespace, workdir: Path, port: int) -> None:
        self.opts = opts
        self.workdir = workdir
        self.port = port
        self.tls = opts.security == "tls"
        self.cert, self.key = make_certificate(workdir.parent)
        self.server = ServerProcess(workdir / "server.log")

    @staticmethod
    def user(i: int) -> str:
        return f"user{i}@{DOMAIN}"

    def fill(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.server.start(self.command())
        wait_port(HOST, self.port, alive=self.server.alive)

    def roots(self) -> list[int]:
        return self.server.roots()

    def stop(self) -> None:
        self.server.stop()


class PocztaTarget(Target):
    name = "poczta"

    def fill(self) -> None:
        self.config = self.workdir / "poczta.toml"
        listener = [f"{HOST}:{self.port}"]
        poczta_instance.write_config(
            self.config,
            self.workdir / "data",
            self.cert,
            self.key,
            {"pop3s" if self.tls else "pop3": listener},
            tls=self.tls,
            store=self.store_table(),
        )
        asyncio.run(self._fill_store())

    async def _fill_store(self) -> None:
        from poczta.message import parse_message
        from poczta.store.base import DeliveryTarget

        store = await poczta_instance.open_store(self.config)
        secret = poczta_instance.user_secret(PASSWORD)
        big = DeliveryTarget(await store.add_user(self.big_user, *secret))
        small = [
            DeliveryTarget(await store.add_user(self.user(i), *secret))
            for i in range(self.opts.clients)
        ]
        gate = asyncio.Semaphore(64)
        now = datetime.now(UTC)

        async def deliver(n: int) -> None:
            data = make_message(n, self.opts.size)
            targets = [big] if n < self.opts.messages else []
            targets += small if n < self.opts.user_messages else []
            async with gate:
                await store.deliver(data, parse_message(data), now, targets)

        count = max(self.opts.messages, self.opts.user_messages)
        await asyncio.gather(*(deliver(n) for n in range(count)))
        await store.close()

    def command(self) -> list[str]:
        return poczta_instance.serve_command(self.opts.poczta_bin, self.config)

    def store_table(self) -> str:
        return ""


class PocztaPgTarget(PocztaTarget):
    """The same on the benchmark's PostgreSQL, in a new database."""

    name = "poczta-pg"
    db_backed = True

    def store_table(self) -> str:
        return str(self.opts.postgres.store_config())


class DovecotTarget(Target):
    """A private Dovecot: own config, base_dir and Maildirs, pop3 only, on loopback."""

    name = "dovecot"

    def fill(self) -> None:
        install_dovecot("dovecot-pop3d")
        self.dovecot = DovecotInstance(self.workdir, self.cert, self.key, self.tls)
        self.server = self.dovecot.server
        self.dovecot.write_config(
            "pop3",
            [
                Listener("pop3-login", "pop3", 0 if self.tls else self.port, ssl=False),
                Listener("pop3-login", "pop3s", self.port if self.tls else 0, ssl=True),
            ],
            header="Private benchmark instance, written by poczta's bench/pop3.",
        )
        users = [self.big_user, *(self.user(i) for i in range(self.opts.clients))]
        secret = password_hash(argon2id(PASSWORD))
        self.dovecot.write_users(dict.fromkeys(users, secret))
        writer = MaildirWriter(self.dovecot.home)
        names = [
            writer.pool_file(make_message(n, self.opts.size))
            for n in range(max(self.opts.messages, self.opts.user_messages))
        ]
        for user in users:
            count = self.opts.messages if user == self.big_user else self.opts.user_messages
            maildir = writer.maildir(user)
            for name in names[:count]:
                writer.link(maildir, name)
        writer.finish()

    def command(self) -> list[str]:
        return self.dovecot.command()


TARGETS: dict[str, type[Target]] = {
    "poczta": PocztaTarget,
    "poczta-pg": PocztaPgTarget,
    "dovecot": DovecotTarget,
}
