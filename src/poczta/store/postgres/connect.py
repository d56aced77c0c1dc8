"""Connections to the PostgreSQL store: the pool `[store]` describes, and one line per failure.

The URL (`dsn`) names the server, the role and the database; the password is not meant
to be in it (a config file is read by more people than the server's user): it comes from
`password_file` (its first line; the file must be readable by its owner only, like the
smarthost credentials) or, without one, from $PGPASSWORD. Every way of failing to reach a
usable database is a `PostgresUnavailable` whose text is one line naming the server
(never the password) and whose `key` is the setting to look at: a malformed URL, an
unreadable password file, a refused password, a server that does not answer within
`CONNECT_TIMEOUT` seconds, a database that does not exist or whose schema is newer than
this poczta's (see `poczta.store.postgres.migrate`).

Every connection asks the server to end its session when a transaction of it stays idle
longer than `IDLE_IN_TRANSACTION_TIMEOUT`. poczta never waits for anything but the
database between the statements of a transaction, so such a client has stopped: a node
frozen or cut off mid-delivery, whose sockets no kernel closes (a `kill -9` closes them,
and the server rolls back at once). Without the limit its row locks would stay held
until the server's TCP keepalive gives up, hours later, and every delivery to a mailbox
it had locked would wait, on every node. With it, the stopped node's transaction holds
the others up that long at most; a live node that loses one gets `StoreUnavailable`,
and its client a temporary failure to retry.

The stopped node may also have had other transactions waiting for the same lock. Each
would take it in turn and hold it idle for as long again, so a wait for a lock gives up
a little earlier than the idle limit (`lock_timeout`, `LOCK_WAIT_SHARE` of it): those
give up before the lock is free, and a live node's wait that gives up is run again
(`poczta.store.postgres.access`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from poczta.config_schema import StoreSettings
from poczta.store.postgres.errors import PostgresUnavailable

__all__ = [
    "CONNECT_TIMEOUT",
    "IDLE_IN_TRANSACTION_TIMEOUT",
    "LOCK_WAIT_SHARE",
    "PostgresTarget",
    "ServerFacts",
    "check_database",
    "connect",
    "create_pool",
    "keep_session",
    "parse_dsn",
    "read_password",
]

CONNECT_TIMEOUT = 5.0  # seconds for the TCP connection, TLS and login together
#: Seconds a transaction may stay idle before the server ends its session: far above the
#: few milliseconds between the statements of a live one, and well under the statements'
#: own timeout (`access.COMMAND_TIMEOUT`), so those waiting for its locks go on.
IDLE_IN_TRANSACTION_TIMEOUT = 5.0
LOCK_WAIT_SHARE = 0.8  # of the idle limit: how long a statement waits for a lock
_SCHEMES = ("postgresql", "postgres")


class _TracebackToLine(logging.Filter):
    """While the database is down, asyncpg's pool logs a whole traceback at each attempt
    to make its floor of connections again; the one line of the error says as much."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = " ".join(str(record.exc_info[1]).split()) or type(record.exc_info[1]).__name__
            record.msg, record.args = f"{record.getMessage()}: {error}", None
            record.exc_info = record.exc_text = None
        return True


_POOL_LOG_FILTER = _TracebackToLine()


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """What a URL names, for messages: the role, the server and the database."""

    dsn: str
    user: str
    host: str
    port: int
    database: str
    has_password: bool

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.server}/{self.database}"


def parse_dsn(dsn: str) -> PostgresTarget:
    """The URL's parts, or PostgresUnavailable (key "dsn") saying what is malformed."""
    text = dsn.strip()
    try:
        parts = urlsplit(text)
        port = parts.port or 5432
    except ValueError as exc:
        raise PostgresUnavailable(f"the URL is malformed: {exc}") from None
    if parts.scheme not in _SCHEMES:
        shown = parts.scheme or text.partition(":")[0][:20]
        raise PostgresUnavailable(
            f"the URL must start with postgresql://, not {shown!r}"
            if parts.scheme
            else "the URL must look like postgresql://USER@HOST:PORT/DATABASE"
        )
    # No host in the URL: a `host` parameter (a socket folder) or libpq's defaults.
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    user = unquote(parts.username or "") or "(the system user)"
    database = unquote(parts.path.lstrip("/")) or unquote(parts.username or "") or "(default)"
    return PostgresTarget(text, user, host, port, database, parts.password is not None)


