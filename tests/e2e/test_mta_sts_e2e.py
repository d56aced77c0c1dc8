"""MTA-STS end to end: `poczta serve` delivering to domains that publish a policy.

dnsmasq publishes each domain's ``_mta-sts`` TXT record, its policy host (an HTTPS
server of this test on 127.0.0.1, with a certificate of a test CA) and its MX, a
second poczta on 127.0.0.2 whose certificate the test CA issued for mx.sts.test only.
The sending poczta trusts the test CA through `mta_sts_ca_file`.

- sts.test (enforce, mx.sts.test): delivered, the TLS outcome "mta-sts verified".
- wrongname.test (enforce, its MX mx.wrongname.test is the same server, whose
  certificate does not name it): deferred.
- unlisted.test (enforce, a policy that lists none of its MX hosts): deferred, 4.7.0.
- testing.test (testing, the MX of wrongname.test's kind): delivered, the failure logged.
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.certificates import TestCa
from tests.e2e.dns_server import dnsmasq_server
from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, make_server
from tests.e2e.test_outbound_e2e import ALICE, WAIT, _dns, _outbound, _tried, arrived, submit
from tests.queue.policy_server import serving_policies

pytestmark = pytest.mark.e2e

RECEIVER = "127.0.0.2"
# domain: (mode, the policy's mx pattern, the domain's MX host)
DOMAINS = {
    "sts.test": ("enforce", "mx.sts.test", "mx.sts.test"),
    "wrongname.test": ("enforce", "mx.wrongname.test", "mx.wrongname.test"),
    "unlisted.test": ("enforce", "mx.other.test", "mx.sts.test"),
    "testing.test": ("testing", "mx.testing.test", "mx.testing.test"),
}


@dataclass
class Servers:
    receiver: PocztaServer
    sender: PocztaServer
    stop_policy_server: contextlib.ExitStack


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("mta-sts")
    (root / "rx").mkdir()
    (root / "tx").mkdir()
    ca = TestCa()
    receiver = make_server(
        root / "rx",
        services=("smtp",),
        host=RECEIVER,
        hostname="mx.sts.test",
        domains=tuple(DOMAINS),
    )
    for bob in ("bob@sts.test", "bob@testing.test"):  # the others' mail never arrives
        receiver.cli("user", "add", bob, "--password-stdin", stdin="bob-secret-77\n")
    tls = root / "rx" / "data" / "tls"
    ca.issue("mx.sts.test").write(tls / "cert.pem", tls / "key.pem")
    sender = make_server(root / "tx", services=("smtp", "submissions"))
    policy_hosts = [f"mta-sts.{d}" for d in DOMAINS]
    with contextlib.ExitStack() as policy_server:
        policies = policy_server.enter_context(
            serving_policies(ca.issue(*policy_hosts).server_context(root))
        )
        for domain, (mode, pattern, _) in DOMAINS.items():
            text = f"version: STSv1\nmode: {mode}\nmx: {pattern}\nmax_age: 86400\n"
            policies.policies[f"mta-sts.{domain}"] = text.encode()
        txt = {f"_mta-sts.{d}": "v=STSv1; id=1" for d in DOMAINS}
        hosts = {host: "127.0.0.1" for host in policy_hosts}
        hosts |= {mx: RECEIVER for _, _, mx in DOMAINS.values()}
        mx = [(domain, host, 10) for domain, (_, _, host) in DOMAINS.items()]
        with dnsmasq_server(root, txt=txt, hosts=hosts, mx=mx) as dns:
            ca_file = ca.write_ca_file(root / "test-ca.pem")
            sender.extra_config = _dns(dns) + _outbound(
                receiver.ports["smtp"],
                f'mta_sts_ca_file = "{ca_file}"\nmta_sts_port = {policies.port}\n',
            )
            for server in (receiver, sender):
                server.write_config()
                server.start()
            try:
                yield Servers(receiver, sender, policy_server)
            finally:
                for server in (receiver, sender):
                    if server.proc is not None:
                        server.stop()


def shown(server: PocztaServer, recipient: str) -> dict[str, dict[str, object]]:
    """`poczta queue show --json` of the entry to `recipient` once it has been tried,
    its recipients by address."""
    entry = _tried(server, recipient)
    out = server.cli("queue", "show", str(entry["id"]), "--json").stdout
    return {r["address"]: r for r in json.loads(out)["recipients"]}


def logged(server: PocztaServer, *texts: str) -> str:
    """The first line of the server's log with each of `texts`, waiting at most WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        lines = server.log_text().splitlines()
        found = [line for line in lines if all(text in line for text in texts)]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {texts!r} in the log:\n{server.log_text()[-3000:]}")


