"""The settings poczta reads from poczta.toml, as frozen dataclasses that document themselves.

Every setting is a dataclass field whose metadata carries its meaning and its bounds
(see `setting`). The loader in `poczta.config` validates a TOML document against these
fields, and `render_default_config` writes a commented file from the same metadata, so
a new setting needs to be declared in one place only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from poczta.config_meta import meta
from poczta.config_outbound import OutboundSettings

__all__ = [
    "AuthSettings",
    "CheckSettings",
    "Config",
    "ConfigError",
    "DnsSettings",
    "Limits",
    "ListenAddress",
    "Listeners",
    "LogSettings",
    "OutboundSettings",
    "QuotaSettings",
    "SmtpSettings",
    "StoreSettings",
    "SubmissionSettings",
    "TlsSettings",
    "meta",
]


class ConfigError(Exception):
    """A problem in a configuration file; its text is one line: ``FILE:LINE: KEY: problem``."""

    def __init__(
        self, filename: str, message: str, *, key: str | None = None, line: int | None = None
    ) -> None:
        self.filename = filename
        self.line = line
        self.key = key
        self.message = message
        where = filename if line is None else f"{filename}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(" ".join(text.splitlines()))


_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})\Z")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to listen on: an IP address (or host name) and a TCP port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse ``HOST:PORT`` (``[IPv6]:PORT`` for IPv6); ValueError when malformed."""
        host, sep, port_text = text.strip().rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not HOST:PORT")
        if host.startswith("["):
            if not host.endswith("]"):
                raise ValueError(f"{text!r}: unclosed '[' around the IPv6 address")
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
        elif ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, like [::1]:25")
        elif not _HOSTNAME.match(host):
            raise ValueError(f"{text!r}: {host!r} is not an IP address or host name")
        if not port_text.isdigit():
            raise ValueError(f"{text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"{text!r}: port {port} is out of range 0-65535")
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _addrs(*texts: str) -> tuple[ListenAddress, ...]:
    return tuple(ListenAddress.parse(t) for t in texts)


def _listener(default: str, doc: str) -> Any:
    return field(default_factory=lambda: _addrs(default), metadata=meta(doc))


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """[tls]: the certificate all TLS listeners and STARTTLS present."""

    certificate: Path = field(
        default=Path("tls/cert.pem"),
        metadata=meta("PEM certificate chain, relative to data_dir (poczta init makes one)"),
    )
    private_key: Path = field(
        default=Path("tls/key.pem"), metadata=meta("PEM private key, relative to data_dir")
    )
    min_version: str = field(
        default="1.2", metadata=meta("oldest TLS version accepted", choices=("1.2", "1.3"))
    )


@dataclass(frozen=True, slots=True)
class Listeners:
    """[listeners]: where each service listens, a list of "HOST:PORT"; [] turns it off."""

    smtp: tuple[ListenAddress, ...] = _listener("0.0.0.0:25", "SMTP from other servers")
    submission: tuple[ListenAddress, ...] = _listener(
        "0.0.0.0:587", "mail submission by users: STARTTLS, then AUTH"
    )
    submissions: tuple[ListenAddress, ...] = _listener(
        "0.0.0.0:465", "mail submission over implicit TLS"
    )
    pop3: tuple[ListenAddress, ...] = _listener("0.0.0.0:110", "POP3 (STLS offered)")
    pop3s: tuple[ListenAddress, ...] = _listener("0.0.0.0:995", "POP3 over implicit TLS")
    imap: tuple[ListenAddress, ...] = _listener("0.0.0.0:143", "IMAP (STARTTLS offered)")
    imaps: tuple[ListenAddress, ...] = _listener("0.0.0.0:993", "IMAP over implicit TLS")

    def items(self) -> tuple[tuple[str, tuple[ListenAddress, ...]], ...]:
        """(service name, addresses) for every service, in declaration order."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self))


def _count(default: int, doc: str, minimum: int = 1) -> Any:
    return field(default=default, metadata=meta(doc, minimum=minimum))


@dataclass(frozen=True, slots=True)
class Limits:
    """[limits]: bounds on every session; crossing one is answered with an error."""

    max_message_size: int = _count(52_428_800, "largest message accepted, in bytes")
    max_recipients: int = _count(100, "recipients per message")
    max_command_line: int = _count(2048, "longest command line, in bytes", 512)
    max_data_line: int = _count(65536, "longest line of message data, in bytes", 1000)
    max_header_size: int = _count(262_144, "largest header section of a message, in bytes", 1000)
    max_header_fields: int = _count(1000, "header fields of a message", 10)
    max_errors: int = _count(10, "protocol errors before the session is closed")
    max_commands: int = _count(10000, "commands per session")
    max_auth_failures: int = _count(3, "failed logins per session")
    max_connections: int = _count(1000, "open connections per listener")
    max_connections_per_ip: int = _count(20, "open connections per client address")
    shared_lease: int = _count(
        60,
        "seconds a process's POP3 locks and connection counts outlast it when it dies"
        " unseen on another machine (several workers or nodes; renewed every third)",
        3,
    )
    idle_timeout: int = _count(300, "seconds a client may stay silent after a complete command")
    command_timeout: int = _count(60, "seconds a command line may take, from its first byte")
    min_data_rate: int = _count(
        500,
        "least average speed of message data (DATA, BDAT), in bytes per second, with"
        " idle_timeout seconds of slack; 0: no minimum",
        0,
    )
    session_timeout: int = _count(3600, "seconds a whole session may last")


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """[smtp]: SMTP behaviour."""

    bare_line_endings: str = field(
        default="normalize",
        metadata=meta(
            "a lone CR or LF in message data: make it CRLF, or reject the message",
            choices=("normalize", "reject"),
        ),
    )


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    """[submission]: what one user may send, so a stolen password is no spam cannon."""

    messages_per_hour: int = _count(
        200, "messages a user may submit in any hour; then 450 4.7.1 (0: no limit)", 0
    )
    recipients_per_message: int = _count(
        100,
        "recipients of one submitted message; the next gets 452 4.5.3 (0: no limit but"
        " [limits] max_recipients, which also caps this)",
        0,
    )
    recipients_per_day: int = _count(
        1000, "recipients a user may send to in any 24 hours; then 450 4.7.1 (0: no limit)", 0
    )


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """[quota]: what one user's messages may take in all; `poczta user quota` sets a user's own."""

    storage: int = field(
        default=0,
        metadata=meta(
            'total size of a user\'s messages: bytes, or with a binary unit like "500M" or'
            ' "1GiB"; then delivery is refused and APPEND is NO [OVERQUOTA] (0: no limit)',
            minimum=0,
            kind="size",
        ),
    )
    messages: int = _count(0, "number of a user's messages, over all mailboxes (0: no limit)", 0)
    over_quota: str = field(
        default="temporary",
        metadata=meta(
            "SMTP answer for a full mailbox: 452 4.2.2, the sender retries (temporary),"
            " or 552 5.2.2, it bounces at once (permanent)",
            choices=("temporary", "permanent"),
        ),
    )


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """[auth]: login throttling shared by SMTP AUTH, POP3 and IMAP, and the password policy."""

    throttle_window: int = _count(300, "seconds over which failed logins are counted")
    max_failures_per_ip: int = _count(
        10,
        "failures from one address (IPv6: one /64), for any accounts, within the window;"
        " then that address is refused",
    )
    max_failures_per_ip_account: int = _count(
        5,
        "failures from one address (IPv6: one /64) for one account within the window;"
        " then that address is refused for it (failures from elsewhere only slow answers)",
    )
    failure_delay: float = field(
        default=1.0,
        metadata=meta(
            "seconds added before answering a failed login (doubling per failure)", minimum=0
        ),
    )
    max_failure_delay: float = field(
        default=15.0,
        metadata=meta("the longest delay before answering a failed login, in seconds", minimum=0),
    )
    min_password_length: int = _count(
        10, "shortest password `poczta user add` and `poczta user passwd` accept"
    )


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """[store]: where accounts, mailboxes and messages are kept."""

    backend: str = field(
        default="sqlite", metadata=meta("storage backend", choices=("sqlite", "postgres"))
    )
    path: Path = field(
        default=Path("poczta.db"), metadata=meta("sqlite database file, relative to data_dir")
    )
    dsn: str = field(
        default="",
        metadata=meta(
            'postgres URL, "postgresql://USER@HOST:PORT/DATABASE", without the password;'
            " required for postgres"
        ),
    )
    password_file: str = field(
        default="",
        metadata=meta(
            "file holding the postgres password (its first line), relative to data_dir;"
            ' readable by the server\'s user only ("": $PGPASSWORD, or none)'
        ),
    )
    sync: str = field(
        default="filesystem",
        metadata=meta(
            "how a group commit flushes message files: 'filesystem' (one syncfs per batch; "
            "give the data dir its own filesystem) or 'file' (fsync every file and directory)",
            choices=("filesystem", "file"),
        ),
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    """[log]: what is logged and how."""

    level: str = field(
        default="info",
        metadata=meta("lowest level logged", choices=("debug", "info", "warning", "error")),
    )
    format: str = field(
        default="text", metadata=meta("one line per event", choices=("text", "json"))
    )


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """[dns]: the resolvers asked by the mail checks (SPF, DKIM, DMARC, DNSBL) and the queue."""

    nameservers: tuple[str, ...] = field(
        default=(),
        metadata=meta(
            "IP addresses of recursive resolvers; [] uses those of /etc/resolv.conf", kind="ip"
        ),
    )
    port: int = field(
        default=53, metadata=meta("port the resolvers listen on", minimum=1, maximum=65535)
    )
    timeout: float = field(
        default=2.0,
        metadata=meta(
            "seconds to wait for one server's answer; a lookup gives up after twice this",
            minimum=0.05,
            maximum=60,
        ),
    )
    dnssec: str = field(
        default="loopback",
        metadata=meta(
            "whose DNSSEC verdicts (the AD bit) to believe, for DANE: loopback (only when every"
            " nameserver is on this machine), trusted (the nameservers validate and the way to"
            " them is safe), off (none: no DANE)",
            choices=("loopback", "trusted", "off"),
        ),
    )


#: What a check's outcome may do to a message (`poczta.mailauth.verdict.Action`).
ACTIONS: Final = ("accept", "junk", "defer", "reject")


def _action(default: str, doc: str) -> Any:
    return field(default=default, metadata=meta(doc, choices=ACTIONS))


def _seconds(default: int, doc: str, minimum: int = 0) -> Any:
    return field(default=default, metadata=meta(doc, minimum=minimum))


def _names(doc: str, kind: str = "domain") -> Any:
    return field(default=(), metadata=meta(doc, kind=kind))


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """[checks]: protection of mail arriving on the smtp listener; submitted mail is not checked."""

    enabled: bool = field(default=True, metadata=meta("check incoming mail at all"))
    report_only: bool = field(
        default=False,
        metadata=meta("record and log every verdict, but accept all mail (dev mode does this)"),
    )
    deadline: float = field(
        default=20.0,
        metadata=meta(
            "seconds one check (SPF, DKIM, ...) may take; then it is a temperror",
            minimum=0.1,
            maximum=600,
        ),
    )
    dnsbl_ip_zones: tuple[str, ...] = _names(
        'client address blocklists; none by default, usually ["zen.spamhaus.org"]'
    )
    dnsbl_domain_zones: tuple[str, ...] = _names(
        'DNS blocklists of domains (MAIL FROM, HELO, From), e.g. ["dbl.spamhaus.org"]'
    )
    dnsbl_action: str = field(
        default="reject",
        metadata=meta(
            "a listed client or domain: reject (554 at RCPT) or file in Junk",
            choices=("reject", "junk"),
        ),
    )
    dnsbl_temperror: str = _action("accept", "a blocklist that cannot be asked")
    dmarc_reject: str = _action("reject", "DMARC fail under the sender's p=reject")
    dmarc_quarantine: str = _action("junk", "DMARC fail under the sender's p=quarantine")
    dmarc_temperror: str = _action("defer", "DMARC could not be checked for now")
    dmarc_bad_from: str = _action("reject", "From header missing, repeated or not one address")
    dmarc_permerror: str = _action("accept", "the sender's DMARC record is unusable")
    spf_fail: str = _action("junk", "SPF fail (-all)")
    spf_softfail: str = _action("accept", "SPF softfail (~all)")
    spf_temperror: str = _action("accept", "SPF could not be checked for now")
    spf_permerror: str = _action("accept", "the sender's SPF record is broken")
    dkim_fail: str = _action("accept", "signed, but no DKIM signature verifies")
    dkim_temperror: str = _action("accept", "a DKIM key could not be fetched for now")
    greylisting: bool = field(
        default=True, metadata=meta("greylist unknown (client network, sender, recipient) triplets")
    )
    greylist_delay: int = _seconds(300, "seconds before a retry of a new triplet passes")
    greylist_retry_window: int = _seconds(86_400, "seconds within which that retry must come", 1)
    greylist_whitelist_days: int = _seconds(36, "days a passed triplet stays whitelisted")
    greylist_whitelist_scope: str = field(
        default="triplet",
        metadata=meta("what a passed retry whitelists", choices=("triplet", "network")),
    )
    greylist_auto_whitelist_after: int = _seconds(
        5, "passes that whitelist a whole client network (0: never)"
    )
    greylist_exempt_networks: tuple[str, ...] = _names(
        'client networks never greylisted, e.g. ["192.0.2.0/24"]', kind="network"
    )
    greylist_exempt_recipient_domains: tuple[str, ...] = _names(
        "recipient domains never greylisted"
    )
    greylist_exempt_sender_domains: tuple[str, ...] = _names(
        "sender domains never greylisted (the sender address is easily forged)"
    )
    greylist_trusted_domains: tuple[str, ...] = _names(
        "domains whose mail passing SPF skips greylisting"
    )


#: The ports `Config.dev` listens on, on loopback.
DEV_PORTS: Final = {
    "smtp": 2525,
    "submission": 2587,
    "submissions": 2465,
    "pop3": 2110,
    "pop3s": 2995,
    "imap": 2143,
    "imaps": 2993,
}


@dataclass(frozen=True, slots=True)
class Config:
    """Everything poczta.toml says, validated; paths are absolute once loaded."""

    hostname: str = field(
        metadata=meta("the server's name in greetings and Received headers", kind="domain")
    )
    data_dir: Path = field(
        metadata=meta("store, blobs, queue and dev certificate live here; relative to this file")
    )
    domains: tuple[str, ...] = field(
        default=(),
        metadata=meta("local domains, ensured present in the store at start", kind="domain"),
    )
    dev_mode: bool = field(
        default=False,
        metadata=meta("plaintext AUTH/LOGIN allowed on loopback only; checks only report"),
    )
    workers: int = field(
        default=1,
        metadata=meta(
            "processes sharing the ports (0: one per CPU core); per-IP connection limits"
            " and login throttling count per process",
            minimum=0,
            maximum=64,
        ),
    )
    user: str = field(
        default="",
        metadata=meta(
            'system user to run as once the ports are bound, if started as root ("": root)'
        ),
    )
    tls: TlsSettings = field(default_factory=TlsSettings)
    listeners: Listeners = field(default_factory=Listeners)
    limits: Limits = field(default_factory=Limits)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    log: LogSettings = field(default_factory=LogSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    source: Path | None = None

    @classmethod
    def dev(
        cls,
        data_dir: Path,
        *,
        hostname: str = "localhost",
        domains: tuple[str, ...] = ("example.test",),
        ephemeral_ports: bool = False,
    ) -> Config:
        """The embedded development settings: loopback listeners, sqlite in `data_dir`.

        With `ephemeral_ports` every listener asks for port 0 (the system picks one),
        which lets tests run servers side by side.
        """
        root = Path(data_dir).absolute()
        listeners = Listeners(
            **{
                name: (ListenAddress("127.0.0.1", 0 if ephemeral_ports else port),)
                for name, port in DEV_PORTS.items()
            }
        )
        return cls(
            hostname=hostname,
            data_dir=root,
            domains=domains,
            dev_mode=True,
            tls=TlsSettings(certificate=root / "tls/cert.pem", private_key=root / "tls/key.pem"),
            listeners=listeners,
            store=StoreSettings(path=root / "poczta.db"),
            log=LogSettings(level="debug"),
            dns=DnsSettings(timeout=0.5),
            checks=CheckSettings(report_only=True, deadline=2.0),
        )

    def replace(self, **changes: Any) -> Config:
        """A copy with some top-level fields replaced (no validation; see `with_overrides`)."""
        return replace(self, **changes)
