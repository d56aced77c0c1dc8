"""A PostgreSQL server of its own: a throwaway cluster in a directory, for tests and benchmarks.

`PostgresServer` runs `initdb` and then `postgres` from the newest Debian-packaged
version (`/usr/lib/postgresql/N/bin`, or the binaries on $PATH), listening on one
loopback address and port and on no Unix socket. The server keeps `fsync` and
`synchronous_commit` on, since durability is what the store's tests and benchmarks are
about, and every connection authenticates with a password (scram-sha-256): `admin`, the
superuser the harness itself uses, and `poczta`, the role poczta connects as, whose
password is only in a file (`password_file`), as a server would read it. `settings`
adds or overrides server settings (a benchmark's `shared_buffers`, say).

PostgreSQL refuses to run as root. Run as root, the cluster is given to the `postgres`
system user that Debian's package creates, or to `nobody` where there is none; run as
anyone else, the cluster is that user's.

`new_database()` makes an empty database owned by `poczta`, copied from a template
(`CREATE DATABASE ... TEMPLATE`). Standard library only, but for asyncpg (the admin
connection), so both the test suite (`tests/pg_server.py`) and the benchmarks import it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ADMIN", "ROLE", "TEMPLATE", "PostgresServer", "find_pg_bin"]

ADMIN = "admin"
ROLE = "poczta"
TEMPLATE = "poczta_template"
START_TIMEOUT = 30.0
_VERSION = re.compile(r"^\d+(?:\.\d+)?$")
T = TypeVar("T")


def find_pg_bin() -> Path | None:
    """The folder of `initdb` and `postgres`: Debian's newest version, else $PATH's."""
    versions = [
        folder
        for folder in Path("/usr/lib/postgresql").glob("*")
        if _VERSION.match(folder.name) and (folder / "bin/postgres").exists()
    ]
    if versions:
        newest = max(versions, key=lambda f: tuple(int(p) for p in f.name.split(".")))
        return newest / "bin"
    found = shutil.which("initdb")
    if found and Path(found).with_name("postgres").exists():
        return Path(found).parent
    return None


PG_BIN = find_pg_bin()


def _cluster_user() -> pwd.struct_passwd | None:
    """Who runs the cluster: None for this process's own user, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and there is neither a postgres nor a nobody user")


