"""What every CLI command shares: finding the config, opening the store, clean one-line errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from poczta.config import Config, ConfigError, load_config
from poczta.store.base import MailStore

T = TypeVar("T")

DEFAULT_DEV_DIR = Path("poczta-dev")
CONFIG_ENV = "POCZTA_CONFIG"
DEFAULT_CONFIG = Path("poczta.toml")
NO_CONFIG = f"no config: give -c FILE or set ${CONFIG_ENV} (there is no ./poczta.toml)"


class Failure(click.ClickException):
    """An operational error: one line ``poczta: …`` on stderr and exit status 1.

    Usage errors (unknown option, missing argument) stay click's, with exit status 2.
    """

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"poczta: {self.format_message()}", err=True)


def config_file_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds -c/--config FILE (default $POCZTA_CONFIG, then ./poczta.toml) to a command."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        help=f"The poczta.toml to use (default: ${CONFIG_ENV}, else ./poczta.toml).",
    )(func)


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds -c/--config and --data-dir (a `poczta dev` data directory) to a command."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Use the dev data directory DIR (made by `poczta dev`) instead of a config file.",
    )(func)
    return config_file_option(func)


def find_config_file(config_path: Path | None) -> Path | None:
    """The config file every command uses: -c FILE or $POCZTA_CONFIG (click passes either
    as `config_path`), else ./poczta.toml when it exists."""
    if config_path is not None:
        return config_path
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def resolve_config(
    config_path: Path | None, data_dir: Path | None = None, *, dev_fallback: bool = True
) -> Config:
    """The settings a command works on: the config file (`find_config_file`), else the dev
    data directory `data_dir`, else ./poczta-dev (unless `dev_fallback` is off)."""
    if data_dir is not None:
        if config_path is not None and not given_by_environment("config_path"):
            raise click.UsageError("give either -c FILE or --data-dir DIR, not both")
        return Config.dev(data_dir.resolve())
    found = find_config_file(config_path)
    if found is not None:
        return load_config(found)
    if dev_fallback and DEFAULT_DEV_DIR.is_dir():
        return Config.dev(DEFAULT_DEV_DIR.resolve())
    hint = "; --data-dir DIR for a dev data directory" if dev_fallback else ""
    raise Failure(NO_CONFIG + hint)


def given_by_environment(parameter: str) -> bool:
    """Whether the current command's `parameter` came from its environment variable."""
    context = click.get_current_context(silent=True)
    if context is None:
        return False
    return context.get_parameter_source(parameter) is ParameterSource.ENVIRONMENT


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


#: What sets a per-user limit back to the configured one on the command line.
DEFAULT = "default"


def limit_value(option: str, text: str) -> int | None:
    """A limit given on the command line: a count (0: no limit), or `default` (None)."""
    if text.lower() == DEFAULT:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    problem = f"{text!r} is not a count (0: no limit) or 'default'"
    raise click.BadParameter(problem, param_hint=option)


def valid_address(value: str) -> str:
    """A user's address as given on the command line, normalised (BadParameter if bad)."""
    from poczta.accounts import normalize_address

    try:
        return normalize_address(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a valid address ({exc})") from exc


def read_password(from_stdin: bool, confirm: bool = True) -> str:
    """A password from stdin (first line) or an interactive hidden prompt; never from argv."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise Failure("the password is empty")
    return password


_FIELD_BREAKS = str.maketrans("\t\r\n", "   ")


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[str] = ()
) -> None:
    """A table on a terminal (long values wrap); elsewhere (a pipe, a file) a header line
    and one line per row, values separated by tabs and never shortened, for grep, cut
    and awk."""
    if not sys.stdout.isatty():
        for row in (columns, *rows):
            click.echo("\t".join(value.translate(_FIELD_BREAKS) for value in row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(
            column, justify="right" if column in right else "left", overflow="fold"
        )  # long values wrap instead of being cut
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def confirm_removal(question: str, force: bool) -> None:
    """Ask `question` on a terminal unless `force`; without a terminal, `force` is required."""
    if force:
        return
    if not sys.stdin.isatty():
        raise Failure(f"{question.rstrip('?')}: not asked without a terminal; give --force")
    if not click.confirm(question, default=False):
        raise Failure("nothing removed")


def fail(message: str) -> None:
    for line in message.splitlines() or [""]:
        click.echo(f"poczta: {line}", err=True)
    sys.exit(1)


def friendly_errors(func: Callable[[], object]) -> None:
    """Run the CLI. Usage errors print click's usage text and exit 2; operational errors
    print ``poczta: …`` on stderr (one line per problem) and exit 1."""
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
        fail("aborted")
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
