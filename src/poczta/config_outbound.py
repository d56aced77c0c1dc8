"""The [outbound] settings: delivery of queued mail to other servers, directly or by a relay.

Declared like the other sections of `poczta.config_schema` (one field per setting, its
meaning and bounds in the metadata), in a module of its own to keep that one short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from poczta.config_meta import meta

__all__ = ["OutboundSettings"]


def _seconds(default: float, doc: str, minimum: float = 0.0) -> Any:
    return field(default=default, metadata=meta(doc, minimum=minimum))


def _count(default: int, doc: str) -> Any:
    return field(default=default, metadata=meta(doc, minimum=1))


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    """[outbound]: delivery of mail for other domains (the queue runner of `poczta serve`)."""

    enabled: bool = field(default=True, metadata=meta("deliver queued mail at all"))
    port: int = field(
        default=25,
        metadata=meta(
            "TCP port of the MX hosts (25; other values for tests)", minimum=1, maximum=65535
        ),
    )
    hostname: str = field(
        default="", metadata=meta('name sent in EHLO ("": the server\'s hostname)')
    )
    retry_first: float = _seconds(
        300.0, "seconds before the first retry after a temporary failure", 0.01
    )
    retry_max: float = _seconds(
        14_400.0, "longest interval between retries, in seconds (doubling up to it)", 0.01
    )
    lifetime: float = _seconds(
        432_000.0, "seconds a message may stay queued before it bounces", 0.01
    )
    delay_warning: float = _seconds(
        14_400.0, "seconds after arrival when the sender is told of the delay, once (0: never)"
    )
    max_connections: int = _count(
        100, "outgoing connections at once, overall (shared out among the workers)"
    )
    max_per_domain: int = _count(
        20, "outgoing connections at once to one destination domain (shared out likewise)"
    )
    connect_timeout: float = _seconds(30.0, "seconds a TCP connect may take", 0.01)
    command_timeout: float = _seconds(
        300.0, "seconds to wait for the greeting and replies to EHLO, STARTTLS, MAIL, RCPT", 0.01
    )
    data_init_timeout: float = _seconds(120.0, "seconds to wait for the reply to DATA", 0.01)
    data_block_timeout: float = _seconds(180.0, "seconds one write of message data may take", 0.01)
    data_end_timeout: float = _seconds(
        600.0, "seconds to wait for the reply to the end of data", 0.01
    )
    claim_time: float = _seconds(
        600.0,
        "seconds a runner's claim on a queue entry lasts, renewed every third of it: how long"
        " the entries of a node that died (another machine sharing the store) wait",
        3.0,
    )
    connection_cache_time: float = _seconds(
        2.0, "seconds an idle connection is kept for the next message to the same host (0: none)"
    )
    loopback_is_local: bool = field(
        default=True,
        metadata=meta("an MX on a loopback address is this machine (mail loops); false for tests"),
    )
    relay: str = field(
        default="",
        metadata=meta(
            'send everything through this smarthost, "HOST:PORT" ("": deliver directly)',
            kind="hostport",
        ),
    )
    relay_tls: str = field(
        default="starttls",
        metadata=meta(
            "TLS to the smarthost: STARTTLS, or TLS from the first byte",
            choices=("starttls", "tls"),
        ),
    )
    relay_password_file: str = field(
        default="relay-passwords",
        metadata=meta(
            'smarthost credentials, lines "HOST:PORT USER:PASSWORD", relative to data_dir;'
            " readable by the server's user only"
        ),
    )
    relay_ca_file: str = field(
        default="",
        metadata=meta(
            'PEM certificates trusted for the smarthost, relative to data_dir ("": the system\'s)'
        ),
    )
    relay_by_domain: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=meta(
            'a smarthost per sender domain, a table: "example.org" = "smtp.example.net:587"',
            kind="relay-table",
        ),
    )
    mta_sts_ca_file: str = field(
        default="",
        metadata=meta(
            "PEM certificates trusted for MTA-STS policy hosts and the MX hosts a policy"
            ' names, relative to data_dir ("": the system\'s; another file for tests)'
        ),
    )
    mta_sts_port: int = field(
        default=443,
        metadata=meta(
            "TCP port of the HTTPS servers of MTA-STS policies (443; other values for tests)",
            minimum=1,
            maximum=65535,
        ),
    )
