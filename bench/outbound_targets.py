"""The two senders of the outbound benchmark: poczta's queue runner and a relaying Postfix.

Each is filled with the same messages while its delivery is held, started fresh, and
then released at one moment:

* poczta: the messages go into its queue through the store API (`blobs.put`,
  `enqueue`) before the server starts, and every entry is then claimed for a runner
  named ``bench-hold:`` that is not of this node, for a day; the server's runners (one
  per worker) leave them alone, as they leave the entries a second node's runner works
  on. The release is one commit dropping those claims; the runners see them due at
  their next look at the queue (within their poll interval, one second).
* Postfix: a private instance (`smtp_accept.PostfixTarget`, with a relay
  configuration) takes the messages over SMTP with ``smtpd_end_of_data_restrictions =
  check_client_access static:HOLD``, so each lands in the hold queue after cleanup(8)
  wrote it; the instance is then restarted so that no injection process remains, and
  released with ``postsuper -H ALL`` (hold to deferred) and ``postqueue -f``.

Postfix finds the sinks through a transport map (``dN.test smtp:[127.0.1.N]:PORT``,
one next hop per domain, so its per-destination concurrency applies per domain as
poczta's does); poczta through dnsmasq's MX and A records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import smtplib
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import poczta_instance
from _common import BenchError, ServerProcess, free_port, make_certificate, wait_port
from outbound_sinks import Destination
from smtp_targets import PostfixTarget

__all__ = ["HOLD_OWNER", "SENDER", "PocztaSender", "PostfixSender", "make_message", "recipient"]

HOST = "127.0.0.1"
SENDER = "sender@example.test"
HOLD_OWNER = "bench-hold:"  # a runner of no node poczta knows


def recipient(n: int, targets: Sequence[Destination]) -> str:
    return f"user{n}@{targets[n % len(targets)].domain}"


def make_message(n: int, to: str, size: int) -> bytes:
    """Message `n` to `to`: plain text, CRLF, `size` octets in all."""
    head = (
        f"From: Bench Sender <{SENDER}>\r\nTo: <{to}>\r\n"
        f"Subject: outbound benchmark message {n}\r\n"
        f"Message-ID: <{n}.outbound@example.test>\r\n"
        "Date: Mon, 02 Jan 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = (f"{n:08d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2)[:76] + "\r\n"
    room = max(size - len(head), len(line))
    body = (line * (room // len(line) + 1))[: room - 2].rstrip("\r\n") + "\r\n"
    return (head + body).encode()


class Sender(Protocol):
    """What both senders offer the benchmark."""

    name: str

    def prepare(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Queue `messages` ((recipient, data) pairs) held, and start the server."""

    def release(self) -> None: ...
    def queued(self) -> int:
        """Messages still in the queue."""

    def roots(self) -> list[int]: ...
    def settings(self) -> dict[str, str]: ...
    def stop(self) -> None: ...
    def log_tail(self) -> str: ...


class PocztaSender:
    name = "poczta"

    def __init__(self, opts: argparse.Namespace, workdir: Path, dns_port: int, sink_port: int):
        self.opts = opts
        self.workdir = workdir
        self.config = workdir / "poczta.toml"
        self.server = ServerProcess(workdir / "server.log")
        self.port = free_port(HOST)
        cert, key = make_certificate(workdir.parent)
        poczta_instance.write_config(
            self.config, workdir / "data", cert, key, {"smtp": [f"{HOST}:{self.port}"]}, tls=False
        )
        # a top-level key: before the tables
        self.config.write_text(f"workers = {opts.poczta_workers}\n" + self.config.read_text())
        with open(self.config, "a") as config:
            config.write(
                f'\n[dns]\nnameservers = ["{HOST}"]\nport = {dns_port}\n'
                f"\n[outbound]\nport = {sink_port}\nloopback_is_local = false\n"
                f"max_connections = {opts.connections}\nmax_per_domain = {opts.concurrency}\n"
                "\n[checks]\nenabled = false\n"
            )

    def prepare(self, messages: Sequence[tuple[str, bytes]]) -> None:
        asyncio.run(self._fill(messages))
        self.server.start(poczta_instance.serve_command(self.opts.poczta_bin, self.config))
        wait_port(HOST, self.port, timeout=60, alive=self.server.alive)
        deadline = time.monotonic() + 30
        while self.server.log_text().count("queue.runner_started") < self.workers():
            if time.monotonic() > deadline or not self.server.alive():
                raise BenchError(f"poczta's queue runner did not start: {self.server.log_tail()}")
            time.sleep(0.05)

    def workers(self) -> int:
        """The worker processes the server runs, each with a queue runner."""
        return self.opts.poczta_workers or len(os.sched_getaffinity(0))

    async def _fill(self, messages: Sequence[tuple[str, bytes]]) -> None:
        store = await poczta_instance.open_store(self.config)
        try:
            gate = asyncio.Semaphore(64)

            async def one(to: str, data: bytes) -> None:
                async with gate:
                    digest = await store.blobs.put(data)
                    await store.enqueue(SENDER, [to], digest, len(data))

            await asyncio.gather(*(one(to, data) for to, data in messages))
            now = datetime.now(UTC)
            held = await store.claim_queue(
                HOLD_OWNER + "0", now, now + timedelta(days=1), len(messages)
            )
            if len(held) != len(messages):
                raise BenchError(f"held {len(held)} of {len(messages)} queued messages")
        finally:
            await store.close()

    def release(self) -> None:
        async def run() -> None:
            store = await poczta_instance.open_store(self.config)
            try:
                await store.release_claims(HOLD_OWNER, "")
            finally:
                await store.close()

        asyncio.run(run())

    def queued(self) -> int:
        async def run() -> int:
            store = await poczta_instance.open_store(self.config)
            try:
                return len(await store.list_queue())
            finally:
                await store.close()

        return asyncio.run(run())

    def roots(self) -> list[int]:
        return self.server.roots()

    def settings(self) -> dict[str, str]:
        return {
            "max_connections": str(self.opts.connections),
            "max_per_domain": str(self.opts.concurrency),
            "connection_cache_time": "2 s (default)",
            "workers": f"{self.workers()} (a queue runner in each)",
        }

    def stop(self) -> None:
        self.server.stop()

    def log_tail(self) -> str:
        return self.server.log_tail(6)


