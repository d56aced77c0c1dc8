"""The [outbound] settings: defaults, values, errors by file, line and key, rendering."""

from __future__ import annotations

import pytest

from poczta.config import ConfigError, render_default_config, validate_text

BASE = 'hostname = "mail.example.org"\ndata_dir = "/srv/mail"\n'


def test_defaults() -> None:
    outbound = validate_text(BASE, "poczta.toml").outbound
    assert outbound.enabled and outbound.port == 25 and outbound.relay == ""
    assert (outbound.retry_first, outbound.retry_max, outbound.lifetime) == (300, 14400, 432000)
    assert outbound.relay_by_domain == () and outbound.relay_tls == "starttls"
    assert (outbound.mta_sts_ca_file, outbound.mta_sts_port) == ("", 443)
    assert outbound.claim_time == 600


def test_values() -> None:
    text = BASE + (
        '\n[outbound]\nport = 2525\nrelay = "smtp.provider.example:587"\nrelay_tls = "tls"\n'
        'retry_first = 0.5\nmta_sts_ca_file = "test-ca.pem"\nmta_sts_port = 8443\n'
        '\n[outbound.relay_by_domain]\n"Example.NET" = "smtp.other.example:465"\n'
    )
    outbound = validate_text(text, "poczta.toml").outbound
    assert (outbound.port, outbound.relay, outbound.relay_tls) == (
        2525,
        "smtp.provider.example:587",
        "tls",
    )
    assert outbound.retry_first == 0.5
    assert (outbound.mta_sts_ca_file, outbound.mta_sts_port) == ("test-ca.pem", 8443)
    assert outbound.relay_by_domain == (("example.net", "smtp.other.example:465"),)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[outbound]\nport = 0\n", "poczta.toml:4: outbound.port: must be at least 1"),
        (
            "[outbound]\nmta_sts_port = 65536\n",
            "poczta.toml:4: outbound.mta_sts_port: must be at most 65535",
        ),
        ('[outbound]\nrelay = "smtp.example"\n', "poczta.toml:4: outbound.relay: 'smtp.example'"),
        ('[outbound]\nrelay_tls = "ssl"\n', "poczta.toml:4: outbound.relay_tls: unknown value"),
        ("[outbound]\nlifetime = -1\n", "poczta.toml:4: outbound.lifetime: must be at least"),
        ("[outbound]\nclaim_time = 1\n", "poczta.toml:4: outbound.claim_time: must be at least 3"),
        (
            '[outbound.relay_by_domain]\n"a.example" = "nohost"\n',
            "poczta.toml:4: outbound.relay_by_domain.a.example: 'nohost' is not HOST:PORT",
        ),
        ("[outbound]\nrelay_by_domain = 3\n", "outbound.relay_by_domain: expected a table"),
    ],
)
def test_errors_name_line_and_key(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_text(BASE + extra, "poczta.toml")
    assert expected in str(info.value)


def test_the_rendered_default_reads_back() -> None:
    text = render_default_config("mail.example.org", "/srv/mail", ["example.org"])
    assert "[outbound]" in text and "relay_by_domain = {}" in text
    assert validate_text(text, "poczta.toml").outbound == validate_text(BASE, "p").outbound
