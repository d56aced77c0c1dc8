"""Reference SMTP server for the benchmarks: stock aiosmtpd plus a durable Maildir handler.

Each accepted message is written to ``MAILDIR/tmp``, fsync'ed, renamed into
``MAILDIR/new`` and the ``new`` directory is fsync'ed, all before "250 OK" is
returned.  The blocking file work runs in the default thread pool so that
concurrent sessions can overlap their fsyncs, as a reasonable asyncio server
would do.  It runs the standard asyncio event loop (no uvloop), like aiosmtpd
out of the box.

    python bench/aiosmtpd_target.py --listen 127.0.0.1:2525 --maildir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class DurableMaildirHandler:
    def __init__(self, maildir: Path, hostname: str) -> None:
        self.tmp = maildir / "tmp"
        self.new = maildir / "new"
        for d in (maildir, self.tmp, self.new, maildir / "cur"):
            d.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self._suffix = f"{os.getpid()}.{hostname}"

    def _store(self, data: bytes) -> None:
        name = f"{time.time_ns()}.M{next(self._seq)}P{self._suffix}"
        tmp_path = self.tmp / name
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, self.new / name)
        dfd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        header = f"Return-Path: <{envelope.mail_from}>\r\n".encode()
        await asyncio.get_running_loop().run_in_executor(None, self._store, header + content)
        return "250 OK"


async def serve(host: str, port: int, maildir: Path, hostname: str) -> None:
    loop = asyncio.get_running_loop()
    handler = DurableMaildirHandler(maildir, hostname)

    def factory() -> Any:
        # hostname given explicitly: aiosmtpd would otherwise resolve the FQDN per session.
        return SMTP(handler, hostname=hostname, loop=loop, command_call_limit=1_000_000_000)

    server = await loop.create_server(factory, host, port, family=socket.AF_INET, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--maildir", required=True, type=Path)
    p.add_argument("--hostname", default="bench.test")
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    asyncio.run(serve(host, int(port), a.maildir, a.hostname))


if __name__ == "__main__":
    main()
