"""What `poczta init` does for a system install: the system user, who owns what, the unit."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

import click

from poczta.config import Config
from poczta.privileges import ensure_system_user, own_tree
from poczta.systemd import render_unit

__all__ = ["default_user", "hand_over", "prepare_user", "write_unit"]


def default_user(given: str | None) -> str:
    """The `user` to write: as given (--user), else "poczta" for root and none otherwise."""
    if given is not None:
        return given
    return "poczta" if os.geteuid() == 0 else ""


def prepare_user(user: str, data_dir: Path) -> str | None:
    """As root, create the system user when absent; a line saying so, or None."""
    if not user or os.geteuid() != 0:
        return None
    if ensure_system_user(user, data_dir):
        return f"created the system user {user}"
    return None


def hand_over(config: Config) -> None:
    """As root: the data dir becomes the user's, the config file readable by its group."""
    if not config.user or os.geteuid() != 0:
        return
    account = pwd.getpwnam(config.user)
    own_tree(config.data_dir, account.pw_uid, account.pw_gid)
    if config.source is not None:
        os.chown(config.source, 0, account.pw_gid)
        config.source.chmod(0o640)


def write_unit(config: Config, destination: str) -> str:
    """Write the systemd unit for `config` to `destination` ("-": standard output)."""
    assert config.source is not None
    user = config.user or "poczta"
    try:
        group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        group = user
    unit = render_unit(config.source.resolve(), config.data_dir, user, group)
    if destination == "-":
        click.echo(unit, nl=False)
        return "printed the systemd unit"
    Path(destination).write_text(unit)
    return f"wrote the systemd unit {destination}"
