"""DKIM keys in the data directory: made, chosen for signing, retired; submitted mail completed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from poczta import dkim_keys
from poczta.dkim_keys import DkimKeyError, KeyStore, Signer
from poczta.dns import ZoneResolver
from poczta.mailauth.dkim import DkimStatus, verify_dkim
from poczta.mailauth.dkim_sign import PrivateKey
from poczta.message.header import split_header
from poczta.smtp.submission import author_address, completed

DAY1 = datetime(2026, 1, 1, tzinfo=UTC)
MESSAGE = b"From: a@sub.example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


def test_keys_are_chosen_newest_first_per_algorithm(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    old = keys.generate("example.org", "old", "rsa", DAY1)
    new = keys.generate("example.org", None, "rsa", DAY1 + timedelta(days=30))
    ed = keys.generate("Example.ORG", None, "ed25519", DAY1)
    assert new.selector == "rsa20260131" and ed.selector == "ed20260101"
    assert [k.selector for k in keys.signing_keys("example.org")] == [new.selector, ed.selector]
    keys.retire("example.org", new.selector)
    assert [k.selector for k in keys.signing_keys("example.org")] == ["old", ed.selector]
    assert keys.find("example.org", new.selector).retired is not None
    assert old.record.startswith("v=DKIM1; k=rsa; p=")


def test_bad_selectors_algorithms_and_duplicates_are_refused(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    keys.generate("example.org", "s1")
    for selector, algorithm in (("s1", "rsa"), ("bad_selector", "rsa"), ("ok", "dsa")):
        with pytest.raises(DkimKeyError):
            keys.generate("example.org", selector, algorithm)
    with pytest.raises(DkimKeyError):
        keys.generate("../etc", "s2")
    assert [k.selector for k in keys.keys("example.org")] == ["s1"]


def test_a_subdomain_is_signed_with_its_parents_key_and_verifies(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    key = keys.generate("example.org", "s1", "ed25519")
    fields = Signer(keys).signatures(MESSAGE, "sub.example.org")
    assert b"d=example.org" in fields
    zone = ZoneResolver()
    zone.add(key.name, "TXT", key.record)
    [result] = asyncio.run(verify_dkim(fields + MESSAGE, zone))
    assert result.status is DkimStatus.PASS
    assert Signer(keys).signatures(MESSAGE, "example.net") == b""


def test_a_new_key_is_seen_without_reopening(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    signer = Signer(keys)
    assert signer.keys_for("example.org") == []
    KeyStore(tmp_path).generate("example.org", "s1", "ed25519")  # as `poczta dkim generate`
    assert [k.selector for k in signer.keys_for("example.org")] == ["s1"]


def test_each_key_is_loaded_once_and_a_rotated_key_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeyStore(tmp_path)
    first = keys.generate("example.org", "s1", "rsa", DAY1)
    loaded: list[str] = []
    real = dkim_keys.load_signing_key

    def counting(pem: str, algorithm: str) -> PrivateKey:
        loaded.append(pem)
        return real(pem, algorithm)

    monkeypatch.setattr(dkim_keys, "load_signing_key", counting)
    signer = Signer(keys)
    zone = ZoneResolver()
    zone.add(first.name, "TXT", first.record)
    for _ in range(3):
        [result] = asyncio.run(
            verify_dkim(signer.signatures(MESSAGE, "example.org") + MESSAGE, zone)
        )
        assert result.status is DkimStatus.PASS
    assert loaded == [first.pem]
    second = KeyStore(tmp_path).generate("example.org", "s2", "rsa", DAY1 + timedelta(days=1))
    KeyStore(tmp_path).retire("example.org", "s1")
    assert b"s=s2" in signer.signatures(MESSAGE, "example.org")
    assert loaded == [first.pem, second.pem]


def test_submission_adds_only_the_missing_date_and_message_id() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    data, header = completed(MESSAGE, split_header(MESSAGE), "mail.example.org", now)
    assert data.startswith(b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\nMessage-ID: <20261201")
    assert data.endswith(MESSAGE) and b"@mail.example.org>\r\n" in data
    assert [f.name for f in header][:2] == [b"Date", b"Message-ID"]
    again, _ = completed(data, header, "mail.example.org", now)
    assert again == data
    assert author_address(header) == "a@sub.example.org"
