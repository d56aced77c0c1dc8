"""Runs every SMTP core transcript in tests/smtp/transcripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smtp.smtp_transcript import Transcript

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: Path) -> None:
    Transcript(path).run()
