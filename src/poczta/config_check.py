"""`poczta config check`: every problem of a config file, the schema's and what would stop a server.

`check_config(path)` reads the file with `poczta.config.read_config` (which goes on
after a bad key) and then looks, without binding a port or changing the store, at
what the settings point to: the TLS certificate and key (present, readable, a
matching pair), the data directory, the listener host names (they must resolve, and
no two services may share a port on overlapping addresses), the store (for postgres:
a connection as `serve` would make, and a schema this poczta knows), the
resolvers the checks of incoming mail need, and the files the queue runner reads at
start (the smarthost credentials, `relay_ca_file`, `mta_sts_ca_file`), read by the
functions `serve` reads them with. A check whose keys already had a schema problem is
skipped, so one mistake is reported once.

A missing credentials file is a problem only when `relay_password_file` names another
file than the default: under the default name it is optional, as for `serve` (a
smarthost without AUTH).

Files and directories are checked with the rights of the user running the check:
run it as the user that serves.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from poczta.config import Config, ConfigError, ListenAddress, Validation, read_config, sort_by_line
from poczta.config_locate import KeyPath
from poczta.config_outbound import OutboundSettings
from poczta.queue.mta_sts_fetch import policy_context
from poczta.queue.routes import RelayError, Router

__all__ = ["Finding", "check_config", "findings", "resolve_host"]

Resolve = Callable[[str, int], set[str]]


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason the settings could not serve: the key, what is wrong, where to point."""

    path: KeyPath
    message: str
    near: KeyPath = ()


def check_config(path: Path | str, *, resolve: Resolve | None = None) -> list[ConfigError]:
    """Every problem of the config file at `path`, in the order of their lines."""
    validation = read_config(path)
    errors = list(validation.errors)
    if validation.config is not None:
        for finding in findings(validation, resolve or resolve_host):
            errors.append(validation.error(finding.path, finding.message, near=finding.near))
    return sort_by_line(errors)


def findings(validation: Validation, resolve: Resolve) -> Iterator[Finding]:
    """What would keep the validated settings from serving (their schema problems aside)."""
    config = validation.config
    assert config is not None
    unusable = [] if validation.is_bad(("data_dir",)) else list(_data_dir(config.data_dir))
    if config.store.backend == "postgres" and not validation.is_bad(("store",)):
        data_dir_known = not (unusable or validation.is_bad(("data_dir",)))
        yield from _postgres(config, data_dir_usable=data_dir_known)
    if not validation.is_bad(("data_dir",)):
        yield from unusable
        tls_files = (config.tls.certificate, config.tls.private_key)
        in_data_dir = all(path.is_relative_to(config.data_dir) for path in tls_files)
        if not validation.is_bad(("tls",)) and not (unusable and in_data_dir):
            yield from _tls(config)
        if config.outbound.enabled and not validation.is_bad(("outbound", "enabled")):
            yield from _outbound(validation, data_dir_usable=not unusable)
    if not validation.is_bad(("listeners",)):
        yield from _listeners(config, resolve)
    if not any(validation.is_bad((table,)) for table in ("dns", "checks", "listeners")):
        yield from _resolvers(config)


# --------------------------------------------------------------------------- files


def _data_dir(data_dir: Path) -> Iterator[Finding]:
    where = ("data_dir",)
    if data_dir.is_dir():
        if not os.access(data_dir, os.W_OK | os.X_OK):
            yield Finding(where, f"{data_dir} is not writable")
    elif data_dir.exists():
        yield Finding(where, f"{data_dir} is not a directory")
    else:
        parent = next(p for p in data_dir.parents if p.exists())  # the root exists
        if not parent.is_dir():
            yield Finding(where, f"{data_dir} cannot be created: {parent} is not a directory")
        elif not os.access(parent, os.W_OK | os.X_OK):
            yield Finding(where, f"{data_dir} does not exist, and {parent} is not writable")
        else:
            yield Finding(where, f"{data_dir} does not exist (poczta init creates it)")


def _readable_file(path: Path, key: KeyPath, near: KeyPath = ("tls",)) -> Finding | None:
    if not path.exists():
        return Finding(key, f"{path} does not exist", near=near)
    if not path.is_file():
        return Finding(key, f"{path} is not a file", near=near)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return Finding(key, f"{path} cannot be read: {exc.strerror or exc}", near=near)
    return None


def _tls(config: Config) -> Iterator[Finding]:
    cert, key = config.tls.certificate, config.tls.private_key
    problems = [
        finding
        for finding in (
            _readable_file(cert, ("tls", "certificate")),
            _readable_file(key, ("tls", "private_key")),
        )
        if finding is not None
    ]
    yield from problems
    if problems:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            yield Finding(("tls", "private_key"), f"{key} is not the key of {cert}", near=("tls",))
        else:
            reason = exc.reason or str(exc)
            yield Finding(
                ("tls", "certificate"),
                f"{cert} and {key} are not a PEM certificate and its key ({reason})",
                near=("tls",),
            )
    except OSError as exc:
        yield Finding(("tls", "certificate"), f"cannot load {cert}: {exc}", near=("tls",))


# --------------------------------------------------------------------------- store


