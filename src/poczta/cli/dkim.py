"""CLI commands for DKIM keys: dkim generate, list, record and retire."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import click

from poczta.cli.common import Failure, config_options, print_table, resolve_config, run_with_store
from poczta.config import Config
from poczta.dkim_keys import DkimKey, DkimKeyError, KeyStore, txt_record_lines
from poczta.privileges import own_tree


@click.group()
def dkim() -> None:
    """Manage the DKIM keys that sign submitted mail."""


def _keys(config: Config) -> KeyStore:
    return KeyStore(config.data_dir)


def generate_key(config: Config, domain: str, selector: str | None, algorithm: str) -> DkimKey:
    """Make a key for a local domain, as `dkim generate` and `domain add` do."""
    domain = domain.lower().rstrip(".")
    if not run_with_store(config, lambda store: store.domain_exists(domain)):
        raise Failure(f"no domain {domain} (add it first: poczta domain add {domain})")
    try:
        key = _keys(config).generate(domain, selector, algorithm)
    except DkimKeyError as exc:
        raise Failure(str(exc)) from exc
    if config.user and os.geteuid() == 0:  # the server, running as its user, must read it
        account = pwd.getpwnam(config.user)
        own_tree(_keys(config).root, account.pw_uid, account.pw_gid)
    return key


def publish_hint(key: DkimKey) -> str:
    return (
        f"{key.algorithm} key {key.selector} for {key.domain}; publish this TXT record"
        f" before sending:\n{txt_record_lines(key)}"
    )


@dkim.command("generate")
@config_options
@click.option("--selector", "-s", help="The selector (default: the algorithm and today's date).")
@click.option(
    "--algorithm",
    "-a",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa (2048 bits) is what every receiver verifies; add ed25519 as a second key.",
)
@click.argument("domain")
def dkim_generate(
    config_path: Path | None,
    data_dir: Path | None,
    domain: str,
    selector: str | None,
    algorithm: str,
) -> None:
    """Create a signing key for DOMAIN and print the DNS record to publish."""
    key = generate_key(resolve_config(config_path, data_dir), domain, selector, algorithm)
    click.echo(f"generated {publish_hint(key)}")


@dkim.command("list")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (with the records).")
@click.argument("domain", required=False)
def dkim_list(
    config_path: Path | None, data_dir: Path | None, domain: str | None, as_json: bool
) -> None:
    """List the DKIM keys (of DOMAIN, or of every domain)."""
    keys = _keys(resolve_config(config_path, data_dir))
    try:
        found = [k for d in ([domain] if domain else keys.domains()) for k in keys.keys(d)]
    except DkimKeyError as exc:
        raise Failure(str(exc)) from exc
    signing = {
        (k.domain, k.selector) for d in {k.domain for k in found} for k in keys.signing_keys(d)
    }
    rows = [
        {
            "domain": k.domain,
            "selector": k.selector,
            "algorithm": k.algorithm,
            "state": "signing"
            if (k.domain, k.selector) in signing
            else ("retired" if k.retired else "standby"),
            "created": k.created.isoformat(timespec="seconds"),
            "retired": k.retired.isoformat(timespec="seconds") if k.retired else "",
            "record": k.record,
        }
        for k in found
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    columns = ("domain", "selector", "algorithm", "state", "created", "retired")
    print_table("DKIM keys", columns, [[row[c] for c in columns] for row in rows])


@dkim.command("record")
@config_options
@click.argument("domain")
@click.argument("selector")
def dkim_record(
    config_path: Path | None, data_dir: Path | None, domain: str, selector: str
) -> None:
    """Print the DNS TXT record of a key."""
    try:
        key = _keys(resolve_config(config_path, data_dir)).find(domain.lower(), selector)
    except DkimKeyError as exc:
        raise Failure(str(exc)) from exc
    click.echo(txt_record_lines(key))


@dkim.command("retire")
@config_options
@click.argument("domain")
@click.argument("selector")
def dkim_retire(
    config_path: Path | None, data_dir: Path | None, domain: str, selector: str
) -> None:
    """Stop signing with a key (keep its DNS record a few days for mail already sent)."""
    keys = _keys(resolve_config(config_path, data_dir))
    try:
        key = keys.retire(domain.lower(), selector)
        left = keys.signing_keys(key.domain)
    except DkimKeyError as exc:
        raise Failure(str(exc)) from exc
    click.echo(f"retired {key.selector} of {key.domain}")
    if not left:
        click.echo(f"warning: {key.domain} now has no signing key; mail from it goes unsigned")
