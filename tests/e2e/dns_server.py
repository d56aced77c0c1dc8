"""A real DNS server for end-to-end tests: dnsmasq on loopback serving the test zones.

`dnsmasq_server` starts one answering for `*.test` only (everything else is refused),
with TXT, A and MX records given by the test; it yields the port once dnsmasq answers
there. Tests skip when dnsmasq is not installed (Debian: dnsmasq-base, which `make test` installs).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.e2e.harness import free_port

__all__ = ["DNSMASQ", "dnsmasq_server"]

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)


def _txt(name: str, text: str) -> str:
    # On the command line dnsmasq keeps quotes as data and a comma starts the next
    # character-string of the record: so long values go as strings of 255 octets.
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return f"--txt-record={name},{','.join(chunks)}"


def _answers(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Whether dnsmasq on `port` answers a query (any answer) before it exits or
    `timeout` passes."""
    query = dns.message.make_query("ready.test", "A")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.1)
            return True
        except (OSError, dns.exception.Timeout):
            time.sleep(0.02)
    return False


@contextlib.contextmanager
def dnsmasq_server(
    workdir: Path,
    *,
    txt: Mapping[str, str] = {},
    hosts: Mapping[str, str] = {},
    mx: Sequence[tuple[str, str, int]] = (),
    extra: Sequence[str] = (),
) -> Iterator[int]:
    """dnsmasq with TXT records, host (A) records and MX records (domain, host, preference)."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed (Debian: apt-get install dnsmasq-base)")
    port = free_port()
    args = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        f"--port={port}",
        "--local=/test/",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        *(_txt(name, text) for name, text in txt.items()),
        *(f"--host-record={name},{address}" for name, address in hosts.items()),
        *(f"--mx-host={domain},{host},{pref}" for domain, host, pref in mx),
        *extra,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not _answers(port, proc):
        proc.kill()
        proc.wait(10)
        pytest.skip(f"dnsmasq did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
