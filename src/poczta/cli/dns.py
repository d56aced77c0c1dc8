"""CLI command `poczta dns DOMAIN [--check]`: the DNS records to publish, and a check of them."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from poczta.cli.common import Failure, config_options, resolve_config, run_with_store
from poczta.config import Config
from poczta.dkim_keys import DkimKeyError, KeyStore
from poczta.dns_records import DkimPublication, DomainSetup, Finding, check, zone_text
from poczta.dns_tlsa import load_chain
from poczta.store.base import MailStore

_STATES = {
    "ok": "OK",
    "optional": "OPTIONAL",
    "missing": "MISSING",
    "wrong": "WRONG",
    "error": "ERROR",
}


def public_addresses(config: Config) -> tuple[str, ...]:
    """The global addresses the smtp listener is bound to (none for 0.0.0.0 and ::)."""
    found: list[str] = []
    for listen in config.listeners.smtp:
        try:
            address = ipaddress.ip_address(listen.host)
        except ValueError:
            continue
        if address.is_global and str(address) not in found:
            found.append(str(address))
    return tuple(found)


def served_certificate(config: Config) -> tuple[tuple[bytes, ...], str]:
    """The certificate chain of [tls] as DER, leaf first, or () and why it cannot be read."""
    path = config.tls.certificate
    try:
        chain = load_chain(path)
    except (OSError, ValueError) as exc:
        return (), f"cannot read the certificate {path}: {exc}"
    return (chain, "") if chain else ((), f"no certificate in {path}")


def domain_setup(config: Config, domain: str) -> DomainSetup:
    """What poczta knows of a local domain: hostname, DKIM keys not retired, addresses,
    the certificate served."""
    if not run_with_store(config, lambda store: store.domain_exists(domain)):
        raise Failure(f"no domain {domain} (add it first: poczta domain add {domain})")
    try:
        keys = [k for k in KeyStore(config.data_dir).keys(domain) if k.retired is None]
    except DkimKeyError as exc:
        raise Failure(str(exc)) from exc
    dkim = tuple(DkimPublication(k.selector, k.algorithm, k.record) for k in keys)
    hostname = config.hostname.lower().rstrip(".")
    chain, problem = served_certificate(config)
    return DomainSetup(
        domain,
        hostname,
        dkim,
        public_addresses(config),
        certificate=chain,
        certificate_problem=problem,
    )


async def _mailbox_findings(store: MailStore, setup: DomainSetup) -> list[Finding]:
    """Whether the report addresses the records name take mail here."""
    findings = []
    for address in setup.report_addresses:
        found = await store.resolve_recipient(address)
        takes_mail = found is not None and bool(found.local_users or found.remote_addresses)
        state, detail = ("ok", "") if takes_mail else ("missing", "reports to it are lost")
        findings.append(Finding("report address", address, "mailbox", state, (), detail))
    return findings


def _line(finding: Finding) -> str:
    what = f"{finding.purpose} ({finding.rtype} {finding.name})"
    parts = [f"{_STATES[finding.state]:<8} {what}"]
    if finding.found:
        parts.append("found: " + " | ".join(finding.found))
    if finding.detail:
        parts.append(finding.detail)
    return " -- ".join(parts)


def _run_check(config: Config, setup: DomainSetup) -> list[Finding]:
    from poczta.app import build_resolver

    findings = asyncio.run(check(setup, build_resolver(config)))
    return findings + run_with_store(config, lambda store: _mailbox_findings(store, setup))


@click.command("dns")
@config_options
@click.option(
    "--check",
    "checking",
    is_flag=True,
    help="Look every record up through the configured resolver ([dns]) and say what is"
    " missing or wrong; exit status 1 if anything is.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("domain")
def dns(
    config_path: Path | None, data_dir: Path | None, domain: str, checking: bool, as_json: bool
) -> None:
    """Print the DNS records DOMAIN needs to send and receive mail well (MX, SPF, DKIM,
    DMARC, MTA-STS, TLS-RPT, DANE TLSA, the host's addresses) in zone-file form; --check
    looks them up."""
    config = resolve_config(config_path, data_dir)
    setup = domain_setup(config, domain.lower().rstrip("."))
    if not checking:
        if as_json:
            records = [asdict(r) for r in setup.records()]
            body = {"records": records, "mta_sts_policy": setup.mta_sts_policy()}
            click.echo(json.dumps(body, indent=1))
        else:
            click.echo(zone_text(setup), nl=False)
        return
    findings = _run_check(config, setup)
    if as_json:
        click.echo(json.dumps([{**asdict(f), "ok": f.ok} for f in findings], indent=1))
    else:
        for finding in findings:
            click.echo(_line(finding))
    if not all(f.ok for f in findings):
        sys.exit(1)
