"""CLI commands for accounts: domain, user and alias add/list/remove, user passwd."""

from __future__ import annotations

from pathlib import Path

import click

from poczta.accounts import domain_of, normalize_address, password_weakness
from poczta.cli.common import (
    Failure,
    config_options,
    confirm_removal,
    print_table,
    read_password,
    resolve_config,
    run_with_store,
)
from poczta.cli.dkim import generate_key, publish_hint
from poczta.config import Config
from poczta.dkim_keys import KeyStore
from poczta.store.base import MailStore, UserRecord

FORCE_HELP = "Do not ask (required when stdin is not a terminal)."


def _address(value: str) -> str:
    try:
        return normalize_address(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a valid address ({exc})") from exc


@click.group()
def domain() -> None:
    """Manage local mail domains."""


@domain.command("add")
@config_options
@click.option("--no-dkim", is_flag=True, help="Do not create a DKIM signing key for it.")
@click.argument("name")
def domain_add(config_path: Path | None, data_dir: Path | None, name: str, no_dkim: bool) -> None:
    """Add a local domain, with a DKIM key to sign its outgoing mail."""
    name = domain_of(_address(f"postmaster@{name}"))
    config = resolve_config(config_path, data_dir)
    run_with_store(config, lambda s: s.add_domain(name))
    click.echo(f"added domain {name}")
    if not no_dkim and not KeyStore(config.data_dir).signing_keys(name):
        click.echo(f"created a {publish_hint(generate_key(config, name, None, 'rsa'))}")


@domain.command("list")
@config_options
def domain_list(config_path: Path | None, data_dir: Path | None) -> None:
    """List local domains."""
    names = run_with_store(resolve_config(config_path, data_dir), lambda s: s.list_domains())
    for name in names:
        click.echo(name)


@domain.command("remove")
@config_options
@click.option("--force", "--yes", "-y", "force", is_flag=True, help=FORCE_HELP)
@click.argument("name")
def domain_remove(config_path: Path | None, data_dir: Path | None, name: str, force: bool) -> None:
    """Remove a local domain and its aliases; with users, asks first (they and all their
    mail go too)."""
    name = name.lower()

    async def remove(store: MailStore) -> None:
        if not await store.domain_exists(name):
            raise Failure(f"no domain {name}")
        users = await store.list_users(name)
        if users:
            messages = sum([await _message_count(store, u) for u in users])
            question = f"Remove domain {name} with its {len(users)} user(s) and their"
            confirm_removal(f"{question} {messages} message(s)?", force)
        await store.remove_domain(name, force=force or bool(users))

    run_with_store(resolve_config(config_path, data_dir), remove)
    click.echo(f"removed domain {name}")


async def _message_count(store: MailStore, user: UserRecord) -> int:
    return sum(box.messages for box in await store.list_mailboxes(user.id))


@click.group()
def user() -> None:
    """Manage mail users (passwords are prompted or read from stdin, never from arguments).

    A new password needs [auth] min_password_length characters, must not be a common
    password and must not be the address or its local part.
    """


def _new_credentials(config: Config, address: str, password_stdin: bool) -> tuple[str, str]:
    """Read a new password for `address`, check it against the policy and hash it."""
    from poczta.accounts import hash_password
    from poczta.sasl import derive_scram_credentials

    password = read_password(password_stdin)
    weakness = password_weakness(address, password, min_length=config.auth.min_password_length)
    if weakness is not None:
        raise Failure(f"password refused: {weakness}; nothing was changed")
    return hash_password(password), derive_scram_credentials(password).to_string()


@user.command("add")
@config_options
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.argument("address")
def user_add(
    config_path: Path | None, data_dir: Path | None, address: str, password_stdin: bool
) -> None:
    """Add a user; it gets INBOX, Sent, Drafts, Junk, Trash and Archive."""
    address = _address(address)
    config = resolve_config(config_path, data_dir)
    password_hash, scram = _new_credentials(config, address, password_stdin)

    async def add(store: MailStore) -> None:
        if not await store.domain_exists(domain_of(address)):
            raise Failure(f"{domain_of(address)} is not a local domain (poczta domain add first)")
        await store.add_user(address, password_hash, scram)

    run_with_store(config, add)
    click.echo(f"added user {address}")


@user.command("passwd")
@config_options
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.argument("address")
def user_passwd(
    config_path: Path | None, data_dir: Path | None, address: str, password_stdin: bool
) -> None:
    """Change a user's password."""
    address = _address(address)
    config = resolve_config(config_path, data_dir)
    password_hash, scram = _new_credentials(config, address, password_stdin)
    run_with_store(config, lambda s: s.set_password(address, password_hash, scram))
    click.echo(f"changed the password of {address}")


@user.command("list")
@config_options
def user_list(config_path: Path | None, data_dir: Path | None) -> None:
    """List users."""
    users = run_with_store(resolve_config(config_path, data_dir), lambda s: s.list_users())
    print_table("users", ["address", "created"], [[u.address, str(u.created)] for u in users])


@user.command("remove")
@config_options
@click.option("--force", "--yes", "-y", "force", is_flag=True, help=FORCE_HELP)
@click.argument("address")
def user_remove(config_path: Path | None, data_dir: Path | None, address: str, force: bool) -> None:
    """Remove a user and all its mail (asks first)."""
    address = _address(address)

    async def remove(store: MailStore) -> None:
        found = await store.get_user(address)
        if found is None:
            raise Failure(f"no user {address}")
        messages = await _message_count(store, found)
        confirm_removal(f"Remove user {address} and its {messages} message(s)?", force)
        await store.remove_user(address)

    run_with_store(resolve_config(config_path, data_dir), remove)
    click.echo(f"removed user {address}")


@click.group()
def alias() -> None:
    """Manage aliases: `info@example.org` → a user or any address; `@example.org` catches all."""


def _alias_source(value: str) -> str:
    if value.startswith("@"):
        return "@" + domain_of(_address(f"postmaster{value}"))
    return _address(value)


@alias.command("add")
@config_options
@click.argument("source")
@click.argument("target")
def alias_add(config_path: Path | None, data_dir: Path | None, source: str, target: str) -> None:
    """Add an alias SOURCE → TARGET (SOURCE may be `@domain` for a catch-all)."""
    source, target = _alias_source(source), _address(target)
    config = resolve_config(config_path, data_dir)

    async def add(store: MailStore) -> None:
        if not await store.domain_exists(domain_of("x" + source if source[0] == "@" else source)):
            raise Failure(f"the alias {source} is not in a local domain")
        await store.add_alias(source, target)

    run_with_store(config, add)
    click.echo(f"added alias {source} → {target}")


@alias.command("list")
@config_options
def alias_list(config_path: Path | None, data_dir: Path | None) -> None:
    """List aliases."""
    aliases = run_with_store(resolve_config(config_path, data_dir), lambda s: s.list_aliases())
    print_table("aliases", ["source", "target"], [[source, target] for source, target in aliases])


@alias.command("remove")
@config_options
@click.argument("source")
@click.argument("target", required=False)
def alias_remove(
    config_path: Path | None, data_dir: Path | None, source: str, target: str | None
) -> None:
    """Remove an alias (all its targets unless TARGET is given); no mail is deleted, so it
    does not ask."""
    source = _alias_source(source)
    resolved_target = _address(target) if target else None
    run_with_store(
        resolve_config(config_path, data_dir), lambda s: s.remove_alias(source, resolved_target)
    )
    click.echo(f"removed alias {source}")
