"""Where a queued message goes: straight to the recipient domain's MX hosts, or a smarthost.

As Postfix's relayhost and sender_dependent_relayhost_maps: `[outbound] relay` sends
everything through one server, `[outbound.relay_by_domain]` picks one by the sender's
domain (first), and with neither the MX hosts of each recipient domain are used.

Smarthost credentials come from a file in the data directory, one line per smarthost,
``HOST:PORT USER:PASSWORD`` (blank lines and ``#`` comments allowed). Since it holds
passwords, the file must not be readable or writable by group or others, and it is
refused (`RelayError`) when it is.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from poczta.config_schema import ListenAddress, OutboundSettings
from poczta.smtp.client_events import Credentials

__all__ = ["RelayError", "Route", "Router", "load_credentials"]


class RelayError(Exception):
    """The smarthost settings or the credentials file cannot be used."""


@dataclass(frozen=True, slots=True)
class Route:
    """A smarthost to send through: host, port, TLS mode and credentials."""

    host: str
    port: int
    implicit_tls: bool
    credentials: Credentials | None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def load_credentials(path: Path) -> dict[str, Credentials]:
    """The credentials file by "host:port" (lower-cased host); {} when it does not exist."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RelayError(f"{path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RelayError(f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RelayError(f"{path}: cannot read it: {exc}") from None
    found: dict[str, Credentials] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        target, _, secret = line.partition(" ")
        user, colon, password = secret.strip().partition(":")
        if not colon or not user:
            raise RelayError(f"{path}:{number}: expected HOST:PORT USER:PASSWORD")
        try:
            address = ListenAddress.parse(target)
        except ValueError as exc:
            raise RelayError(f"{path}:{number}: {exc}") from None
        found[f"{address.host.lower()}:{address.port}"] = Credentials(user, password)
    return found


class Router:
    """Chooses the smarthost of a message (or None: deliver to the MX hosts)."""

    def __init__(self, settings: OutboundSettings, data_dir: Path) -> None:
        self.implicit_tls = settings.relay_tls == "tls"
        self.default = settings.relay
        self.by_domain: Mapping[str, str] = dict(settings.relay_by_domain)
        needed = bool(self.default or self.by_domain)
        path = data_dir / settings.relay_password_file
        self.credentials = load_credentials(path) if needed else {}

    @property
    def relays(self) -> bool:
        return bool(self.default or self.by_domain)

    def route(self, sender: str) -> Route | None:
        domain = sender.rpartition("@")[2].lower()
        target = self.by_domain.get(domain) or self.default
        if not target:
            return None
        address = ListenAddress.parse(target)
        key = f"{address.host.lower()}:{address.port}"
        return Route(address.host, address.port, self.implicit_tls, self.credentials.get(key))
