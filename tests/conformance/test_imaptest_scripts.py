"""Dovecot's scripted IMAP tests (imaptest) against `poczta serve`, one test per script.

The scripts are read from ``../shared/conformance/imap/imaptest/tests`` beside the
repository root and every test skips when they are absent. The runner is in
``tests/conformance/imaptest``; a script needing a capability poczta does not offer
skips with the capability named. Scripts poczta does not pass yet are marked xfail
with the reason, so a fix shows as XPASS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conformance.imaptest.client import TlsMode
from tests.conformance.imaptest.runner import SCRIPTS_DIR, Outcome, Server, run_path
from tests.conformance.imaptest.script import script_paths
from tests.e2e.harness import PASSWORDS, running_server

pytestmark = pytest.mark.e2e

ABSENT = f"imaptest scripts not found at {SCRIPTS_DIR} (kept outside the repository)"
SCRIPTS = script_paths(SCRIPTS_DIR) if SCRIPTS_DIR.is_dir() else []
USER, USER2 = "alice@example.test", "bob@example.test"
NOT_YET: dict[str, str] = {}


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("imaptest")
    with running_server(root, services=("smtp", "imaps")) as server:
        yield Server(
            "127.0.0.1",
            server.ports["imaps"],
            USER,
            PASSWORDS[USER],
            TlsMode.TLS,
            user2=USER2,
            password2=PASSWORDS[USER2],
            timeout=10.0,
        )


def _param(path: Path) -> object:
    reason = NOT_YET.get(path.name)
    marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
    return pytest.param(path, marks=marks, id=path.name)


@pytest.mark.parametrize(
    "path",
    [_param(p) for p in SCRIPTS] or [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))],
)
def test_script(path: Path, imap_server: Server) -> None:
    result = run_path(path, imap_server)
    if result.outcome is Outcome.SKIP:
        pytest.skip(result.reason)
    assert result.outcome is Outcome.PASS, "\n".join([result.summary(), *result.details])
