"""What every CLI command shares: finding the config, opening the store, clean one-line errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from poczta.config import Config, ConfigError, load_config
from poczta.store.base import MailStore

T = TypeVar("T")

DEFAULT_DEV_DIR = Path("poczta-dev")


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds -c/--config and --data-dir (a `poczta dev` data directory) to a command."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Use the dev data directory DIR (made by `poczta dev`) instead of a config file.",
    )(func)
    func = click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="POCZTA_CONFIG",
        help="The poczta.toml to use (default: $POCZTA_CONFIG, ./poczta.toml, or ./poczta-dev).",
    )(func)
    return func


def resolve_config(config_path: Path | None, data_dir: Path | None) -> Config:
    if config_path is not None:
        return load_config(config_path)
    if data_dir is not None:
        return Config.dev(data_dir.resolve())
    if Path("poczta.toml").is_file():
        return load_config(Path("poczta.toml"))
    if DEFAULT_DEV_DIR.is_dir():
        return Config.dev(DEFAULT_DEV_DIR.resolve())
    raise click.UsageError("no config: give -c FILE, or --data-dir DIR for a dev data directory")


def run_with_store(config: Config, action: Callable[[MailStore], Awaitable[T]]) -> T:
    """Open the configured store, run `action` on it, close it."""
    from poczta.app import open_configured_store

    async def go() -> T:
        store = await open_configured_store(config)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


def read_password(from_stdin: bool, confirm: bool = True) -> str:
    """A password from stdin (first line) or an interactive hidden prompt; never from argv."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise click.UsageError("the password is empty")
    return password


def fail(message: str) -> None:
    click.echo(f"poczta: {message}", err=True)
    sys.exit(1)


def friendly_errors(func: Callable[[], object]) -> None:
    """Run the CLI; known errors become one line on stderr and a non-zero exit status."""
    from poczta.net.tls import TlsError
    from poczta.store.base import StoreError

    try:
        status = func()
        if isinstance(status, int) and status:
            sys.exit(status)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except ConfigError as exc:
        fail(str(exc))
    except (StoreError, TlsError) as exc:
        fail(str(exc) or type(exc).__name__)
    except PermissionError as exc:
        fail(f"permission denied: {exc.filename or exc}")
    except OSError as exc:
        fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
    except KeyboardInterrupt:
        sys.exit(130)
