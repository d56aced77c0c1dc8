"""Runs every SMTP client transcript in tests/smtp/client_transcripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.smtp.client_transcript import ClientTranscript

TRANSCRIPTS = sorted((Path(__file__).parent / "client_transcripts").glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_client_transcript(path: Path) -> None:
    ClientTranscript(path).run()
