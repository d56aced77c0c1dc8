"""The `poczta` command line: init, serve, dev, config, domain, user, alias, mail, queue, dkim,
dns, store, why."""

from __future__ import annotations

import click

from poczta import __version__
from poczta.cli.admin import alias, domain, user
from poczta.cli.common import friendly_errors
from poczta.cli.dkim import dkim
from poczta.cli.dns import dns
from poczta.cli.mail import mail
from poczta.cli.queue import queue
from poczta.cli.server import config, dev, init, serve
from poczta.cli.store import store
from poczta.cli.user_limits import user_limits, user_show
from poczta.cli.user_quota import user_quota
from poczta.cli.why import why
from poczta.process import restrict_umask


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poczta")
def cli() -> None:
    """poczta: an all-in-one, secure mail server."""


for command in (init, serve, dev, config, domain, user, alias, mail, queue, dkim, dns, store, why):
    cli.add_command(command)
user.add_command(user_show)
user.add_command(user_limits)
user.add_command(user_quota)


def main() -> None:
    restrict_umask()  # what any command creates (a database, a key, a config) stays private
    friendly_errors(lambda: cli.main(standalone_mode=False))
