"""Running as root: bind the ports, then become the configured `user`; and creating that user.

Binding ports below 1024 needs root (or CAP_NET_BIND_SERVICE), nothing else poczta
does. So a root process binds every listener and reads the TLS key, makes the data dir
its user's, and gives up root for good (setgroups, setgid, setuid) before it opens the
store or forks a worker. Without a `user` it stays root and says so.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from poczta.config import Config
from poczta.logs import log
from poczta.process import PID_FILE, StartError

__all__ = ["become_user", "check_user", "ensure_system_user", "own_tree"]

_SHARD = re.compile(r"[0-9a-f]{2}\Z")


def _account(config: Config) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(config.user)
    except KeyError:
        raise StartError(
            f"user: no system user {config.user!r} (poczta init run as root creates it)"
        ) from None


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_user(config: Config) -> None:
    """StartError when `user` is set and this process neither is it nor can become it."""
    if not config.user:
        return
    account = _account(config)
    uid = os.geteuid()
    if uid not in (0, account.pw_uid):
        raise StartError(
            f'user = "{config.user}", but poczta runs as {_name_of(uid)}: start it as root'
            f" (it becomes {config.user} once its ports are bound) or as {config.user}"
        )


def become_user(config: Config) -> None:
    """Once the ports are bound: a root process becomes `user` (or warns it stays root)."""
    if os.geteuid() != 0:
        return
    if not config.user:
        log(
            "security.running_as_root",
            logging.WARNING,
            hint='set user = "poczta" in the config (poczta init run as root creates that user)',
        )
        return
    account = _account(config)
    _own_data_dir(config.data_dir, account)
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.environ.update(HOME=account.pw_dir, USER=config.user, LOGNAME=config.user)
    log("security.user", user=config.user, uid=account.pw_uid, gid=account.pw_gid)
    _check_reachable(config)


def _check_reachable(config: Config) -> None:
    """What the user must reach, checked now rather than failing later: the data dir, and
    the code (Python imports some modules only when first used, so a Python installed
    where the user cannot read, such as a venv under /root, would fail mid-session)."""
    import click

    import poczta

    user = config.user
    if not os.access(config.data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise StartError(
            f"user: poczta now runs as {user}, who cannot reach the data dir {config.data_dir}"
            f" (is a directory above it closed to {user}?)"
        )
    for module in (os, poczta, click):  # the standard library, poczta, its dependencies
        where = Path(str(module.__file__)).parent
        if module is click:
            where = where.parent
        if not os.access(where, os.R_OK | os.X_OK):
            raise StartError(
                f"user: poczta now runs as {user}, who cannot read {where}: install poczta"
                f" and its Python where {user} can read them"
            )


def _own_data_dir(data_dir: Path, account: pwd.struct_passwd) -> None:
    """Make the data dir `account`'s: a new one is handed over, one in use by someone else
    is refused (its files are theirs), files root added since are given back."""
    owner = data_dir.stat().st_uid
    in_use = any(entry.name != PID_FILE for entry in data_dir.iterdir())
    if owner != account.pw_uid and in_use:
        name = account.pw_name
        raise StartError(
            f"data dir {data_dir} belongs to {_name_of(owner)}, not {name}:"
            f" chown -R {name}: {data_dir}"
        )
    own_tree(data_dir, account.pw_uid, account.pw_gid)


def own_tree(root: Path, uid: int, gid: int) -> int:
    """chown what under `root` is not `uid`'s (a database or directory a root command
    created); message files are skipped: only the server writes those. The number changed."""
    changed = 0
    for top, dirs, files in os.walk(root):
        here = Path(top)
        for name in [*dirs, *files]:
            changed += _own(here / name, uid, gid)
        if here.name == "blobs":
            dirs[:] = [d for d in dirs if not _SHARD.match(d)]
    return changed + _own(root, uid, gid)


def _own(path: Path, uid: int, gid: int) -> int:
    info = path.lstat()
    if info.st_uid == uid and info.st_gid == gid:
        return 0
    os.chown(path, uid, gid, follow_symlinks=False)
    return 1


def ensure_system_user(name: str, home: Path) -> bool:
    """Create the system user (and its group) `name` unless it exists; True if created."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    shell = next(
        (s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()), "/bin/false"
    )
    if shutil.which("useradd"):
        command = ["useradd", "--system", "--user-group", "--no-create-home"]
        command += ["--home-dir", str(home), "--shell", shell, name]
    elif shutil.which("adduser"):
        command = ["adduser", "--system", "--group", "--no-create-home"]
        command += ["--home", str(home), "--shell", shell, name]
    else:
        raise StartError(f"no useradd or adduser to create the system user {name!r}")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise StartError(f"cannot create the system user {name!r}: {reason}")
    return True
