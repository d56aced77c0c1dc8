"""Log lines: the text and JSON forms, the level threshold, other loggers on the same stream."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from poczta import logs


@pytest.fixture
def stream(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], str]]:
    """What was written to stderr (where setup_logging sends the lines)."""
    yield lambda: capsys.readouterr().err
    monkeypatch.setattr(logs, "_DIRECT", None)
    logging.getLogger("poczta").handlers.clear()


def test_text_lines(stream: Callable[[], str]) -> None:
    logs.setup_logging("info", "text")
    logs.log("smtp.accepted", id="Q1", sender="a b@example.test", size=12, empty="")
    logs.log("smtp.detail", level=logging.DEBUG, hidden=True)
    logging.getLogger("poczta.store").warning("disk %s", "slow")
    first, second = stream().splitlines()
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d info smtp\.accepted id=Q1 sender="a b@example\.test"'
        r' size=12 empty=""',
        first,
    )
    assert second.endswith(" warning disk slow")


def test_json_lines_carry_the_process_context(
    stream: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "_CONTEXT", {"worker": 7})
    logs.setup_logging("warning", "json")
    logs.log("smtp.accepted", id="Q1")
    logs.log("smtp.store_failed", level=logging.ERROR, id="Q2", error=OSError("full"))
    [line] = stream().splitlines()
    assert json.loads(line) == {
        "level": "error",
        "event": "smtp.store_failed",
        "id": "Q2",
        "error": "full",
        "worker": 7,
    }


HOSTILE = [
    "evil\r2026-12-01T00:00:00 info smtp.accepted id=FORGED",
    "evil\r2026-12-01T00:00:00\tinfo\tauth.ok",
    "evil\n2026-12-01T00:00:00 info auth.ok user=root",
    "a\x00b\x1b[2Jc\x7fd",
    "nel\x85ls\u2028ps\u2029vt\x0bff\x0cfs\x1c",
    "bidi\u202eoverride",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_text_values_cannot_start_a_line_or_hide_bytes(
    stream: Callable[[], str], value: str
) -> None:
    logs.setup_logging("info", "text")
    logs.log("smtp.connect", helo=value, ip="192.0.2.1")
    out = stream()
    [line] = out.splitlines()  # str.splitlines breaks at CR, NEL, U+2028 and more
    assert line.isprintable() and line.isascii()
    prefix = " info smtp.connect helo="
    assert prefix in line and line.endswith(" ip=192.0.2.1")
    quoted = line.split(prefix, 1)[1].removesuffix(" ip=192.0.2.1")
    assert json.loads(quoted) == value  # escaped, not lost


@pytest.mark.parametrize("value", HOSTILE)
def test_json_values_cannot_start_a_line(stream: Callable[[], str], value: str) -> None:
    logs.setup_logging("info", "json")
    logs.log("smtp.connect", helo=value)
    [line] = stream().splitlines()
    assert line.isprintable()
    assert json.loads(line)["helo"] == value
