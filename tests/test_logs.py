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
