"""poczta under test: its private config, its store filled from the benchmark, `serve`.

The store is filled through poczta's own store API (the benchmark imports poczta from
the interpreter running it), the server is the ``poczta serve`` executable.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _common import BenchError

SERVICES = ("smtp", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")


def write_config(
    path: Path,
    data_dir: Path,
    cert: Path,
    key: Path,
    listeners: Mapping[str, Sequence[str]],
    *,
    tls: bool,
    max_connections: int = 1000,
    limits: Mapping[str, int] | None = None,
    store: str = "",
) -> None:
    """A config serving only `listeners` (service -> addresses); dev mode without TLS;
    `limits` adds settings to ``[limits]``; `store` is a ``[store]`` table ("": SQLite)."""
    more = "".join(f"{key} = {value}\n" for key, value in (limits or {}).items())
    listen = "".join(
        f"{s} = [{', '.join(_quoted(a) for a in listeners.get(s, ()))}]\n" for s in SERVICES
    )
    path.write_text(
        f'hostname = "bench.test"\ndata_dir = "{data_dir}"\ndomains = ["example.test"]\n'
        f"dev_mode = {'false' if tls else 'true'}\n"
        f'\n[tls]\ncertificate = "{cert}"\nprivate_key = "{key}"\n'
        f"\n[listeners]\n{listen}"
        f"\n[limits]\nmax_connections = {max_connections}\n"
        f"max_connections_per_ip = {max_connections}\n{more}{store}"
    )


def _quoted(text: str) -> str:
    return '"' + text + '"'


async def open_store(config: Path) -> Any:
    """poczta's store as the server will open it from `config`."""
    try:
        from poczta.app import open_configured_store
        from poczta.config import load_config
    except ImportError as exc:
        raise BenchError(f"poczta is not importable by {sys.executable}: {exc}") from exc
    return await open_configured_store(load_config(config))


def user_secret(password: str) -> tuple[str, str]:
    """(password hash, SCRAM credentials) as `poczta user add` stores them."""
    from poczta.accounts import hash_password
    from poczta.sasl import derive_scram_credentials

    return hash_password(password), derive_scram_credentials(password).to_string()


def serve_command(executable: str, config: Path) -> list[str]:
    return [executable, "serve", "-c", str(config)]


def not_served(log_text: str, service: str) -> str | None:
    """Why poczta's log says it does not serve `service` (None when it does not say so)."""
    for line in log_text.splitlines():
        if "serve.not_served" in line and f"service={service}" in line:
            reason = line.partition("reason=")[2].strip().strip('"')
            return reason or "poczta does not serve it"
    return None
