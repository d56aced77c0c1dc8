"""Started as root with `user` set: poczta binds its ports, then runs as that user; the
systemd unit `poczta init --systemd` writes."""

from __future__ import annotations

import os
import poplib
import pwd
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import poczta
from poczta.privileges import ensure_system_user
from tests.e2e import harness
from tests.e2e.harness import POCZTA, PocztaServer, free_port
from tests.e2e.test_workers_e2e import wait_until

USER = "pocztatest"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root (CI runs as root)"),
]


CODE_DIRS = (
    "import os, click, poczta\nfor m in (os, poczta, click): print(os.path.dirname(m.__file__))"
)


def runs_as_user(python: list[str], env: dict[str, str]) -> bool:
    """Whether the code `python` runs (started as root) is readable by the test user, as
    poczta needs it to be once it has become that user."""
    where = subprocess.run(
        [python[0], "-c", CODE_DIRS], env=env, capture_output=True, text=True, check=True
    )
    for directory in where.stdout.split():
        readable = subprocess.run(["test", "-r", directory, "-a", "-x", directory], user=USER)
        if readable.returncode != 0:
            return False
    return True


@pytest.fixture(scope="module")
def python() -> tuple[list[str], dict[str, str]]:
    """A Python the test user can read, and its environment: this one, or else the
    system's of the same version with this one's packages (a venv whose Python lives
    under /root cannot be read by any other user)."""
    ensure_system_user(USER, Path("/nonexistent"))
    if runs_as_user([sys.executable], dict(os.environ)):
        return POCZTA, {}
    system = Path(f"/usr/bin/python3.{sys.version_info.minor}")
    packages = [str(Path(poczta.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    env = {"PYTHONPATH": os.pathsep.join(packages)}
    if system.exists() and runs_as_user([str(system)], {**os.environ, **env}):
        return [str(system), "-m", "poczta"], env
    pytest.skip(f"no Python that {USER} can read ({sys.executable} is not)")


@pytest.fixture
def as_user(python: tuple[list[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run poczta with that Python in this test; its command line."""
    command, env = python
    monkeypatch.setattr(harness, "POCZTA", command)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return command


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the test user can reach (pytest's temp root is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="poczta-user-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def init_for_user(base: Path, top_config: str = "") -> PocztaServer:
    """`poczta init --user` (which creates the user when absent), then the test's config."""
    server = PocztaServer(
        base,
        {"smtp": free_port(), "pop3": free_port()},
        top_config=f'user = "{USER}"\n{top_config}',
    )
    server.write_config()
    data = base / "data"
    init = base / "init.toml"
    server.cli("init", "-c", str(init), "--data-dir", str(data), "--user", USER)
    assert f'\nuser = "{USER}"\n' in init.read_text()
    account = pwd.getpwnam(USER)
    assert (data.stat().st_uid, (data / "poczta.db").stat().st_uid) == (account.pw_uid,) * 2
    server.cli("user", "add", "alice@example.test", "--password-stdin", stdin="alice-pass-1\n")
    return server


def ids(pid: int) -> dict[str, str]:
    """The Uid, Gid and Groups lines of /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {key: " ".join(fields[key].split()) for key in ("Uid", "Gid", "Groups")}


def retrieve_all(port: int) -> list[bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    try:
        client.stls(context)
        client.user("alice@example.test")
        client.pass_("alice-pass-1")
        count = len(client.list()[1])
        return [b"\r\n".join(client.retr(n)[1]) for n in range(1, count + 1)]
    finally:
        client.quit()


@pytest.mark.parametrize("workers", [1, 2])
def test_root_binds_then_runs_as_the_user(as_user: list[str], base: Path, workers: int) -> None:
    server = init_for_user(base, f"workers = {workers}\n")
    server.start()
    try:
        assert server.proc is not None
        # the master listens before it forks: wait for each worker, and the committer
        expected = workers + (workers > 1)
        ready = r"listening service=smtp|committer\.listening"
        wait_until(lambda: len(re.findall(ready, server.log_text())) == expected)
        pids = [server.proc.pid]
        pids += [
            int(p)
            for p in re.findall(r"(?:worker|committer)\.started pid=(\d+)", server.log_text())
        ]
        assert len(pids) == (1 if workers == 1 else 1 + workers + 1)
        account = pwd.getpwnam(USER)
        uid, gid = account.pw_uid, account.pw_gid
        wanted = {
            "Uid": f"{uid} {uid} {uid} {uid}",
            "Gid": f"{gid} {gid} {gid} {gid}",
            "Groups": "",
        }
        assert {pid: ids(pid) for pid in pids} == dict.fromkeys(pids, wanted)

        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
            client.sendmail(
                "carol@elsewhere.test", ["alice@example.test"], b"Subject: as user\r\n\r\nhi\r\n"
            )
        [message] = retrieve_all(server.ports["pop3"])
        assert b"Subject: as user" in message
        data = base / "data"
        stored = [p for p in data.rglob("*") if p.is_file()]
        assert {p.name: p.stat().st_uid for p in stored} == {p.name: uid for p in stored}
    finally:
        assert server.stop() == 0
    assert f"security.user user={USER} uid={uid}" in server.log_text()


def test_the_wrong_user_is_refused_and_the_right_one_needs_its_capability(
    as_user: list[str], base: Path
) -> None:
    server = init_for_user(base)

    def serve_as(user: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*as_user, "serve", "-c", str(server.config)],
            user=user,
            cwd=base,
            capture_output=True,
            text=True,
            timeout=60,
        )

    nobody = serve_as("nobody")
    assert nobody.returncode == 1
    assert nobody.stderr == (
        f'poczta: user = "{USER}", but poczta runs as nobody: start it as root'
        f" (it becomes {USER} once its ports are bound) or as {USER}\n"
    )
    server.config.write_text(
        server.config.read_text().replace(f"127.0.0.1:{server.ports['smtp']}", "127.0.0.1:1023")
    )
    itself = serve_as(USER)  # allowed, but a port below 1024 needs root or the capability
    assert itself.returncode == 1
    assert itself.stderr.splitlines()[-1] == (
        "poczta: listeners.smtp: 127.0.0.1:1023: permission denied"
        " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    )

    data = base / "data"
    os.chown(data, 0, 0)  # as if an older poczta had run as root: its files are root's
    taken = server.cli_subprocess("serve", "-c", str(server.config), check=False)
    assert (taken.returncode, taken.stderr.splitlines()[-1]) == (
        1,
        f"poczta: data dir {data} belongs to root, not {USER}: chown -R {USER}: {data}",
    )
    os.chown(data, pwd.getpwnam(USER).pw_uid, 0)
    base.chmod(0o700)  # the user cannot get to its data dir
    closed = server.cli_subprocess("serve", "-c", str(server.config), check=False)
    assert (closed.returncode, closed.stderr.splitlines()[-1]) == (
        1,
        f"poczta: user: poczta now runs as {USER}, who cannot reach the data dir {data}"
        f" (is a directory above it closed to {USER}?)",
    )


def test_init_writes_a_systemd_unit_with_the_real_paths(base: Path) -> None:
    result = subprocess.run(
        [*POCZTA, "init", "--data-dir", "data", "--user", USER, "--systemd"],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    assert (
        f"ExecStart={Path(POCZTA[0]).parent / 'poczta'} serve -c {base / 'poczta.toml'}\n" in unit
    )
    assert f"\nUser={USER}\n" in unit and f"\nReadWritePaths={base / 'data'}\n" in unit
    assert "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n" in unit
    (base / "poczta.service").write_text(unit)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed to check the unit")
    check = subprocess.run(
        ["systemd-analyze", "verify", str(base / "poczta.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (check.returncode, check.stderr) == (0, "")


def test_a_python_the_user_cannot_read_is_one_clear_error(base: Path) -> None:
    if runs_as_user([sys.executable], dict(os.environ)):
        pytest.skip(f"{USER} can read this Python: nothing to refuse")
    server = init_for_user(base)
    result = server.cli_subprocess("serve", "-c", str(server.config), check=False)
    assert result.returncode == 1
    assert re.fullmatch(
        rf"poczta: user: poczta now runs as {USER}, who cannot read /\S+: install poczta"
        rf" and its Python where {USER} can read them",
        result.stderr.splitlines()[-1],
    )
