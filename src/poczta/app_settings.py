"""The settings of the parts `poczta serve` runs, built from the config: read timeouts and
SMTP limits of the sessions, the mail-check policy, greylisting, quotas and the default
sending limits of submitted mail."""

from __future__ import annotations

from poczta.config import Config
from poczta.mailauth.greylist import GreylistSettings
from poczta.mailauth.verdict import PolicySettings
from poczta.net.deadlines import ReadTimeouts
from poczta.quota import QuotaLimits, Quotas
from poczta.sending_limits import SendingLimits
from poczta.smtp.server import SmtpLimits
from poczta.store import MailStore

__all__ = [
    "greylist_settings",
    "policy_settings",
    "quotas",
    "read_timeouts",
    "sending_limits",
    "smtp_limits",
]


def read_timeouts(config: Config) -> ReadTimeouts:
    """How long sessions may wait for their clients' input (see `poczta.net.deadlines`)."""
    limits = config.limits
    idle, command = limits.idle_timeout, limits.command_timeout
    return ReadTimeouts(idle, command, limits.min_data_rate, limits.session_timeout)


def smtp_limits(config: Config) -> SmtpLimits:
    limits = config.limits
    return SmtpLimits(
        max_command_line=limits.max_command_line,
        max_data_line=limits.max_data_line,
        max_message_size=limits.max_message_size,
        max_recipients=limits.max_recipients,
        max_errors=limits.max_errors,
        max_commands=limits.max_commands,
        max_auth_failures=limits.max_auth_failures,
        max_header_size=limits.max_header_size,
        max_header_fields=limits.max_header_fields,
    )


def policy_settings(config: Config) -> PolicySettings:
    c = config.checks
    return PolicySettings(
        report_only=c.report_only or config.dev_mode,
        dmarc_reject=c.dmarc_reject,
        dmarc_quarantine=c.dmarc_quarantine,
        dmarc_temperror=c.dmarc_temperror,
        dmarc_bad_from=c.dmarc_bad_from,
        dmarc_permerror=c.dmarc_permerror,
        spf_fail=c.spf_fail,
        spf_softfail=c.spf_softfail,
        spf_temperror=c.spf_temperror,
        spf_permerror=c.spf_permerror,
        dkim_fail=c.dkim_fail,
        dkim_temperror=c.dkim_temperror,
        dnsbl_temperror=c.dnsbl_temperror,
    )


def quotas(config: Config, store: MailStore) -> Quotas:
    """Every user's quota over `store`, with the [quota] defaults and SMTP answer."""
    q = config.quota
    return Quotas(store, QuotaLimits(q.storage, q.messages), permanent=q.over_quota == "permanent")


def sending_limits(config: Config) -> SendingLimits:
    """The default sending limits of submitted mail ([submission])."""
    s = config.submission
    return SendingLimits(s.messages_per_hour, s.recipients_per_message, s.recipients_per_day)


def greylist_settings(config: Config) -> GreylistSettings:
    c = config.checks
    return GreylistSettings(
        enabled=c.greylisting,
        delay=float(c.greylist_delay),
        retry_window=float(c.greylist_retry_window),
        whitelist_period=c.greylist_whitelist_days * 86_400.0,
        whitelist_scope=c.greylist_whitelist_scope,
        exempt_networks=c.greylist_exempt_networks,
        exempt_recipient_domains=c.greylist_exempt_recipient_domains,
        exempt_sender_domains=c.greylist_exempt_sender_domains,
        trusted_domains=c.greylist_trusted_domains,
        auto_whitelist_after=c.greylist_auto_whitelist_after,
    )
