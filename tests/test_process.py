"""The server process's setup: the config's `user` line, the systemd unit, file modes."""

from __future__ import annotations

from pathlib import Path

from poczta.config import Config, render_default_config, validate_text
from poczta.process import loose_modes
from poczta.systemd import render_unit

ROOT = Path(__file__).parents[1]


def test_the_user_line_is_written_only_when_there_is_a_user() -> None:
    without = render_default_config("mx.example.org", "/var/lib/poczta", [])
    assert '\n# user = "poczta"\n' in without
    assert validate_text(without, "poczta.toml").user == ""
    with_user = render_default_config("mx.example.org", "/var/lib/poczta", [], "poczta")
    assert '\nuser = "poczta"\n' in with_user
    assert validate_text(with_user, "poczta.toml").user == "poczta"


def test_the_shipped_unit_is_the_one_init_writes_for_the_usual_paths() -> None:
    unit = render_unit(
        Path("/etc/poczta/poczta.toml"),
        Path("/var/lib/poczta"),
        "poczta",
        "poczta",
        exec_start="/usr/local/bin/poczta",
    )
    assert (ROOT / "contrib" / "poczta.service").read_text() == unit
    assert "\nExecStart=/usr/local/bin/poczta serve -c /etc/poczta/poczta.toml\n" in unit
    assert "\nProtectHome=yes\n" in unit


def test_a_data_dir_under_home_keeps_home_readable() -> None:
    unit = render_unit(
        Path("/etc/poczta.toml"), Path("/home/mail/poczta"), "mail", "mail", exec_start="/usr/bin/x"
    )
    assert "\nProtectHome=read-only\n" in unit
    assert "\nReadWritePaths=/home/mail/poczta\n" in unit


def test_loose_modes_names_what_others_may_read(tmp_path: Path) -> None:
    config = Config.dev(tmp_path)
    tmp_path.chmod(0o750)
    (tmp_path / "tls").mkdir(mode=0o750)
    key = tmp_path / "tls" / "key.pem"
    key.write_text("key")
    key.chmod(0o600)
    (tmp_path / "poczta.db").write_text("")
    (tmp_path / "poczta.db").chmod(0o640)  # readable by the group: a deliberate choice
    assert loose_modes(config) == []
    key.chmod(0o644)
    (tmp_path / "blobs").mkdir(mode=0o755)
    assert loose_modes(config) == [(tmp_path / "blobs", 0o755, 0o750), (key, 0o644, 0o600)]