@dataclass
class PostgresServer:
    """One cluster under `root`: start it (`start`, or `launch` then `wait_until_listening`),
    make databases, stop it."""

    root: Path
    bin: Path
    port: int
    host: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)  # over `_server_args`' own
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    proc: subprocess.Popen[bytes] | None = None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _admin: _AdminConnection | None = None
    _spare: concurrent.futures.Future[str] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        """The `poczta` role's password, as `[store] password_file` would hold it."""
        return self.root / "poczta-password"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = TEMPLATE, user: str = ROLE) -> str:
        """A URL without a password, like the one a config file holds."""
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    # ------------------------------------------------------------------ life

    def launch(self) -> None:
        """Make the cluster and start the server, without waiting until it listens."""
        owner = _cluster_user()
        self.root.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        self._initdb(owner)
        self._run_server(owner)

    def _run_server(self, owner: pwd.struct_passwd | None) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self._server_args(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            **_identity(owner),
        )
        log.close()

    def _initdb(self, owner: pwd.struct_passwd | None) -> None:
        admin_pwfile = self.root / "admin-password"
        admin_pwfile.write_text(self.admin_password + "\n")
        if owner is not None:
            os.chown(admin_pwfile, owner.pw_uid, owner.pw_gid)
        args = [
            str(self.bin / "initdb"),
            f"--pgdata={self.data}",
            f"--username={ADMIN}",
            f"--pwfile={admin_pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: its creation need not survive a crash
        ]
        try:
            _run_as(args, owner, self.root)
        finally:
            admin_pwfile.unlink()

    def _server_args(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "max_connections": "100",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",  # tests provoke errors on purpose
            **self.settings,
        }
        args = [str(self.bin / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        return args

    def wait_until_listening(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the server accepts connections, then create the test role and the
        template database."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        pid_file = self.data / "postmaster.pid"
        while not _ready(pid_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {self.log_text()}")
            time.sleep(0.02)
        self._admin = _AdminConnection(self.dsn("postgres", ADMIN), self.admin_password)
        self.admin_sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
        self.admin_sql(f"CREATE DATABASE {TEMPLATE} OWNER {ROLE}")

    def start(self) -> None:
        self.launch()
        try:
            self.wait_until_listening()
        except BaseException:
            self.kill()
            raise

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Stop the server and wait for it: SIGINT is PostgreSQL's fast shutdown (a
        checkpoint, then exit), SIGQUIT its immediate one (exit; recovery at next start)."""
        assert self.proc is not None
        if self._spare is not None:
            with contextlib.suppress(Exception):
                self._spare.result(30)
            self._spare = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """Stop at once, as a crash would (the server's children go with it)."""
        self.stop(signal.SIGQUIT)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server again on its cluster after `stop` (after a SIGKILL, too: it
        recovers from its log), once no process of the old one is left; wait until it
        accepts connections."""
        assert self.proc is None, "the server still runs"
        deadline = time.monotonic() + timeout
        while _processes_in(self.data):  # a killed postmaster's children end by themselves
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres processes of {self.data} still run")
            time.sleep(0.02)
        self._run_server(_cluster_user())
        assert self.proc is not None
        pid_file = self.data / "postmaster.pid"
        while not (_ready(pid_file) and _pid_in(pid_file) == self.proc.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start again: {self.log_text()[-2000:]}")
            time.sleep(0.02)
        self._admin = _AdminConnection(self.dsn("postgres", ADMIN), self.admin_password)

    def remove(self) -> None:
        """Stop the server at once and delete its cluster (nothing of it is kept, so it
        needs no last checkpoint)."""
        if self.proc is not None:
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------------ databases

    def admin_sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        """Run one statement as the superuser; the rows it returns."""
        assert self._admin is not None, "the server is not running"
        return self._admin.fetch(query, *args)

    def new_database(self, prefix: str = "test") -> str:
        """A new empty database owned by `poczta`: its name (see `dsn`). The next one is
        made at once, in the background, while the test runs."""
        assert self._admin is not None, "the server is not running"
        if self._spare is None:
            self._spare = self._admin.submit(self._create(prefix))
        name = self._spare.result(60)
        self._spare = self._admin.submit(self._create(prefix))
        return name

    async def _create(self, prefix: str) -> str:
        assert self._admin is not None
        name = f"{prefix}_{next(self._names)}"
        await self._admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER {ROLE}")
        return name


class _AdminConnection:
    """The harness's own superuser connection, kept open on an event loop of its own
    thread, so that tests running their own loops can use it (and each new database
    costs one statement, not a new process and login). Its statements run one at a time."""

    def __init__(self, dsn: str, password: str) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lock = self.submit(self._new_lock()).result(10)
        self.conn = self.submit(asyncpg.connect(dsn, password=password, timeout=10)).result(30)

    @staticmethod
    async def _new_lock() -> asyncio.Lock:
        return asyncio.Lock()

    def submit(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop)

    async def execute(self, query: str) -> None:
        async with self.lock:
            await self.conn.execute(query)

    async def _fetch(self, query: str, *args: object) -> list[tuple[object, ...]]:
        async with self.lock:
            return [tuple(row) for row in await self.conn.fetch(query, *args)]

    def fetch(self, query: str, *args: object) -> list[tuple[object, ...]]:
        return self.submit(self._fetch(query, *args)).result(60)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.submit(self.conn.close(timeout=5)).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _identity(owner: pwd.struct_passwd | None) -> dict[str, Any]:
    if owner is None:
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _run_as(args: list[str], owner: pwd.struct_passwd | None, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if owner is not None:
        env["HOME"] = str(cwd)
    done = subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, env=env, timeout=120, **_identity(owner)
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout}")


def _ready(pid_file: Path) -> bool:
    """Whether postmaster.pid says the server accepts connections (its 8th line)."""
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _pid_in(pid_file: Path) -> int | None:
    """The postmaster's pid that postmaster.pid names (its first line)."""
    try:
        return int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _processes_in(data: Path) -> list[int]:
    """The processes whose working directory is `data` (a postmaster and its children)."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        with contextlib.suppress(OSError):
            if cwd.resolve(strict=True) == data.resolve():
                found.append(int(cwd.parent.name))
    return found