class RelayPostfix(PostfixTarget):
    """`smtp_accept`'s private instance, relaying to the sinks instead of storing."""

    def __init__(self, opts: argparse.Namespace, workdir: Path, targets: Sequence[Destination],
                 sink_port: int) -> None:  # fmt: skip
        # smtp_accept sizes smtpd's process limit from its concurrency option
        super().__init__(argparse.Namespace(concurrency=[opts.inject_sessions]), workdir,
                         free_port(HOST))  # fmt: skip
        self.relay_opts = opts
        self.targets = targets
        self.sink_port = sink_port

    def main_cf(self) -> str:
        o = self.relay_opts
        return (
            self.private_instance_cf("bench/outbound", "bench.test", "example.test")
            + f"""\
smtpd_recipient_restrictions = permit_mynetworks, reject
# every message accepted goes to the hold queue until the benchmark releases it
smtpd_end_of_data_restrictions = check_client_access static:HOLD
transport_maps = texthash:{self.transport}
# the delivery budget, the same as poczta's (Postfix's defaults are 100 and 20)
default_process_limit = {o.connections}
default_destination_concurrency_limit = {o.concurrency}
"""
        )

    def start(self) -> None:
        self._paths()
        self.transport.write_text(
            "".join(f"{t.domain} smtp:[{t.address}]:{self.sink_port}\n" for t in self.targets)
        )
        super().start()

    @property
    def transport(self) -> Path:
        return self.workdir / "transport"

    def restart(self) -> None:
        for action in ("stop", "start"):
            r = self.postfix(action, check=False)
            if r.returncode != 0:
                raise BenchError(f"postfix {action}: {(r.stdout + r.stderr).strip()}")
            if action == "stop":
                deadline = time.monotonic() + 20
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
        deadline = time.monotonic() + 10
        self.master_pid = None
        while self.master_pid is None and time.monotonic() < deadline:
            time.sleep(0.05)
            self.master_pid = self._read_master_pid()


class PostfixSender:
    name = "postfix"

    def __init__(self, opts: argparse.Namespace, workdir: Path, targets: Sequence[Destination],
                 sink_port: int) -> None:  # fmt: skip
        self.opts = opts
        self.instance = RelayPostfix(opts, workdir, targets, sink_port)

    def prepare(self, messages: Sequence[tuple[str, bytes]]) -> None:
        pf = self.instance
        pf.start()
        wait_port(HOST, pf.port, timeout=30, alive=pf.alive)
        self._inject(messages)
        deadline = time.monotonic() + 120
        while (q := pf.queued())["hold"] < len(messages) or q["incoming"] or q["maildrop"]:
            if q["active"] or q["deferred"] or time.monotonic() > deadline:
                raise BenchError(f"postfix did not hold every message: {q}\n{pf.log_tail(5)}")
            time.sleep(0.1)
        pf.restart()

    def _inject(self, messages: Sequence[tuple[str, bytes]]) -> None:
        sessions = self.opts.inject_sessions
        errors: list[str] = []

        def send(part: Sequence[tuple[str, bytes]]) -> None:
            try:
                with smtplib.SMTP(HOST, self.instance.port, timeout=60) as client:
                    for to, data in part:
                        client.sendmail(SENDER, [to], data)
            except (OSError, smtplib.SMTPException) as exc:
                errors.append(repr(exc))

        threads = [
            threading.Thread(target=send, args=(messages[i::sessions],)) for i in range(sessions)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise BenchError(f"injecting into postfix failed: {errors[0]}")

    def release(self) -> None:
        etc = str(self.instance.etc)
        for command in (["postsuper", "-c", etc, "-H", "ALL"], ["postqueue", "-c", etc, "-f"]):
            r = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            if r.returncode != 0:
                raise BenchError(f"`{' '.join(command)}`: {(r.stdout + r.stderr).strip()}")

    def queued(self) -> int:
        return sum(self.instance.queued().values())

    def roots(self) -> list[int]:
        return self.instance.roots()

    def settings(self) -> dict[str, str]:
        names = [
            "default_process_limit",
            "default_destination_concurrency_limit",
            "initial_destination_concurrency",
            "smtp_connection_cache_on_demand",
            "smtp_connection_cache_time_limit",
            "mail_version",
        ]
        out = subprocess.run(
            ["postconf", "-c", str(self.instance.etc), *names],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout  # fmt: skip
        found: dict[str, Any] = {}
        for line in out.splitlines():
            key, _, value = line.partition(" = ")
            found[key.strip()] = value.strip()
        return found

    def stop(self) -> None:
        self.instance.stop()

    def log_tail(self) -> str:
        return self.instance.log_tail(6)
