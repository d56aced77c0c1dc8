"""DKIM against public test vectors (dkimpy, Stalwart mail-auth) and the OpenDKIM peer."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poczta.dns import ZoneResolver
from poczta.mailauth.dkim import DkimStatus, verify_dkim
from poczta.mailauth.dkim_sign import generate_dkim_key, sign_dkim

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "dkim"
DKIMPY = VECTORS / "dkimpy"
STALWART = VECTORS / "stalwart-mail-auth"
RFC8463_RECORD = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

needs_vectors = pytest.mark.skipif(
    not VECTORS.is_dir(), reason="DKIM test vectors (shared/conformance/dkim) are absent"
)


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def verify(message: bytes, zone: ZoneResolver, now: float | None = None) -> list[str]:
    return [r.status.value for r in asyncio.run(verify_dkim(message, zone, now=now))]


def stalwart_case(number: int) -> tuple[ZoneResolver, bytes]:
    """A Stalwart vector: DNS lines `<name> <TXT value>`, a blank line, the message."""
    data = (STALWART / f"dkim-{number:03d}.txt").read_bytes()
    dns_part, _, message = data.partition(b"\n\n")
    zone = ZoneResolver()
    for line in dns_part.splitlines():
        name, _, value = line.partition(b" ")
        zone.add(name.decode(), "TXT", value)
    return zone, crlf(message)


@needs_vectors
def test_rfc8463_signed_message() -> None:
    zone = ZoneResolver()
    zone.add("brisbane._domainkey.football.example.com", "TXT", RFC8463_RECORD)
    zone.add("test._domainkey.football.example.com", "TXT", (DKIMPY / "test.txt").read_bytes())
    message = crlf((DKIMPY / "rfc6376.signed.msg").read_bytes())
    assert verify(message, zone) == ["pass", "pass"]


@needs_vectors
@pytest.mark.parametrize("number", [1, 2, 3, 4, 6])
def test_stalwart_vectors_verify(number: int) -> None:
    zone, message = stalwart_case(number)
    statuses = verify(message, zone)
    assert statuses and set(statuses) == {"pass"}


@needs_vectors
def test_stalwart_expired_signature() -> None:
    zone, message = stalwart_case(5)  # t=1667843664, x=1667930064
    assert verify(message, zone) == ["fail"]
    assert verify(message, zone, now=1667843664 + 3600) == ["pass"]
    result = asyncio.run(verify_dkim(message, zone))[0]
    assert "x=" in result.reason


@needs_vectors
def test_exim_ed25519_signature() -> None:
    zone = ZoneResolver()
    zone.add("sed._domainkey.test.ex", "TXT", (DKIMPY / "eximtest.dns").read_bytes())
    assert verify(crlf((DKIMPY / "ed25519test2.msg").read_bytes()), zone) == ["pass"]


@needs_vectors
def test_sign_rfc6376_message_with_rfc8032_seed() -> None:
    message = crlf((DKIMPY / "rfc6376.msg").read_bytes())
    header = sign_dkim(
        message,
        domain="football.example.com",
        selector="brisbane",
        private_key=(DKIMPY / "rfc8032_7_1.key").read_bytes(),
        algorithm="ed25519-sha256",
    )
    zone = ZoneResolver()
    zone.add("brisbane._domainkey.football.example.com", "TXT", RFC8463_RECORD)
    assert verify(header + message, zone) == ["pass"]


@needs_vectors
@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("test.txt", "pass"),
        ("test2.txt", "pass"),  # no k=: rsa by default
        ("badk.txt", "permerror"),  # k=ed25519-sha256 is no key type
        ("badversion.txt", "permerror"),  # v=DKIM1: ...
        ("test_bad.txt", "permerror"),  # truncated RSA key
    ],
)
def test_dkimpy_key_records(record: str, expected: str) -> None:
    message = crlf((DKIMPY / "test.message").read_bytes())
    header = sign_dkim(
        message,
        domain="example.com",
        selector="test",
        private_key=(DKIMPY / "test.private").read_bytes(),
    )
    zone = ZoneResolver()
    zone.add("test._domainkey.example.com", "TXT", (DKIMPY / record).read_bytes().strip())
    assert verify(header + message, zone) == [expected]


# --- OpenDKIM as an independent peer -------------------------------------------------------

STUB_DNS = """
import socket, sys
import dns.message, dns.rcode, dns.rdatatype, dns.rrset
zone = {}
for line in open(sys.argv[1], encoding="ascii"):
    name, _, value = line.rstrip("\\n").partition(" ")
    zone[name.lower().rstrip(".") + "."] = value
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 53))
sock.settimeout(30)
open(sys.argv[2], "w").close()
while True:
    try:
        data, peer = sock.recvfrom(4096)
    except TimeoutError:
        break
    query = dns.message.from_wire(data)
    reply = dns.message.make_response(query)
    question = query.question[0]
    value = zone.get(question.name.to_text().lower())
    if value is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.TXT:
        chunks = " ".join('"%s"' % value[i : i + 250] for i in range(0, len(value), 250))
        reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", chunks))
    sock.sendto(reply.to_wire(), peer)