def _postgres(config: Config, *, data_dir_usable: bool) -> Iterator[Finding]:
    """Connect to the database as `serve` would, and look at its schema version."""
    import asyncio

    from poczta.store.postgres.connect import check_database
    from poczta.store.postgres.errors import PostgresUnavailable

    password_file = config.data_dir / config.store.password_file
    if config.store.password_file and _unreachable(config, password_file, data_dir_usable):
        return
    try:
        asyncio.run(check_database(config.store, config.data_dir))
    except PostgresUnavailable as exc:
        yield Finding(("store", exc.key), exc.reason, near=("store", "dsn"))


# --------------------------------------------------------------------------- outbound


def _outbound(validation: Validation, *, data_dir_usable: bool) -> Iterator[Finding]:
    """The files `serve` reads when it starts the queue runner, each reported once."""
    config = validation.config
    assert config is not None
    o = config.outbound
    relay_keys = ("relay", "relay_by_domain", "relay_password_file")
    if not any(validation.is_bad(("outbound", key)) for key in relay_keys):
        finding = _relay_credentials(validation, config, data_dir_usable)
        if finding is not None:
            yield finding
    ca_files = (
        ("relay_ca_file", o.relay_ca_file, _relay_context),
        ("mta_sts_ca_file", o.mta_sts_ca_file, policy_context),
    )
    for key, name, load in ca_files:
        path = config.data_dir / name
        where = ("outbound", key)
        if not name or validation.is_bad(where) or _unreachable(config, path, data_dir_usable):
            continue
        finding = _readable_file(path, where, near=("outbound",))
        if finding is None:
            finding = _ca_certificates(path, where, load)
        if finding is not None:
            yield finding


def _unreachable(config: Config, path: Path, data_dir_usable: bool) -> bool:
    """Whether `path` is in a data directory already reported unusable."""
    return not data_dir_usable and path.is_relative_to(config.data_dir)


def _relay_credentials(
    validation: Validation, config: Config, data_dir_usable: bool
) -> Finding | None:
    o = config.outbound
    if not (o.relay or o.relay_by_domain):
        return None  # serve does not read the file
    path = config.data_dir / o.relay_password_file
    where = ("outbound", "relay_password_file")
    near = ("outbound", "relay") if o.relay else ("outbound", "relay_by_domain")
    if _unreachable(config, path, data_dir_usable):
        return None
    named = o.relay_password_file != OutboundSettings().relay_password_file
    if named and not path.exists() and not path.is_symlink():
        return Finding(where, f"{path} does not exist (the smarthost credentials)", near=near)
    try:
        Router(o, config.data_dir)
    except RelayError as exc:
        return Finding(where, str(exc), near=near)
    return None


def _relay_context(cafile: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)  # as `serve` trusts a smarthost


def _ca_certificates(
    path: Path, where: KeyPath, load: Callable[[str | None], ssl.SSLContext]
) -> Finding | None:
    try:
        load(str(path))
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        message = f"{path} holds no PEM CA certificates that load ({reason})"
        return Finding(where, message, near=("outbound",))
    except OSError as exc:
        return Finding(where, f"cannot load {path}: {exc.strerror or exc}", near=("outbound",))
    return None


# --------------------------------------------------------------------------- listeners


def resolve_host(host: str, port: int) -> set[str]:
    """The IP addresses a listener on `host` would bind; empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return set()
    return {str(info[4][0]) for info in infos}


def _overlap(first: set[str], second: set[str]) -> bool:
    """Whether binding both address sets on one port would clash (a wildcard takes all)."""
    wildcard = {"0.0.0.0", "::"}
    return bool(first & second) or bool((first | second) & wildcard)


def _listeners(config: Config, resolve: Resolve) -> Iterator[Finding]:
    bound: list[tuple[str, ListenAddress, set[str]]] = []
    enabled = False
    for service, addresses in config.listeners.items():
        for address in addresses:
            enabled = True
            ips = _ip_literal(address.host) or resolve(address.host, address.port)
            where = ("listeners", service)
            if not ips:
                yield Finding(where, f"{address}: the host name {address.host!r} does not resolve")
                continue
            for other_service, other, other_ips in bound:
                same = other == address  # reported by the loader already
                clash = address.port and other.port == address.port and not same
                if clash and _overlap(ips, other_ips):
                    yield Finding(
                        where,
                        f"{address} overlaps {other} of listeners.{other_service} "
                        "(the same port on the same or a wildcard address)",
                    )
            bound.append((service, address, ips))
    if not enabled:
        yield Finding(("listeners",), "no service listens anywhere: every listener is []")


def _ip_literal(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        return set()


# --------------------------------------------------------------------------- resolvers


def _resolvers(config: Config) -> Iterator[Finding]:
    if config.dns.nameservers or config.dev_mode:
        return
    if not config.checks.enabled or not config.listeners.smtp:
        return  # nothing asks DNS
    import dns.resolver

    try:
        dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        yield Finding(
            ("dns", "nameservers"),
            "empty, and the system has no usable resolv.conf: the checks of incoming mail"
            " need resolvers; list them here",
            near=("dns",),
        )
