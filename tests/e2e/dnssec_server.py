"""A validating DNS resolver for tests: unbound on loopback, serving zones signed with ldns.

`unbound_server` writes each `TestZone` as a zone file, signs it with `ldns-signzone`
(keys from `ldns-keygen`, NSEC, ECDSA P-256) unless it is to stay unsigned, and starts
unbound with the zones as `auth-zone`s used "for upstream": unbound treats their data
as answers from an authoritative server and validates them against the trust anchors
it is given (each signed zone's DS), so the AD bit, SERVFAIL for bogus data and the
extended errors (RFC 8914) are unbound's own. One process, no authoritative server
beside it: the fixture starts in a fraction of a second.

A zone can be spoilt after signing (`tamper`: text replaced in the signed file, as an
attacker on the path would change a record) or signed with signatures that have run
out (`expired`). Tests skip when unbound or the ldns tools are not installed (Debian:
unbound, ldnsutils, which `make test` installs).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.e2e.harness import free_port

__all__ = ["UNBOUND", "TestZone", "unbound_server"]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return f"{folder}/{name}"
    return None


UNBOUND = _binary("unbound")
LDNS_KEYGEN = _binary("ldns-keygen")
LDNS_SIGNZONE = _binary("ldns-signzone")
START_TIMEOUT = 10.0


@dataclass
class TestZone:
    """One zone: `records` are zone-file lines relative to the origin ("mx IN A 1.2.3.4");
    the SOA and NS records are added."""

    __test__ = False  # not a pytest test class

    name: str
    records: Sequence[str]
    signed: bool = True
    tamper: Mapping[str, str] = field(default_factory=dict)  # old text → new, after signing
    expired: bool = False  # signatures valid in 2020 only

    def text(self) -> str:
        head = [
            f"$ORIGIN {self.name}.",
            "$TTL 300",
            f"@ IN SOA ns.{self.name}. hostmaster.{self.name}. 1 3600 600 86400 300",
            f"@ IN NS ns.{self.name}.",
            "ns IN A 127.0.0.1",
        ]
        return "\n".join([*head, *self.records]) + "\n"


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def _sign(zone: TestZone, folder: Path) -> tuple[Path, Path]:
    """Sign the zone in `folder`: (the signed zone file, the DS trust anchor file)."""
    assert LDNS_KEYGEN and LDNS_SIGNZONE
    source = folder / f"{zone.name}.zone"
    source.write_text(zone.text())
    ksk = _run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", "-k", zone.name], folder)
    zsk = _run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", zone.name], folder)
    dates = ["-i", "20200101000000", "-e", "20200201000000"] if zone.expired else []
    _run([LDNS_SIGNZONE, *dates, "-f", f"{source}.signed", str(source), ksk, zsk], folder)
    signed = Path(f"{source}.signed")
    text = signed.read_text()
    for old, new in zone.tamper.items():
        if old not in text:
            raise AssertionError(f"{old!r} is not in the signed zone {zone.name}")
        text = text.replace(old, new)
    signed.write_text(text)
    return signed, folder / f"{ksk}.ds"


def _config(folder: Path, port: int, zones: list[tuple[TestZone, Path, Path | None]]) -> str:
    anchors = [f'  trust-anchor-file: "{ds}"' for _, _, ds in zones if ds is not None]
    auth = [
        f'auth-zone:\n  name: "{z.name}"\n  zonefile: "{path}"\n'
        "  for-upstream: yes\n  for-downstream: no\n  fallback-enabled: no\n"
        for z, path, _ in zones
    ]
    server = [
        "server:",
        f"  interface: 127.0.0.1@{port}",
        f"  port: {port}",
        "  do-daemonize: no",
        "  use-syslog: no",
        f'  logfile: "{folder / "unbound.log"}"',
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{folder}"',
        f'  pidfile: "{folder / "unbound.pid"}"',
        "  num-threads: 1",
        "  do-ip6: no",
        "  verbosity: 1",
        "  val-log-level: 2",
        "  ede: yes",
        '  module-config: "validator iterator"',
        '  local-zone: "test." nodefault',
        "  access-control: 127.0.0.0/8 allow",
        *anchors,
    ]
    return "\n".join(server) + "\n" + "\n".join(auth)


def _answers(port: int, name: str) -> bool:
    query = dns.message.make_query(name, "SOA")
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (OSError, dns.exception.Timeout):
        return False
    return response.rcode() in (dns.rcode.NOERROR, dns.rcode.SERVFAIL)  # it is up


@contextlib.contextmanager
def unbound_server(workdir: Path, zones: Sequence[TestZone]) -> Iterator[int]:
    """unbound validating `zones`, listening on 127.0.0.1; yields its port."""
    if UNBOUND is None or LDNS_KEYGEN is None or LDNS_SIGNZONE is None:
        pytest.skip(
            "unbound or ldnsutils is not installed (Debian: apt-get install unbound ldnsutils)"
        )
    folder = workdir / "unbound"
    folder.mkdir()
    served: list[tuple[TestZone, Path, Path | None]] = []
    for zone in zones:
        if zone.signed:
            served.append((zone, *_sign(zone, folder)))
        else:
            path = folder / f"{zone.name}.zone"
            path.write_text(zone.text())
            served.append((zone, path, None))
    port = free_port()
    conf = folder / "unbound.conf"
    conf.write_text(_config(folder, port, served))
    proc = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port, zones[0].name):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (
                    (folder / "unbound.log").read_text()
                    if (folder / "unbound.log").exists()
                    else ""
                )
                error = (
                    proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else ""
                )
                pytest.fail(f"unbound did not start: {error}{log}")
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