"""

# In a private network and mount namespace: loopback up, our resolv.conf, a stub DNS
# server answering from zone.txt, then opendkim-testmsg verifies each message given.
NAMESPACE_SCRIPT = """
set -u
ip link set lo up
mount --bind resolv.conf /etc/resolv.conf
"$PYTHON" stub_dns.py zone.txt ready &
stub=$!
n=0
while [ ! -e ready ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
for message in "$@"; do
    opendkim-testmsg < "$message" 2>&1
    echo "$message rc=$?"
done
kill $stub
"""

needs_opendkim = pytest.mark.skipif(
    shutil.which("opendkim-testmsg") is None or shutil.which("unshare") is None,
    reason="opendkim-testmsg (Debian opendkim-tools) or unshare is not installed",
)

MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: interop\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n"
    b"Hello,  world \r\n\r\nsecond paragraph\r\n\r\n\r\n"
)


def opendkim_verify(
    tmp_path: Path, zone: dict[str, str], messages: dict[str, bytes]
) -> dict[str, bool]:
    (tmp_path / "stub_dns.py").write_text(STUB_DNS)
    (tmp_path / "zone.txt").write_text("".join(f"{k} {v}\n" for k, v in zone.items()))
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:2\n")
    for name, data in messages.items():
        (tmp_path / name).write_bytes(data)
    command = ["unshare", "--mount", "--net", "sh", "-c", NAMESPACE_SCRIPT, "sh", *messages]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHON": sys.executable}
    try:
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("opendkim-testmsg in its namespace did not finish")
    if "rc=" not in done.stdout:
        pytest.skip(f"cannot run opendkim-testmsg in a private namespace: {done.stderr[:200]}")
    return {m: f"{m} rc=0" in done.stdout for m in messages}


@pytest.mark.peer
@needs_opendkim
def test_opendkim_verifies_poczta_signatures(tmp_path: Path) -> None:
    rsa_pem, rsa_record = generate_dkim_key("rsa-sha256")
    ed_pem, ed_record = generate_dkim_key("ed25519-sha256")
    signed = {}
    for selector, pem, algorithm in (("r", rsa_pem, "rsa-sha256"), ("e", ed_pem, "ed25519-sha256")):
        for canon in ("relaxed/relaxed", "simple/simple"):
            header = sign_dkim(
                MESSAGE, domain="example.com", selector=selector, private_key=pem,
                algorithm=algorithm, canonicalization=canon,
            )  # fmt: skip
            signed[f"{selector}-{canon.replace('/', '-')}.eml"] = header + MESSAGE
    tampered = signed["r-relaxed-relaxed.eml"].replace(b"second", b"Second")
    zone = {"r._domainkey.example.com": rsa_record, "e._domainkey.example.com": ed_record}
    outcome = opendkim_verify(tmp_path, zone, {**signed, "tampered.eml": tampered})
    assert outcome == {**dict.fromkeys(signed, True), "tampered.eml": False}


@pytest.mark.peer
@needs_opendkim
def test_poczta_reads_opendkim_signatures(tmp_path: Path) -> None:
    pem, record = generate_dkim_key("rsa-sha256")
    (tmp_path / "key.pem").write_text(pem)
    done = subprocess.run(
        ["opendkim-testmsg", "-C", "-d", "example.com", "-s", "od", "-k", "key.pem"],
        input=MESSAGE, cwd=tmp_path, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    zone = ZoneResolver()
    zone.add("od._domainkey.example.com", "TXT", record)
    results = asyncio.run(verify_dkim(crlf(done.stdout), zone))
    assert len(results) == 1
    result = results[0]
    # opendkim-testmsg can only sign rsa-sha1, which RFC 8301 forbids verifiers to accept.
    if result.algorithm == "rsa-sha1":
        assert result.status == DkimStatus.PERMERROR and "8301" in result.reason
    else:
        assert result.status == DkimStatus.PASS
