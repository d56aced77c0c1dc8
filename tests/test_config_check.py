"""Tests for `check_config`: the problems that would stop a server, found without binding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poczta.config_check import check_config
from poczta.net.tls import write_self_signed
from tests.certificates import TestCa
from tests.e2e.harness import free_port

LISTENERS = (
    '[listeners]\nsmtp = ["127.0.0.1:2525"]\nsubmission = []\nsubmissions = []\n'
    "pop3 = []\npop3s = []\nimap = []\nimaps = []\n"
)


def resolve_nothing(host: str, port: int) -> set[str]:
    return set()


def problems(root: Path, text: str, data_dir: str = "data", **kwargs: object) -> list[str]:
    file = root / "poczta.toml"
    file.write_text(f'hostname = "mx.example.org"\ndata_dir = "{data_dir}"\n{text}')
    return [
        str(error).removeprefix(f"{file}:")
        for error in check_config(file, **kwargs)  # type: ignore[arg-type]
    ]


@pytest.fixture(autouse=True)
def resolv_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's resolv.conf does not matter: a resolver is always configured."""
    import dns.resolver

    monkeypatch.setattr(dns.resolver, "Resolver", lambda: None)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_self_signed(tmp_path / "data/tls/cert.pem", tmp_path / "data/tls/key.pem", "mx.test")
    return tmp_path


def test_a_servable_config_has_no_problems(root: Path) -> None:
    assert problems(root, LISTENERS) == []
    localhost = LISTENERS.replace("127.0.0.1:2525", "localhost:2525")
    assert problems(root, localhost) == []


def test_tls_files_missing_or_not_a_pair(root: Path) -> None:
    (root / "data/tls/key.pem").unlink()
    assert problems(root, LISTENERS) == [
        f" tls.private_key: {root}/data/tls/key.pem does not exist"
    ]
    write_self_signed(root / "other/cert.pem", root / "other/key.pem", "other.test")
    mismatched = f'{LISTENERS}[tls]\nprivate_key = "{root}/other/key.pem"\n'
    assert problems(root, mismatched) == [
        f"12: tls.private_key: {root}/other/key.pem is not the key of {root}/data/tls/cert.pem"
    ]
    (root / "garbage.pem").write_text("not a certificate\n")
    garbage = f'{LISTENERS}[tls]\ncertificate = "{root}/garbage.pem"\nprivate_key = "{root}/x"\n'
    assert problems(root, garbage) == [f"13: tls.private_key: {root}/x does not exist"]
    (root / "x").write_text("nor a key\n")
    [message] = problems(root, garbage)
    assert message.startswith("12: tls.certificate: ") and "are not a PEM certificate" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_key(root: Path) -> None:
    (root / "data/tls/key.pem").chmod(0)
    [message] = problems(root, LISTENERS)
    assert message.startswith(" tls.private_key:") and "cannot be read" in message


def test_data_dir_missing_or_not_a_directory(tmp_path: Path) -> None:
    # the TLS files would be in it: they are not reported again
    assert problems(tmp_path, LISTENERS) == [
        f"2: data_dir: {tmp_path}/data does not exist (poczta init creates it)"
    ]
    (tmp_path / "data").write_text("")
    assert problems(tmp_path, LISTENERS) == [f"2: data_dir: {tmp_path}/data is not a directory"]
    assert problems(tmp_path, LISTENERS, data_dir="data/sub") == [
        f"2: data_dir: {tmp_path}/data/sub cannot be created: {tmp_path}/data is not a directory"
    ]


def test_listener_hosts_resolve_and_ports_do_not_overlap(root: Path) -> None:
    named = LISTENERS.replace("127.0.0.1:2525", "mx.invalid:2525")
    assert problems(root, named, resolve=resolve_nothing) == [
        "4: listeners.smtp: mx.invalid:2525: the host name 'mx.invalid' does not resolve"
    ]
    overlapping = LISTENERS.replace("submission = []", 'submission = ["0.0.0.0:2525"]')
    assert problems(root, overlapping) == [
        "5: listeners.submission: 0.0.0.0:2525 overlaps 127.0.0.1:2525 of listeners.smtp"
        " (the same port on the same or a wildcard address)"
    ]
    bad_port = LISTENERS.replace('"127.0.0.1:2525"', '"127.0.0.1:99999"')
    bad_port = bad_port.replace("submission = []", 'submission = ["0.0.0.0:25"]')
    assert problems(root, bad_port) == [
        "4: listeners.smtp: item 1: '127.0.0.1:99999': port 99999 is out of range 0-65535"
    ]  # the default standing in for smtp (0.0.0.0:25) is not said to clash
    other_port = LISTENERS.replace("submission = []", 'submission = ["0.0.0.0:2587"]')
    assert problems(root, other_port) == []
    silent = LISTENERS.replace('["127.0.0.1:2525"]', "[]")
    assert problems(root, silent) == [
        "3: listeners: no service listens anywhere: every listener is []"
    ]


