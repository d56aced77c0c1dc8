"""Outbound delivery to a real Postfix (Debian package) on 127.0.0.3, found through dnsmasq.

A private Postfix instance (its own config, queue and Maildir under a temporary
directory, `postfix -c DIR start`) listens on 127.0.0.3 with STARTTLS and delivers
everything for pf.test to one Maildir. poczta delivers to it over STARTTLS; the stored
message's DKIM signatures verify with dkimpy, an independent verifier.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from poczta.net.tls import write_self_signed
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, free_port, make_server

pytestmark = [pytest.mark.e2e, pytest.mark.peer]

POSTFIX = shutil.which("postfix") or (
    "/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None
)
ADDRESS = "127.0.0.3"
NOBODY = 65534
MASTER_CF = """\
{address}:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def _main_cf(root: Path) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
myhostname = mx.pf.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_tls_security_level = may
smtpd_tls_cert_file = {root}/cert.pem
smtpd_tls_key_file = {root}/key.pem
smtpd_tls_loglevel = 1
virtual_mailbox_domains = pf.test
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = static:sink/
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
alias_maps =
alias_database =
"""


def _postfix(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    assert POSTFIX is not None
    # postfix prints its errors only to a terminal (else to syslog): give it one
    return subprocess.run(
        ["script", "-qc", f"{POSTFIX} -c {root}/conf {command}", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def postfix() -> Iterator[tuple[Path, int]]:
    if POSTFIX is None or shutil.which("script") is None:
        pytest.skip("postfix (Debian package) is not installed")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root")
    root = Path(tempfile.mkdtemp(prefix="poczta-postfix-"))
    os.chmod(root, 0o755)  # its delivery agent runs as nobody
    port = free_port()
    for name in ("conf", "queue", "data", "mail/sink/new", "mail/sink/cur", "mail/sink/tmp"):
        (root / name).mkdir(parents=True)
    shutil.chown(root / "data", "postfix")
    for path in (root / "mail", root / "mail/sink", *(root / "mail/sink").iterdir()):
        os.chown(path, NOBODY, NOBODY)
    write_self_signed(root / "cert.pem", root / "key.pem", "mx.pf.test")
    (root / "conf/main.cf").write_text(_main_cf(root))
    (root / "conf/master.cf").write_text(MASTER_CF.format(address=ADDRESS, port=port))
    started = _postfix(root, "start")
    if started.returncode != 0:
        pytest.skip(f"postfix did not start: {started.stdout}{started.stderr}")
    try:
        yield root, port
    finally:
        _postfix(root, "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def sender(
    tmp_path_factory: pytest.TempPathFactory, postfix: tuple[Path, int]
) -> Iterator[PocztaServer]:
    root = tmp_path_factory.mktemp("to-postfix")
    (root / "tx").mkdir()
    server = make_server(root / "tx", services=("smtp", "submissions"))
    server.cli("dkim", "generate", "example.test", "-s", "ed", "-a", "ed25519")
    hosts = {"mx.pf.test": ADDRESS}
    with dnsmasq_server(root, hosts=hosts, mx=[("pf.test", "mx.pf.test", 10)]) as dns:
        server.extra_config = (
            f'\n[dns]\nnameservers = ["127.0.0.1"]\nport = {dns}\n'
            f"\n[outbound]\nport = {postfix[1]}\nloopback_is_local = false\nretry_first = 0.5\n"
        )
        server.write_config()
        server.start()
        try:
            yield server
        finally:
            server.stop()


def test_delivered_to_postfix_over_starttls_and_dkim_verifies(
    postfix: tuple[Path, int], sender: PocztaServer
) -> None:
    root, _ = postfix
    message = (
        b"From: Alice <alice@example.test>\r\nTo: <bob@pf.test>\r\n"
        b"Subject: to postfix\r\n\r\nHi.\r\n"
    )
    with smtplib.SMTP_SSL(
        "127.0.0.1", sender.ports["submissions"], timeout=10, context=client_tls()
    ) as client:
        client.login("alice@example.test", PASSWORDS["alice@example.test"])
        client.sendmail("alice@example.test", ["bob@pf.test"], message)
    deadline = time.monotonic() + 30
    while not list((root / "mail/sink/new").iterdir()):
        assert time.monotonic() < deadline, sender.log_text()[-3000:]
        time.sleep(0.2)
    [stored_file] = list((root / "mail/sink/new").iterdir())
    stored = stored_file.read_bytes()
    assert b"Subject: to postfix" in stored and b"Return-Path: <alice@example.test>" in stored
    maillog = (root / "maillog").read_text()
    assert "Anonymous TLS connection established from localhost[127.0.0.1]" in maillog
    records = {
        f"{k['selector']}._domainkey.{k['domain']}.": k["record"].encode()
        for k in json.loads(sender.cli("dkim", "list", "--json").stdout)
    }
    # Postfix prepends Return-Path, Delivered-To and Received: dkimpy verifies the rest
    assert dkim.verify(stored, dnsfunc=lambda name, timeout=5: records.get(name.decode(), b""))
    assert "opportunistic TLSv1" in sender.log_text()
