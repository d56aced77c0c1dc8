"""Tests for the commented default poczta.toml: it documents every key and reads back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from poczta.config import Config, load_config, render_default_config, validate_text


def test_rendered_default_config_round_trips(tmp_path: Path) -> None:
    text = render_default_config("mail.example.org", "data", ["example.org", "example.net"])
    file = tmp_path / "poczta.toml"
    file.write_text(text)
    config = load_config(file)
    expected = validate_text(
        'hostname = "mail.example.org"\ndata_dir = "data"\n'
        'domains = ["example.org", "example.net"]\n',
        str(file),
    )
    assert config == expected
    assert config.data_dir == tmp_path / "data"


def test_rendered_default_config_documents_every_key() -> None:
    text = render_default_config("h.example", "/var/lib/poczta", [])
    defaults = Config(hostname="h.example", data_dir=Path("/var/lib/poczta"))
    for section in ("tls", "listeners", "limits", "smtp", "auth", "store", "log"):
        assert f"\n[{section}]\n" in text
        for spec in dataclasses.fields(getattr(defaults, section)):
            line = next(ln for ln in text.splitlines() if ln.startswith(f"{spec.name} = "))
            comment = text.splitlines()[text.splitlines().index(line) - 1]
            assert comment.startswith("# ") and len(comment) > 10


def test_rendered_config_escapes_strings() -> None:
    text = render_default_config("h.example", 'dir "with" \\ quotes\t\x7f', [])
    config = validate_text(text, "/etc/poczta.toml")
    assert config.data_dir == Path('/etc/dir "with" \\ quotes\t\x7f')


def test_rendered_config_documents_checks() -> None:
    text = render_default_config("mx.example.org", "/srv/mail", ["example.org"])
    assert "[dns]" in text and "[checks]" in text and "zen.spamhaus.org" in text
    assert "dnsbl_ip_zones = []" in text and "greylisting = true" in text


def test_rendered_config_documents_workers() -> None:
    text = render_default_config("mx.example.org", "/srv/mail", ["example.org"])
    assert text.index("workers = 1") < text.index("[tls]")
    lines = text.splitlines()
    at = lines.index("workers = 1")
    comment = lines[at - 1]
    assert "0: one per CPU core" in comment and "throttling count per process" in comment