def test_postgres_is_connected_to(root: Path) -> None:
    port = free_port()  # nothing listens there; tests/postgres connect to a real server
    text = f'{LISTENERS}[store]\nbackend = "postgres"\ndsn = "postgresql://p@127.0.0.1:{port}/m"\n'
    assert problems(root, text) == [
        f"13: store.dsn: cannot connect to 127.0.0.1:{port}: Connection refused"
    ]


def test_schema_problems_come_first_and_are_not_repeated(root: Path) -> None:
    (root / "data/tls/cert.pem").unlink()  # not reported: the key naming it is bad
    text = f'{LISTENERS}[tls]\ncertificate = 5\n[store]\nbackend = "postgres"\n'
    assert problems(root, text) == [
        "12: tls.certificate: expected a string, found an integer",
        "14: store.dsn: required when backend is 'postgres'",
    ]


def test_checks_need_resolvers(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.resolver

    def no_resolv_conf() -> None:
        raise dns.resolver.NoResolverConfiguration

    monkeypatch.setattr(dns.resolver, "Resolver", no_resolv_conf)
    [message] = problems(root, LISTENERS)
    assert message.startswith(" dns.nameservers: empty, and the system has no usable resolv.conf")
    assert problems(root, LISTENERS + '[dns]\nnameservers = ["192.0.2.53"]\n') == []
    assert problems(root, LISTENERS + "[checks]\nenabled = false\n") == []


def outbound(root: Path, settings: str) -> list[str]:
    """The problems of a servable config with these [outbound] settings (from line 12)."""
    return problems(root, f"{LISTENERS}[outbound]\n{settings}")


def test_smarthost_credentials_are_read_as_serve_reads_them(root: Path) -> None:
    passwords = root / "data/relay-passwords"
    relay = 'relay = "smtp.example.net:587"\n'
    assert outbound(root, relay) == []  # no file: the smarthost is used without AUTH
    named = relay + 'relay_password_file = "smarthost.txt"\n'
    assert outbound(root, named) == [
        f"13: outbound.relay_password_file: {root}/data/smarthost.txt does not exist"
        " (the smarthost credentials)"
    ]
    passwords.write_text("smtp.example.net:587 alice:secret\n")
    passwords.chmod(0o644)
    assert outbound(root, relay) == [
        f"12: outbound.relay_password_file: {passwords}: readable by others (mode 644);"
        " chmod 600 it"
    ]
    assert outbound(root, "") == []  # no smarthost: serve does not read the file
    passwords.chmod(0o600)
    assert outbound(root, relay) == []
    passwords.write_text("# smarthosts\nsmtp.example.net:587 alice:secret\nsmtp.other.net:25\n")
    by_domain = '[outbound.relay_by_domain]\n"example.org" = "smtp.other.net:25"\n'
    assert outbound(root, by_domain) == [
        f"12: outbound.relay_password_file: {passwords}:3: expected HOST:PORT USER:PASSWORD"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_smarthost_credentials(root: Path) -> None:
    passwords = root / "data/relay-passwords"
    passwords.write_text("smtp.example.net:587 alice:secret\n")
    passwords.chmod(0)
    [message] = outbound(root, 'relay = "smtp.example.net:587"\n')
    assert message.startswith(f"12: outbound.relay_password_file: {passwords}: cannot read it")


def test_ca_files_must_hold_certificates(root: Path) -> None:
    ca_files = 'relay_ca_file = "relay-ca.pem"\nmta_sts_ca_file = "sts-ca.pem"\n'
    assert outbound(root, ca_files) == [
        f"12: outbound.relay_ca_file: {root}/data/relay-ca.pem does not exist",
        f"13: outbound.mta_sts_ca_file: {root}/data/sts-ca.pem does not exist",
    ]
    TestCa().write_ca_file(root / "data/relay-ca.pem")
    (root / "data/sts-ca.pem").write_text("not a certificate\n")
    [message] = outbound(root, ca_files)
    assert message.startswith(f"13: outbound.mta_sts_ca_file: {root}/data/sts-ca.pem holds no")
    TestCa().write_ca_file(root / "data/sts-ca.pem")
    assert outbound(root, ca_files) == []
    (root / "data/relay-ca.pem").unlink()
    assert outbound(root, "enabled = false\n" + ca_files) == []  # serve reads none of them


def test_every_outbound_file_is_reported(root: Path) -> None:
    (root / "data/relay-passwords").write_text("smtp.example.net:587\n")
    (root / "data/relay-passwords").chmod(0o600)
    settings = 'relay = "smtp.example.net:587"\nmta_sts_ca_file = "tls/key.pem"\n'
    settings += 'relay_ca_file = "tls"\n'
    found = outbound(root, settings)
    assert [line.split(": ")[:2] for line in found] == [
        ["12", "outbound.relay_password_file"],
        ["13", "outbound.mta_sts_ca_file"],
        ["14", "outbound.relay_ca_file"],
    ]
    assert found[2].endswith(f"{root}/data/tls is not a file")