def submit_to(server: PocztaServer, subject: str, *recipients: str) -> None:
    message = f"From: <{ALICE}>\r\nSubject: {subject}\r\n\r\nHello.\r\n".encode()
    port = server.ports["submissions"]
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=client_tls()) as client:
        client.login(ALICE, PASSWORDS[ALICE])
        client.sendmail(ALICE, list(recipients), message)


def test_enforce_delivers_over_verified_tls_and_queue_show_says_so(servers: Servers) -> None:
    # a second recipient that stays deferred keeps the entry for `queue show`
    submit_to(servers.sender, "verified", "bob@sts.test", "carl@unlisted.test")
    arrived(servers.receiver, "bob@sts.test", "verified")
    line = logged(servers.sender, "queue.attempt", "domain=sts.test")
    assert 'tls="mta-sts verified TLSv1.' in line
    recipients = shown(servers.sender, "carl@unlisted.test")
    bob = recipients["bob@sts.test"]
    assert bob["status"] == "delivered" and bob["remote_mta"] == "mx.sts.test"
    assert str(bob["tls"]).startswith("mta-sts verified TLSv1.")


def test_an_mx_the_policy_does_not_list_is_not_used(servers: Servers) -> None:
    submit(servers.sender, "unlisted", to="bob@unlisted.test")
    [bob] = shown(servers.sender, "bob@unlisted.test").values()
    assert bob["status"] == "pending" and bob["reply_enhanced"] == "4.7.0"
    assert "MTA-STS policy of unlisted.test (enforce) lists none" in str(bob["last_reply"])


def test_a_certificate_without_the_mx_name_defers(servers: Servers) -> None:
    submit(servers.sender, "wrong name", to="bob@wrongname.test")
    [bob] = shown(servers.sender, "bob@wrongname.test").values()
    assert bob["status"] == "pending" and bob["reply_enhanced"] == "4.7.5"
    reply = str(bob["last_reply"])
    assert reply.startswith("MTA-STS policy of wrongname.test (enforce): TLS handshake")
    assert "certificate verify failed" in reply


def test_testing_mode_logs_the_failure_and_delivers(servers: Servers) -> None:
    submit(servers.sender, "testing", to="bob@testing.test")
    arrived(servers.receiver, "bob@testing.test", "testing")
    line = logged(servers.sender, "mta_sts.testing", "domain=testing.test")
    assert "host=mx.testing.test[127.0.0.2]" in line and "certificate verify failed" in line


def test_a_cached_policy_outlives_a_restart_and_its_https_server(servers: Servers) -> None:
    sender = servers.sender
    submit(sender, "before the restart", to="carol@wrongname.test")
    shown(sender, "carol@wrongname.test")  # tried: its policy is cached
    servers.stop_policy_server.close()
    sender.stop()
    sender.start()
    submit(sender, "after the restart", to="dave@wrongname.test")
    [dave] = shown(sender, "dave@wrongname.test").values()
    # without the cached policy this would have gone out over opportunistic TLS
    assert dave["status"] == "pending" and "MTA-STS policy of" in str(dave["last_reply"])
    submit(sender, "verified after the restart", to="bob@sts.test")
    arrived(servers.receiver, "bob@sts.test", "verified after the restart")