def read_password(
    settings: StoreSettings, data_dir: Path, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The password: `password_file`'s first line, else $PGPASSWORD, else None (one in the
    URL, or none)."""
    if not settings.password_file:
        return environ.get("PGPASSWORD") or None
    path = data_dir / settings.password_file
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PostgresUnavailable(
                f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it",
                key="password_file",
            )
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PostgresUnavailable(
            f"{path}: cannot read it: {reason}", key="password_file"
        ) from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise PostgresUnavailable(f"{path}: its first line is empty", key="password_file")
    return password


@contextlib.contextmanager
def _translated(
    target: PostgresTarget, password: str | None, from_file: bool, timeout: float
) -> Iterator[None]:
    """Turn what asyncpg and the network raise while connecting into PostgresUnavailable."""
    import asyncpg

    try:
        yield
    except PostgresUnavailable:
        raise
    except asyncpg.InvalidPasswordError:
        if password is None and not target.has_password:
            hint = "no password is given: set [store] password_file or $PGPASSWORD"
        elif from_file:
            hint = "check [store] password_file"
        else:
            hint = "check $PGPASSWORD" if not target.has_password else "check the URL"
        key = "password_file" if from_file else "dsn"
        raise PostgresUnavailable(
            f"{target}: the server refused the password of {target.user} ({hint})", key=key
        ) from None
    except asyncpg.InvalidCatalogNameError:
        raise PostgresUnavailable(
            f"{target}: there is no database {target.database!r} on {target.server}"
        ) from None
    except asyncpg.PostgresError as exc:
        raise PostgresUnavailable(f"{target}: the server refused: {exc}") from None
    except (asyncpg.InterfaceError, ValueError) as exc:
        raise PostgresUnavailable(f"the URL is malformed: {exc}") from None
    except TimeoutError:
        raise PostgresUnavailable(
            f"{target.server} does not answer (waited {timeout:g} seconds)"
        ) from None
    except socket.gaierror as exc:
        raise PostgresUnavailable(f"cannot resolve {target.host}: {exc.strerror}") from None
    except OSError as exc:
        errno = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
        reason = os.strerror(errno) if errno else str(exc) or type(exc).__name__
        raise PostgresUnavailable(f"cannot connect to {target.server}: {reason}") from None


def _options(
    settings: StoreSettings, data_dir: Path, environ: Mapping[str, str], idle_timeout: float
) -> tuple[PostgresTarget, dict[str, Any], bool]:
    target = parse_dsn(settings.dsn)
    password = read_password(settings, data_dir, environ)
    server_settings = {
        "application_name": "poczta",
        "idle_in_transaction_session_timeout": str(max(1, round(idle_timeout * 1000))),
        "lock_timeout": str(max(1, round(LOCK_WAIT_SHARE * idle_timeout * 1000))),
    }
    options: dict[str, Any] = {"dsn": target.dsn, "server_settings": server_settings}
    if password is not None:
        options["password"] = password
    return target, options, bool(settings.password_file)


async def connect(
    settings: StoreSettings,
    data_dir: Path,
    *,
    environ: Mapping[str, str] = os.environ,
    timeout: float = CONNECT_TIMEOUT,
    idle_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT,
) -> Any:
    """One connection (an `asyncpg.Connection`) to the configured database, whose
    transactions the server ends after `idle_timeout` seconds idle."""
    import asyncpg

    target, options, from_file = _options(settings, data_dir, environ, idle_timeout)
    with _translated(target, options.get("password"), from_file, timeout):
        return await asyncpg.connect(timeout=timeout, **options)


async def keep_session(conn: Any) -> None:
    """The reset of a connection given back to a pool: none beyond the driver's own
    rollback of a transaction left open. poczta keeps no session state on a pooled
    connection (no SET, LISTEN or advisory lock outlives a call; migrations unlock
    theirs), so the driver's reset statement, a round trip after every call, would undo
    nothing."""


async def create_pool(
    settings: StoreSettings,
    data_dir: Path,
    *,
    min_size: int = 1,
    max_size: int = 10,
    environ: Mapping[str, str] = os.environ,
    timeout: float = CONNECT_TIMEOUT,
    command_timeout: float | None = None,
    reset: Callable[[Any], Awaitable[None]] | None = keep_session,
    idle_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT,
) -> Any:
    """A pool (an `asyncpg.Pool`) of connections to the configured database, its first
    `min_size` connections made (so a wrong setting fails here, in one line);
    `command_timeout` bounds every statement's wait for the server's answer, and the
    server ends a session whose transaction stays idle `idle_timeout` seconds; `reset`
    replaces the driver's reset of a connection given back (None: the driver's own, a
    round trip of its own)."""
    import asyncpg

    logging.getLogger("asyncpg.pool").addFilter(_POOL_LOG_FILTER)  # once: a set of filters
    target, options, from_file = _options(settings, data_dir, environ, idle_timeout)
    with _translated(target, options.get("password"), from_file, timeout):
        return await asyncpg.create_pool(
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            command_timeout=command_timeout,
            reset=reset,
            **options,
        )


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What `check_database` found: the server's version, the database's schema version
    (0: empty) and the newest this poczta knows."""

    server_version: str
    schema_version: int
    known_version: int


async def check_database(
    settings: StoreSettings,
    data_dir: Path,
    *,
    environ: Mapping[str, str] = os.environ,
    timeout: float = CONNECT_TIMEOUT,
) -> ServerFacts:
    """Connect as the server would and look at the schema, changing nothing: the facts,
    or PostgresUnavailable when the store could not be used (its schema newer than ours,
    or migrations due that the role may not run)."""
    from poczta.store.postgres.migrate import ensure_known, latest_version

    conn = await connect(settings, data_dir, environ=environ, timeout=timeout)
    try:
        target = parse_dsn(settings.dsn)
        version = await ensure_known(conn)
        known = latest_version()
        if version < known:
            may_create = await conn.fetchval("SELECT has_schema_privilege('public', 'CREATE')")
            if not may_create:
                raise PostgresUnavailable(
                    f"{target}: the schema is at version {version} of {known}, and"
                    f" {target.user} may not create tables in schema public to migrate it"
                )
        server_version = str(await conn.fetchval("SHOW server_version"))
        return ServerFacts(server_version, version, known)
    finally:
        await conn.close(timeout=timeout)
