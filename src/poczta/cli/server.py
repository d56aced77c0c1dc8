"""CLI commands that set up and run a server: init, serve, dev, config check."""

from __future__ import annotations

import os
import secrets
from functools import partial
from pathlib import Path

import click

from poczta.cli import install
from poczta.cli.common import (
    DEFAULT_DEV_DIR,
    NO_CONFIG,
    Failure,
    config_file_option,
    config_options,
    find_config_file,
    given_by_environment,
    resolve_config,
    run_with_store,
)
from poczta.cli.dkim import generate_key, publish_hint
from poczta.config import Config, load_config, raise_errors, render_default_config
from poczta.dkim_keys import KeyStore
from poczta.net.tls import write_self_signed
from poczta.privileges import check_user
from poczta.process import claim_data_dir
from poczta.store.base import MailStore

DEV_DOMAIN = "example.test"
DEV_USER = "demo@example.test"
DEV_PASSWORD_ENV = "POCZTA_DEV_PASSWORD"


def ensure_certificate(config: Config) -> bool:
    """Create a self-signed certificate when the configured files are missing."""
    cert, key = config.tls.certificate, config.tls.private_key
    if cert.exists() and key.exists():
        return False
    write_self_signed(cert, key, config.hostname)
    return True


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("poczta.toml"),
    show_default=True,
    help="Where to write the config.",
)
@click.option(
    "--hostname",
    default="localhost",
    show_default=True,
    help="The server's host name (greetings, Received headers, certificate).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("poczta-data"),
    show_default=True,
    help="The data directory.",
)
@click.option("--domain", "domains", multiple=True, help="A local mail domain (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.option(
    "--user",
    default=None,
    help="The system user to run as once the ports are bound (default as root: poczta, "
    "created when absent; '' stays root).",
)
@click.option(
    "--systemd",
    "systemd_unit",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[FILE]",
    help="Also write a systemd unit for this config to FILE (no FILE: print it); with an "
    "existing config, only the unit.",
)
def init(
    config_path: Path,
    hostname: str,
    data_dir: Path,
    domains: tuple[str, ...],
    force: bool,
    user: str | None,
    systemd_unit: str | None,
) -> None:
    """Write a commented config, create the data directory and a self-signed certificate."""
    say = partial(click.echo, err=systemd_unit == "-")  # the unit alone on stdout
    if config_path.exists() and not force:
        if systemd_unit is None:
            raise Failure(f"{config_path} exists (use --force to overwrite)")
        say(install.write_unit(load_config(config_path), systemd_unit))
        return
    data_dir = data_dir.resolve()
    user = install.default_user(user)
    news = [install.prepare_user(user, data_dir)]
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    config_path.write_text(render_default_config(hostname, data_dir, list(domains), user))
    config = load_config(config_path)
    if ensure_certificate(config):
        news.append(f"created a self-signed certificate {config.tls.certificate}")
    run_with_store(config, _created)  # the database exists, owned like the rest of the data dir
    news += [
        f"created a {publish_hint(generate_key(config, d, None, 'rsa'))}" for d in config.domains
    ]
    install.hand_over(config)
    say(f"wrote {config_path}; data directory {data_dir}")
    if config.user and os.geteuid() == 0:
        news.append(f"data directory owned by {config.user}; poczta serve runs as {config.user}")
    if systemd_unit is not None:
        news.append(install.write_unit(config, systemd_unit))
    for line in news:
        if line:
            say(line)
    say(f"next: poczta user add -c {config_path} you@{(domains or ['example.org'])[0]}")


async def _created(_store: MailStore) -> None:
    """Nothing to do: opening the store created it."""


@click.command()
@config_file_option
def serve(config_path: Path | None) -> None:
    """Run the server in the foreground (SIGTERM stops gracefully, SIGHUP reloads TLS)."""
    from poczta import app
    from poczta.logs import setup_logging

    config = resolve_config(config_path, dev_fallback=False)
    setup_logging(config.log.level, config.log.format)
    check_user(config)
    claim_data_dir(config.data_dir, "serve")
    app.run(config)


def dev_password(data_dir: Path) -> tuple[str, str]:
    """The demo password: $POCZTA_DEV_PASSWORD, else the one saved in the data dir, else new."""
    saved = data_dir / "demo-password"
    from_env = os.environ.get(DEV_PASSWORD_ENV)
    if from_env:
        return from_env, f"from ${DEV_PASSWORD_ENV}"
    if saved.is_file():
        return saved.read_text().strip(), f"saved in {saved}"
    password = secrets.token_urlsafe(12)
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password, f"new, saved in {saved}"


