"""POP3 core transcripts: every file in transcripts/ must replay exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pop3.harness import run_file

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.txt"))


def test_transcripts_exist() -> None:
    assert len(TRANSCRIPTS) >= 20


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    expected, actual = run_file(path)
    assert actual == expected
