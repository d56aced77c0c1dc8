"""The admin's view of accounts and mail through the CLI: whole values in pipes, removals
that ask first, and moving a message out of Junk.

The pipes and the terminal are the installed executable's; the other commands run in
this process (`tests.e2e.in_process`).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from poczta.config import load_config
from poczta.message import parse_message
from poczta.store import DeliveryTarget, open_store
from tests.e2e.conftest import StoreBackend
from tests.e2e.harness import POCZTA, run_cli, run_cli_subprocess

pytestmark = pytest.mark.e2e

LONG_USER = "a-very-long-local-part-that-a-narrow-table-would-cut-short@example.org"
LONG_SENDER = "newsletter-with-a-really-long-sender-address-for-tables@bulk.example.net"
LONG_RECIPIENT = "someone-far-away-with-an-address-longer-than-a-column@remote.example"


@pytest.fixture(scope="module")
def admin_dir(tmp_path_factory: pytest.TempPathFactory, store_backend: StoreBackend) -> Path:
    """A config with example.org, alice, a long-named user and alias, one message in
    alice's Junk (from a long address) and one queued for a long remote address."""
    root = tmp_path_factory.mktemp("admin")
    init = run_cli("init", "--hostname", "mx.example.org", "--data-dir", "data", cwd=root)
    assert init.returncode == 0, init.stderr
    store_backend.use_in(root / "poczta.toml")
    steps = [
        ["domain", "add", "example.org"],
        ["domain", "add", "spare.example"],
        ["alias", "add", f"info-{LONG_USER}", "alice@example.org"],
    ]
    for args in steps:
        assert run_cli(*args, cwd=root).returncode == 0, args
    for user in ("alice@example.org", LONG_USER):
        added = run_cli("user", "add", user, "--password-stdin", cwd=root, stdin="pw-1234567\n")
        assert added.returncode == 0, added.stderr
    asyncio.run(_seed(root / "poczta.toml"))
    return root


async def _seed(config_file: Path) -> None:
    store = await open_store(load_config(config_file))
    try:
        alice = await store.get_user("alice@example.org")
        assert alice is not None
        data = f"From: {LONG_SENDER}\r\nSubject: cheap watches\r\n\r\nhi\r\n".encode()
        when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        await store.deliver(data, parse_message(data), when, [DeliveryTarget(alice.id, "Junk")])
        digest = await store.blobs.put(data)
        await store.enqueue(LONG_SENDER, [LONG_RECIPIENT], digest, len(data))
    finally:
        await store.close()


