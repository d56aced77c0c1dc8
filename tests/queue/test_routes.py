"""Smarthost routes: the relay per sender domain, the credentials file and its mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poczta.config_schema import OutboundSettings
from poczta.queue.routes import RelayError, Router, load_credentials
from poczta.smtp.client_events import Credentials


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "relay-passwords"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_routes_by_sender_domain_then_the_default(tmp_path: Path) -> None:
    _file(
        tmp_path,
        "# smarthosts\nsmtp.a.example:587 user-a:pw:with:colons\n\nSMTP.B.example:465 b:x\n",
    )
    settings = OutboundSettings(
        relay="smtp.a.example:587",
        relay_by_domain=(("other.example", "smtp.b.example:465"),),
        relay_tls="tls",
    )
    router = Router(settings, tmp_path)
    default = router.route("alice@example.test")
    assert default is not None and (default.host, default.port, default.implicit_tls) == (
        "smtp.a.example",
        587,
        True,
    )
    assert default.credentials == Credentials("user-a", "pw:with:colons")
    other = router.route("bob@Other.example")
    assert other is not None and other.label == "smtp.b.example:465"
    assert other.credentials == Credentials("b", "x")


def test_direct_delivery_without_a_relay(tmp_path: Path) -> None:
    router = Router(OutboundSettings(), tmp_path)
    assert not router.relays and router.route("alice@example.test") is None
    only = Router(OutboundSettings(relay_by_domain=(("a.example", "h.example:25"),)), tmp_path)
    assert only.route("x@b.example") is None and only.route("x@a.example") is not None


def test_a_credentials_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "h.example:587 u:p\n", 0o644)
    with pytest.raises(RelayError, match="readable by others"):
        load_credentials(path)
    with pytest.raises(RelayError, match="readable by others"):
        Router(OutboundSettings(relay="h.example:587"), tmp_path)


def test_malformed_lines_name_their_line(tmp_path: Path) -> None:
    with pytest.raises(RelayError, match="relay-passwords:2: expected HOST:PORT USER:PASSWORD"):
        load_credentials(_file(tmp_path, "h.example:587 u:p\nh.example:25 nopassword\n"))
    with pytest.raises(RelayError, match=r"relay-passwords:1: 'h\.example'"):
        load_credentials(_file(tmp_path, "h.example u:p\n"))
    assert load_credentials(tmp_path / "missing") == {}
