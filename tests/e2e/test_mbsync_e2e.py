"""A two-way sync with mbsync (isync): folders, flags, moves and deletions on either side."""

from __future__ import annotations

import imaplib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import PASSWORDS, PocztaServer, client_tls, running_server
from tests.e2e.test_imap_e2e import deliver

pytestmark = [pytest.mark.e2e, pytest.mark.peer]

ALICE = "alice@example.test"
MBSYNC = shutil.which("mbsync")
imaplib.Commands.setdefault("MOVE", ("SELECTED",))  # RFC 6851; imaplib predates it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocztaServer]:
    if MBSYNC is None:
        pytest.skip("mbsync (Debian package isync) is not installed")
    with running_server(tmp_path_factory.mktemp("mbsync"), services=("smtp", "imaps")) as srv:
        yield srv


def _config(srv: PocztaServer, local: Path) -> Path:
    rc = local.parent / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount poczta\nHost 127.0.0.1\nPort {srv.ports['imaps']}\nUser {ALICE}\n"
        f"Pass {PASSWORDS[ALICE]}\nSSLType IMAPS\n"
        f"CertificateFile {srv.root / 'data' / 'tls' / 'cert.pem'}\n\n"
        "IMAPStore remote\nAccount poczta\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
        "Expunge Both\nSyncState *\n"
    )
    return rc


def _sync(rc: Path) -> None:
    assert MBSYNC is not None
    result = subprocess.run(
        [MBSYNC, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout


def _files(local: Path, folder: str) -> list[Path]:
    base = local / folder
    return sorted(p for sub in ("cur", "new") for p in (base / sub).glob("*") if p.is_file())


def _subjects(files: list[Path]) -> set[str]:
    out = set()
    for path in files:
        for line in path.read_bytes().splitlines():
            if line.lower().startswith(b"subject:"):
                out.add(line.split(b":", 1)[1].strip().decode())
    return out


def _server_subjects(client: imaplib.IMAP4_SSL, folder: str) -> dict[str, bytes]:
    """Subject → FLAGS text of each message of `folder`."""
    count = int(client.select(f'"{folder}"')[1][0])
    if not count:
        return {}
    _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    found = {}
    for item in data:
        if isinstance(item, tuple):
            subject = item[1].split(b":", 1)[1].strip().decode()
            found[subject] = item[0]
    return found


def test_mbsync_two_way(server: PocztaServer, tmp_path: Path) -> None:
    for subject in ("keep and flag", "delete locally", "move on the server"):
        deliver(server, ALICE, subject)
    local = tmp_path / "Mail"
    local.mkdir()
    rc = _config(server, local)
    _sync(rc)
    inbox = _files(local, "INBOX")
    assert _subjects(inbox) >= {"keep and flag", "delete locally", "move on the server"}
    assert (local / "Sent").is_dir() and (local / "Junk").is_dir()

    # Local changes: flag one, delete one, a new folder with a message.
    for path in inbox:
        text = path.read_bytes()
        if b"keep and flag" in text:
            path.rename(path.with_name(path.name.split(":2,")[0] + ":2,FS"))
        elif b"delete locally" in text:
            path.unlink()
    (local / "Projects" / "new").mkdir(parents=True)
    (local / "Projects" / "cur").mkdir()
    (local / "Projects" / "tmp").mkdir()
    (local / "Projects" / "new" / "1.local").write_bytes(
        b"From: alice@example.test\r\nSubject: made locally\r\n\r\nDraft.\r\n"
    )
    # Server changes: a move, and a new folder with a message.
    client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=client_tls())
    client.login(ALICE, PASSWORDS[ALICE])
    client.select("INBOX")
    _, found = client.search(None, 'SUBJECT "move on the server"')
    assert client._simple_command("MOVE", found[0].decode(), "Archive")[0] == "OK"
    client.create("FromServer")
    client.append("FromServer", "", None, b"Subject: made on the server\r\n\r\nHi.\r\n")

    _sync(rc)
    _sync(rc)  # a second run finds nothing to do and duplicates nothing

    server_inbox = _server_subjects(client, "INBOX")
    assert set(server_inbox) == {"keep and flag"}
    assert b"\\Flagged" in server_inbox["keep and flag"]
    assert set(_server_subjects(client, "Projects")) == {"made locally"}
    assert set(_server_subjects(client, "Archive")) == {"move on the server"}
    assert _subjects(_files(local, "INBOX")) == {"keep and flag"}
    assert _subjects(_files(local, "Archive")) == {"move on the server"}
    assert _subjects(_files(local, "FromServer")) == {"made on the server"}
    assert len(_files(local, "Projects")) == 1
    client.logout()
