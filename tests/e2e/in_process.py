"""The `poczta` command line run inside the test process, as its entry point runs it.

A `poczta ...` subprocess spends over a second starting Python and importing poczta
before it does its work; a test that reads the queue or a mailbox a hundred times
pays that a hundred times. `run_in_process` calls the entry point's own function
(`poczta.cli.main`, umask and error handling included) with its own argv, stdin,
environment, stdout and stderr (click's isolation), and gives back what a subprocess
would: the exit status and both outputs. Tests about the installed executable itself
(its exit status from the shell, its working directory, a terminal) keep running it
as a subprocess: `tests.e2e.harness.run_cli_subprocess` and
`PocztaServer.cli_subprocess`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from click.testing import CliRunner

__all__ = ["as_text", "run_in_process"]


def _exit_status(code: object) -> int:
    """The exit status of a process ending in `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_in_process(
    args: Sequence[str],
    *,
    stdin: str | None = None,
    env: Mapping[str, str | None] = {},
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`poczta ARGS` run by `poczta.cli.main` in this process, in `cwd` if given; `env`
    is added to (None: removed from) the environment for the call, as for a child
    process."""
    from poczta.cli import main

    umask = os.umask(0)
    os.umask(umask)
    argv = sys.argv
    with (
        contextlib.chdir(cwd or os.getcwd()),
        CliRunner().isolation(input=stdin, env=env) as (out, err, _),
    ):
        sys.argv = ["poczta", *args]
        try:
            main()
            status = 0
        except SystemExit as exc:
            status = _exit_status(exc.code)
        except Exception:
            # what the interpreter does with an uncaught exception
            traceback.print_exc(file=sys.stderr)
            status = 1
        finally:
            sys.argv = argv
            os.umask(umask)  # the command line restricts it for the rest of its process
            sys.stdout.flush()
            sys.stderr.flush()
        return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


def as_text(result: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    """`result` decoded as `subprocess.run(text=True)` decodes: the locale's encoding,
    universal newlines."""

    def decode(data: bytes) -> str:
        return io.TextIOWrapper(io.BytesIO(data)).read()

    return subprocess.CompletedProcess(
        result.args, result.returncode, decode(result.stdout), decode(result.stderr)
    )