async def ensure_dev_account(store: MailStore, password: str, data_dir: Path) -> None:
    from poczta.accounts import hash_password
    from poczta.sasl import derive_scram_credentials

    if not await store.domain_exists(DEV_DOMAIN):
        await store.add_domain(DEV_DOMAIN)
    password_hash = hash_password(password)
    scram = derive_scram_credentials(password).to_string()
    keys = KeyStore(data_dir)
    if not keys.signing_keys(DEV_DOMAIN):
        keys.generate(DEV_DOMAIN, "dev")
    if await store.get_user(DEV_USER) is None:
        await store.add_user(DEV_USER, password_hash, scram)
    else:
        await store.set_password(DEV_USER, password_hash, scram)


def dev_banner(config: Config, password: str, origin: str) -> str:
    ports = {name: addrs[0].port for name, addrs in config.listeners.items() if addrs}
    host = "127.0.0.1"
    lines = [
        "poczta dev is running (dev mode: plaintext AUTH/LOGIN allowed on loopback only)",
        f"  data directory  {config.data_dir}",
        f"  account         {DEV_USER}",
        f"  password        {password}   ({origin})",
        "",
        "  service       port   security",
    ]
    security = {
        "smtp": "STARTTLS optional (MX, no AUTH)",
        "submission": "STARTTLS, AUTH",
        "submissions": "implicit TLS, AUTH",
        "pop3": "STLS",
        "pop3s": "implicit TLS",
        "imap": "STARTTLS",
        "imaps": "implicit TLS",
    }
    for name, port in ports.items():
        lines.append(f"  {name:<13} {port:<6} {security.get(name, '')}")
    submission = ports.get("submission")
    smtp = ports.get("smtp")
    lines += [
        "",
        "Try it:",
        f"  swaks --server {host}:{smtp} --to {DEV_USER} --from someone@elsewhere.test",
        f"  swaks --server {host}:{submission} -tls --auth-user {DEV_USER} "
        f"--auth-password '{password}' --from {DEV_USER} --to {DEV_USER}",
        f"  poczta mail list --data-dir {config.data_dir} {DEV_USER}",
        "",
        "Thunderbird (accept the self-signed certificate when asked):",
        f"  incoming IMAP {host} port {ports.get('imaps', '-')} SSL/TLS, normal password"
        f" (or POP3 port {ports.get('pop3s', '-')})",
        f"  outgoing SMTP {host} port {submission} STARTTLS, normal password, user name {DEV_USER}",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DEV_DIR,
    show_default=True,
    help="The dev data directory.",
)
def dev(data_dir: Path) -> None:
    """Run poczta with embedded dev defaults: example.test, demo user, ports 2525/2587/..."""
    from poczta import app
    from poczta.logs import setup_logging

    data_dir = data_dir.resolve()
    config = Config.dev(data_dir)
    setup_logging(config.log.level, config.log.format)
    claim_data_dir(data_dir, "dev")
    ensure_certificate(config)
    password, origin = dev_password(data_dir)

    async def prepare(store: MailStore) -> None:
        await ensure_dev_account(store, password, data_dir)

    run_with_store(config, prepare)
    app.run(config, on_ready=lambda _app: click.echo(dev_banner(config, password, origin)))


@click.group()
def config() -> None:
    """Check configuration files."""


@config.command("check")
@config_file_option
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def config_check(config_path: Path | None, config_file: Path | None) -> None:
    """Validate a poczta.toml and what it points to (TLS files, data directory, listener
    hosts) without binding; every problem is one line FILE:LINE: KEY: what is wrong."""
    from poczta.config_check import check_config

    if config_file and config_path and not given_by_environment("config_path"):
        raise click.UsageError("give the config file once: as -c FILE or as an argument")
    found = find_config_file(config_file or config_path)
    if found is None:
        raise Failure(NO_CONFIG)
    raise_errors(check_config(found))
    loaded = load_config(found)
    click.echo(f"{found}: ok (hostname {loaded.hostname}, data directory {loaded.data_dir})")


__all__ = ["config", "config_options", "dev", "init", "resolve_config", "serve"]