@pytest.mark.sqlite_only("what a pipe shows, not what the store keeps")
def test_tables_print_whole_values_when_not_on_a_terminal(admin_dir: Path) -> None:
    users = run_cli_subprocess("user", "list", cwd=admin_dir).stdout.splitlines()
    assert users[0] == "address\tcreated"
    assert any(line.startswith(f"{LONG_USER}\t") for line in users)
    aliases = run_cli_subprocess("alias", "list", cwd=admin_dir).stdout.splitlines()
    assert f"info-{LONG_USER}\talice@example.org" in aliases
    mails = run_cli_subprocess(
        "mail", "list", "alice@example.org", "--mailbox", "Junk", cwd=admin_dir
    )
    [header, row] = mails.stdout.splitlines()
    assert header == "uid\tdate\tfrom\tsubject\tsize\tflags"
    assert row.split("\t")[:4] == ["1", "2025-01-02T03:04:05", LONG_SENDER, "cheap watches"]
    queued = run_cli_subprocess("queue", "list", cwd=admin_dir).stdout
    assert f"\t{LONG_SENDER}\t{LONG_RECIPIENT}\t" in queued
    grep = subprocess.run(
        f"{' '.join(POCZTA)} queue list | grep -c {LONG_RECIPIENT}",
        shell=True,
        cwd=admin_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert grep.stdout.strip() == "1"
    assert "…" not in users + aliases + [queued, mails.stdout]


def test_mail_move_takes_a_message_out_of_junk(admin_dir: Path) -> None:
    def listed(mailbox: str) -> list[dict[str, object]]:
        out = run_cli(
            "mail", "list", "alice@example.org", "--mailbox", mailbox, "--json", cwd=admin_dir
        )
        return list(json.loads(out.stdout))

    [junk] = listed("Junk")
    moved = run_cli(
        "mail", "move", "alice@example.org", "Junk", str(junk["uid"]), "INBOX", cwd=admin_dir
    )
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout == "moved uid 1 of Junk to INBOX: uid 1\n"
    assert listed("Junk") == []
    [inbox] = listed("INBOX")
    assert inbox["subject"] == "cheap watches" and inbox["from"] == LONG_SENDER
    shown = run_cli("mail", "show", "alice@example.org", "INBOX", "1", cwd=admin_dir)
    assert "cheap watches" in shown.stdout

    failures = [
        (["alice@example.org", "Junk", "1", "INBOX"], "poczta: no message with uid 1 in Junk"),
        (
            ["alice@example.org", "Nowhere", "1", "INBOX"],
            "poczta: alice@example.org has no mailbox 'Nowhere'",
        ),
        (
            ["alice@example.org", "INBOX", "1", "Nowhere"],
            "poczta: alice@example.org has no mailbox 'Nowhere'",
        ),
        (["nobody@example.org", "INBOX", "1", "Junk"], "poczta: no user nobody@example.org"),
    ]
    for args, expected in failures:
        result = run_cli("mail", "move", *args, cwd=admin_dir)
        assert (result.returncode, result.stderr) == (1, expected + "\n"), args
    assert len(listed("INBOX")) == 1


def on_terminal(args: list[str], answer: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`poczta ARGS` with a terminal as stdin that answers `answer`."""
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "POCZTA_CONFIG"}
    proc = subprocess.Popen(
        [*POCZTA, *args],
        cwd=cwd,
        env=env,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(terminal)
    try:
        os.write(controller, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def users_of(root: Path) -> list[str]:
    return [
        line.split("\t")[0] for line in run_cli("user", "list", cwd=root).stdout.splitlines()[1:]
    ]


def test_removals_that_delete_mail_ask_first(admin_dir: Path) -> None:
    refused = run_cli("user", "remove", "alice@example.org", cwd=admin_dir, stdin="y\n")
    assert refused.returncode == 1
    assert refused.stderr.startswith("poczta: Remove user alice@example.org and its 1 message(s)")
    assert (
        refused.stderr.rstrip().endswith("give --force") and len(refused.stderr.splitlines()) == 1
    )
    assert "alice@example.org" in users_of(admin_dir)

    declined = on_terminal(["user", "remove", "alice@example.org"], "n", admin_dir)
    assert declined.returncode == 1 and "Remove user alice@example.org" in declined.stdout
    assert declined.stderr == "poczta: nothing removed\n"
    assert "alice@example.org" in users_of(admin_dir)
    accepted = on_terminal(["user", "remove", "alice@example.org"], "y", admin_dir)
    assert accepted.returncode == 0 and "removed user alice@example.org" in accepted.stdout
    assert "alice@example.org" not in users_of(admin_dir)

    # an alias deletes no mail: no question
    assert run_cli("alias", "remove", f"info-{LONG_USER}", cwd=admin_dir).returncode == 0
    # nor does a domain without users
    assert run_cli("domain", "remove", "spare.example", cwd=admin_dir).returncode == 0
    with_users = run_cli("domain", "remove", "example.org", cwd=admin_dir)
    assert with_users.returncode == 1 and "with its 1 user(s)" in with_users.stderr
    assert users_of(admin_dir) == [LONG_USER]
    forced = run_cli("domain", "remove", "--yes", "example.org", cwd=admin_dir)
    assert forced.returncode == 0, forced.stderr
    assert users_of(admin_dir) == []
    assert run_cli("domain", "list", cwd=admin_dir).stdout == ""


def test_mailboxes_are_listed_created_and_deleted(admin_dir: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli("mail", "mailbox", *args, cwd=admin_dir)

    assert run_cli("domain", "add", "folders.example", "--no-dkim", cwd=admin_dir).returncode == 0
    added = run_cli(
        "user",
        "add",
        "folders@folders.example",
        "--password-stdin",
        cwd=admin_dir,
        stdin="pw-1234567\n",
    )
    assert added.returncode == 0, added.stderr
    made = cli("create", "folders@folders.example", "Projects/2026", "--special-use", "\\Archive")
    assert made.returncode == 0, made.stderr
    listed = cli("list", "folders@folders.example").stdout.splitlines()
    assert listed[0].split("\t") == ["name", "special_use", "messages", "unseen", "size"]
    rows = {line.split("\t")[0]: line.split("\t") for line in listed[1:]}
    assert rows["Junk"][1] == "\\Junk" and rows["Junk"][2].isdigit()
    assert rows["Projects/2026"][1] == "\\Archive" and "Projects" in rows
    as_json = json.loads(cli("list", "folders@folders.example", "--json").stdout)
    assert {"INBOX", "Projects", "Projects/2026"} <= {box["name"] for box in as_json}
    assert "child mailboxes" in cli("delete", "folders@folders.example", "Projects").stderr
    assert cli("delete", "folders@folders.example", "Projects/2026").returncode == 0
    assert cli("delete", "folders@folders.example", "INBOX").returncode == 1
    bad = cli("create", "folders@folders.example", "../other")
    assert bad.returncode == 1 and "'.' or '..' level" in bad.stderr
