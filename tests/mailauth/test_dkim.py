"""DKIM verification and signing against in-memory DNS zones."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.dns import ZoneResolver
from poczta.mailauth import dkim as dkim_module
from poczta.mailauth.dkim import (
    DkimResult,
    DkimStatus,
    KeyRecordError,
    parse_key_record,
    verify_dkim,
)
from poczta.mailauth.dkim_sign import DkimSignError, dkim_dns_record, generate_dkim_key, sign_dkim

MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: Hello\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHi Bob,\r\n  how are you?\r\n"
)
RSA_PEM, RSA_RECORD = generate_dkim_key("rsa-sha256")
ED_PEM, ED_RECORD = generate_dkim_key("ed25519-sha256")
KEY_NAME = "sel._domainkey.example.com"


def zone_with(record: str | None = RSA_RECORD, name: str = KEY_NAME) -> ZoneResolver:
    zone = ZoneResolver()
    if record is not None:
        zone.add(name, "TXT", record)
    return zone


def sign(message: bytes = MESSAGE, **kwargs: object) -> bytes:
    args: dict[str, object] = {"domain": "example.com", "selector": "sel", "private_key": RSA_PEM}
    args.update(kwargs)
    return sign_dkim(message, **args) + message  # type: ignore[arg-type]


@functools.cache
def signed_once() -> bytes:
    """`sign()`, done once for the property tests: loading the PEM key (RSA key checks)
    costs far more than everything else one of their examples does."""
    return sign()


def check(message: bytes, zone: ZoneResolver, now: float | None = None) -> list[DkimResult]:
    return asyncio.run(verify_dkim(message, zone, now=now))


def one(message: bytes, zone: ZoneResolver, now: float | None = None) -> DkimResult:
    results = check(message, zone, now)
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple", "relaxed/simple"])
@pytest.mark.parametrize(("pem", "record", "algorithm"), [
    (RSA_PEM, RSA_RECORD, "rsa-sha256"), (ED_PEM, ED_RECORD, "ed25519-sha256"),
], ids=["rsa", "ed25519"])  # fmt: skip
def test_round_trip(canon: str, pem: str, record: str, algorithm: str) -> None:
    signed = sign(private_key=pem, algorithm=algorithm, canonicalization=canon)
    result = one(signed, zone_with(record))
    assert result.status == DkimStatus.PASS, result.reason
    assert (result.domain, result.selector, result.algorithm) == ("example.com", "sel", algorithm)
    assert len(result.header_b) == 12 and result.signature_b.startswith(result.header_b)
    assert not result.body_length_limited and not result.testing


def test_unsigned_message_gives_no_results() -> None:
    assert check(MESSAGE, zone_with()) == []


def test_body_and_header_tampering_fail() -> None:
    signed = sign()
    body = one(signed.replace(b"how are", b"who are"), zone_with())
    assert body.status == DkimStatus.FAIL and "body hash" in body.reason
    header = one(signed.replace(b"Subject: Hello", b"Subject: Hullo"), zone_with())
    assert header.status == DkimStatus.FAIL and "signature" in header.reason


def test_relaxed_survives_whitespace_changes_simple_does_not() -> None:
    def rewrap(m: bytes) -> bytes:
        return m.replace(b"Subject: Hello", b"subject:   Hello ").replace(
            b"you?\r\n", b"you? \r\n\r\n"
        )

    assert one(rewrap(sign()), zone_with()).status == DkimStatus.PASS
    simple = sign(canonicalization="simple/simple")
    assert one(rewrap(simple), zone_with()).status == DkimStatus.FAIL


def test_oversigned_from_blocks_a_second_from() -> None:
    signed = sign()
    assert b"h=from:from:" in signed.replace(b"\r\n\t", b"")
    forged = signed.replace(b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice")
    assert one(forged, zone_with()).status == DkimStatus.FAIL


def test_added_from_fails_even_when_signer_did_not_oversign() -> None:
    header = dkimpy.sign(MESSAGE, b"sel", b"example.com", RSA_PEM.encode(),
                         include_headers=[b"from", b"subject"])  # fmt: skip
    assert b"from : subject" in header and one(header + MESSAGE, zone_with()).status == "pass"
    forged = header + b"From: m@evil.test\r\n" + MESSAGE
    assert one(forged, zone_with()).status == DkimStatus.FAIL


def test_body_length_limit_is_reported() -> None:
    signed = dkimpy.sign(MESSAGE, b"sel", b"example.com", RSA_PEM.encode(), length=True)
    exact = one(signed + MESSAGE, zone_with())
    assert exact.status == DkimStatus.PASS and not exact.body_length_limited
    appended = one(signed + MESSAGE + b"Click here!\r\n", zone_with())
    assert appended.status == DkimStatus.PASS and appended.body_length_limited
    shortened = one(signed + MESSAGE.replace(b"  how are you?\r\n", b""), zone_with())
    assert shortened.status == DkimStatus.FAIL


def test_dkimpy_rsa_signature_verifies() -> None:
    signed = dkimpy.sign(MESSAGE, b"sel", b"example.com", RSA_PEM.encode())
    assert one(signed + MESSAGE, zone_with()).status == DkimStatus.PASS


def test_poczta_signature_verifies_with_dkimpy() -> None:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == KEY_NAME.encode() + b"."
        return RSA_RECORD.encode()

    assert dkimpy.verify(sign(), dnsfunc=dnsfunc)


@pytest.mark.parametrize(("failure", "status"), [
    ("servfail", DkimStatus.TEMPERROR), ("timeout", DkimStatus.TEMPERROR),
    ("nxdomain", DkimStatus.PERMERROR), ("nodata", DkimStatus.PERMERROR),
])  # fmt: skip
def test_key_lookup_failures(failure: str, status: DkimStatus) -> None:
    zone = zone_with(None)
    if failure == "servfail":
        zone.servfail.add(KEY_NAME)
    elif failure == "timeout":
        zone.timeout.add(KEY_NAME)
    elif failure == "nodata":
        zone.add(KEY_NAME, "A", "192.0.2.1")
    assert one(sign(), zone).status == status


def rsa_p() -> str:
    return RSA_RECORD.split("p=")[1]


UNUSABLE_RECORDS = [
    ("v=DKIM1; k=rsa; p=", "revoked"),
    ("v=DKIM2; k=rsa; p=" + rsa_p(), "version"),
    ("k=rsa; v=DKIM1; p=" + rsa_p(), "version"),
    ("v=DKIM1; k=dsa; p=" + rsa_p(), "key type"),
    ("v=DKIM1; k=rsa", "lacks p="),
    ("v=DKIM1; k=rsa; s=tlsrpt; p=" + rsa_p(), "not for email"),
    ("v=DKIM1; k=rsa; h=sha1; p=" + rsa_p(), "h="),
    ("v=DKIM1; k=ed25519; p=" + ED_RECORD.split("p=")[1], "does not match"),
    ("v=DKIM1; k=rsa; p=AAAA", "RSA"),
    ("v=DKIM1; k=rsa; p=!!!", "base64"),
    ("v=DKIM1; k=rsa; p=" + rsa_p() + "; p=x", "duplicate"),
]  # fmt: skip


# Named by the reason: the records hold this run's random keys, and test ids must not.
@pytest.mark.parametrize(
    ("record", "reason"), UNUSABLE_RECORDS, ids=[reason for _, reason in UNUSABLE_RECORDS]
)
def test_unusable_key_records_are_permerror(record: str, reason: str) -> None:
    result = one(sign(), zone_with(record))
    assert result.status == DkimStatus.PERMERROR
    assert reason in result.reason


def test_key_record_flags() -> None:
    key = parse_key_record(f"v=DKIM1; t=y:s; s=email:*; h=sha256; p={rsa_p()}".encode())
    assert key.testing and key.strict and key.hashes == ("sha256",) and key.bits == 2048
    testing = one(sign(), zone_with(f"v=DKIM1; t=y; p={rsa_p()}"))
    assert testing.status == DkimStatus.PASS and testing.testing
    strict = zone_with(f"v=DKIM1; t=s; p={rsa_p()}")
    assert one(sign(), strict).status == DkimStatus.PASS
    with pytest.raises(KeyRecordError):
        parse_key_record(b"\xff\xfe")


def test_short_rsa_key_is_permerror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dkim_module, "MIN_RSA_BITS", 4096)
    result = one(sign(), zone_with())
    assert result.status == DkimStatus.PERMERROR and "2048 bits" in result.reason


def test_pkcs1_rsa_public_key_is_accepted() -> None:
    public = serialization.load_pem_private_key(RSA_PEM.encode(), None).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    record = "k=rsa; p=" + base64.b64encode(der).decode()
    assert one(sign(), zone_with(record)).status == DkimStatus.PASS


def test_expiry_uses_the_given_clock() -> None:
    signed = sign(timestamp=1_700_000_000, expire_after=3600)
    assert one(signed, zone_with(), now=1_700_000_100).status == DkimStatus.PASS
    expired = one(signed, zone_with(), now=1_700_010_000)
    assert expired.status == DkimStatus.FAIL and "x=" in expired.reason


def replace_tag(signed: bytes, old: bytes, new: bytes) -> bytes:
    assert old in signed
    return signed.replace(old, new, 1)


@pytest.mark.parametrize(("old", "new", "status"), [
    (b"a=rsa-sha256", b"a=rsa-sha1", DkimStatus.PERMERROR),
    (b"a=rsa-sha256", b"a=rsa-sha512", DkimStatus.NEUTRAL),
    (b"v=1;", b"v=2;", DkimStatus.NEUTRAL),
    (b"v=1;", b"", DkimStatus.NEUTRAL),
    (b"d=example.com;", b"d=exa(mple.com;", DkimStatus.NEUTRAL),
    (b"d=example.com;", b"d=example.com; i=@other.test;", DkimStatus.NEUTRAL),
    (b"c=relaxed/relaxed", b"c=fancy/relaxed", DkimStatus.NEUTRAL),
    (b"s=sel;", b"s=sel; s=sel;", DkimStatus.NEUTRAL),
    (b"s=sel;", b"s=sel; q=https;", DkimStatus.NEUTRAL),
    (b"s=sel;", b"s=sel; l=12x;", DkimStatus.NEUTRAL),
    (b"bh=", b"bh=*", DkimStatus.NEUTRAL),
    (b"h=from:from:", b"h=", DkimStatus.NEUTRAL),
])  # fmt: skip
def test_malformed_signatures(old: bytes, new: bytes, status: DkimStatus) -> None:
    result = one(replace_tag(sign(), old, new), zone_with())
    assert result.status == status, result.reason
    assert result.reason


def test_subdomain_identity_passes() -> None:
    header = sign_dkim(MESSAGE, domain="example.com", selector="sel", private_key=RSA_PEM)
    assert one(header + MESSAGE, zone_with()).identity == "@example.com"


def test_multiple_signatures_each_get_a_result() -> None:
    zone = zone_with()
    zone.add("ed._domainkey.example.net", "TXT", ED_RECORD)
    first = sign()
    both = sign(first, domain="example.net", selector="ed", private_key=ED_PEM,
                algorithm="ed25519-sha256")  # fmt: skip
    broken = both.replace(b"d=example.com", b"d=example.org")
    results = check(broken, zone)
    assert [(r.domain, r.status) for r in results] == [
        ("example.net", DkimStatus.PASS), ("example.org", DkimStatus.PERMERROR),
    ]  # fmt: skip
    assert [r.status for r in check(both, zone)] == [DkimStatus.PASS, DkimStatus.PASS]


def test_signature_limit() -> None:
    signed = MESSAGE
    for _ in range(4):
        signed = sign(signed)
    results = asyncio.run(verify_dkim(signed, zone_with(), max_signatures=2))
    assert [r.status for r in results] == ["pass", "pass", "neutral", "neutral"]
    assert results[3].domain == "example.com"


def test_lf_only_message_verifies() -> None:
    signed = sign().replace(b"\r\n", b"\n")
    assert one(signed, zone_with()).status == DkimStatus.PASS


def test_signing_errors() -> None:
    with pytest.raises(DkimSignError):
        sign_dkim(b"To: x@example.com\r\n\r\nbody\r\n", domain="example.com",
                  selector="sel", private_key=RSA_PEM)  # fmt: skip
    with pytest.raises(DkimSignError):
        sign(private_key=ED_PEM)
    with pytest.raises(DkimSignError):
        sign(private_key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimSignError):
        sign(algorithm="rsa-sha1")
    with pytest.raises(DkimSignError):
        sign(private_key="tooshort", algorithm="ed25519-sha256")
    with pytest.raises(DkimSignError):
        sign(domain="bad domain")
    with pytest.raises(DkimSignError):
        generate_dkim_key("rsa-sha256", bits=512)


def test_signature_lines_are_folded() -> None:
    header = sign_dkim(MESSAGE, domain="example.com", selector="sel", private_key=RSA_PEM)
    lines = header.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:-1])


def test_ed25519_seed_as_raw_bytes() -> None:
    seed = bytes(range(32))
    from cryptography.hazmat.primitives.asymmetric import ed25519

    record = dkim_dns_record(ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key())
    signed = sign(private_key=seed, algorithm="ed25519-sha256")
    assert one(signed, zone_with(record)).status == DkimStatus.PASS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_raises(data: bytes) -> None:
    for message in (data, b"DKIM-Signature:" + data, signed_once()[:200] + data):
        for result in check(message, zone_with()):
            assert isinstance(result.status, DkimStatus)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_garbage_key_records_never_raise_unexpectedly(text: str) -> None:
    with contextlib.suppress(KeyRecordError):
        parse_key_record(text.encode("utf-8"))
    one(signed_once(), zone_with(text))
