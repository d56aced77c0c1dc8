"""DANE matching (poczta.queue.dane): TLSA records against presented certificate chains."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.dns import TlsaRecord
from poczta.queue.dane import dane_policy, name_matches, tlsa_name, usable, verify_chain
from tests.certificates import NOW, TestCa, self_signed, tlsa_record

MX, DOMAIN = "mx.dane.test", "dane.test"
TLSA_NAME = tlsa_name(MX)

CA = TestCa()
RSA_CA = TestCa("poczta RSA test CA", key_kind="rsa")
IMPOSTOR_CA = TestCa()  # the same name as CA, another key
INTERMEDIATE = CA.intermediate("poczta test intermediate")
LEAF = CA.issue(MX)
SELF_SIGNED = self_signed(MX)


def check(records: list[TlsaRecord], chain: list[bytes], *, now: datetime.datetime = NOW) -> str:
    """'ok: ...' or 'fail: ...', the verdict of a policy made of `records`."""
    result = verify_chain(dane_policy(TLSA_NAME, records, (MX, DOMAIN)), chain, now)
    return f"{'ok' if result.ok else 'fail'}: {result.text}"


def test_the_tlsa_name_of_an_mx_host() -> None:
    assert tlsa_name("MX.Dane.Test.") == "_25._tcp.mx.dane.test"
    assert tlsa_name("mx.dane.test", 2525) == "_2525._tcp.mx.dane.test"


@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (0, 1), (1, 2), (0, 2), (1, 0), (0, 0)])
def test_dane_ee_matches_the_leaf_by_every_selector_and_matching_type(
    selector: int, mtype: int
) -> None:
    record = tlsa_record(SELF_SIGNED.cert, 3, selector, mtype)
    assert check([record], SELF_SIGNED.chain()) == (
        f"ok: the certificate matches TLSA 3 {selector} {mtype}"
    )


def test_dane_ee_ignores_names_and_dates() -> None:
    other_name = self_signed("somewhere.else.test")
    expired = CA.issue(
        MX, not_before=NOW - datetime.timedelta(days=9), not_after=NOW - datetime.timedelta(days=2)
    )
    for leaf in (other_name, expired):
        assert check([tlsa_record(leaf.cert, 3)], leaf.chain()).startswith("ok:")


def test_dane_ee_of_another_certificate_fails() -> None:
    verdict = check([tlsa_record(LEAF.cert, 3)], SELF_SIGNED.chain())
    assert (
        verdict == f"fail: the certificate chain matches none of the 1 TLSA records at {TLSA_NAME}"
    )


def test_dane_ee_matches_the_leaf_only_not_the_issuer() -> None:
    assert check([tlsa_record(CA.cert, 3)], LEAF.chain()).startswith("fail:")


def test_one_matching_record_among_several_is_enough() -> None:
    records = [tlsa_record(LEAF.cert, 3), tlsa_record(SELF_SIGNED.cert, 3, 0, 2)]
    assert check(records, SELF_SIGNED.chain()) == "ok: the certificate matches TLSA 3 0 2"


@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (0, 1), (1, 2), (0, 0)])
def test_dane_ta_anchors_a_chain_signed_by_the_ca(selector: int, mtype: int) -> None:
    record = tlsa_record(CA.cert, 2, selector, mtype)
    assert check([record], LEAF.chain()) == (
        f"ok: the chain is anchored by TLSA 2 {selector} {mtype}"
    )


def test_dane_ta_through_an_intermediate() -> None:
    leaf = INTERMEDIATE.issue(MX)
    assert len(leaf.chain()) == 3
    assert check([tlsa_record(CA.cert, 2)], leaf.chain()).startswith("ok:")
    assert check([tlsa_record(INTERMEDIATE.cert, 2)], leaf.chain()).startswith("ok:")


def test_dane_ta_with_an_rsa_ca() -> None:
    leaf = RSA_CA.issue(MX)
    assert check([tlsa_record(RSA_CA.cert, 2)], leaf.chain()).startswith("ok:")


def test_dane_ta_as_a_bare_key_the_server_does_not_send() -> None:
    leaf_only = LEAF.chain()[:1]
    assert check([tlsa_record(CA.cert, 2, 1, 0)], leaf_only).startswith("ok:")
    # a digest of the key cannot anchor a chain the key's certificate is missing from
    assert check([tlsa_record(CA.cert, 2, 1, 1)], leaf_only).startswith("fail:")


def test_dane_ta_needs_a_leaf_naming_the_mx_or_the_domain() -> None:
    record = tlsa_record(CA.cert, 2)
    assert check([record], CA.issue(DOMAIN).chain()).startswith("ok:")
    assert check([record], CA.issue("*.dane.test").chain()).startswith("ok:")
    assert check([record], CA.issue("*.mx.dane.test").chain()).startswith("fail:")
    assert check([record], CA.issue(common_name=MX).chain()).startswith("ok:")  # CN, no SAN
    verdict = check([record], CA.issue("other.test", common_name=MX).chain())
    assert verdict == (
        "fail: the certificate chain matches none of the 1 TLSA records at "
        f"{TLSA_NAME} (the certificate names none of {MX}, {DOMAIN})"
    )


def test_dane_ta_rejects_a_leaf_the_anchor_did_not_sign() -> None:
    forged = IMPOSTOR_CA.issue(MX)  # issuer name as CA's, signature by another key
    chain = [forged.der, *LEAF.chain()[1:]]
    assert check([tlsa_record(CA.cert, 2)], chain).endswith(
        "(the signature on certificate 0 does not verify)"
    )
    unrelated = TestCa("another CA").issue(MX)
    chain = [unrelated.der, *LEAF.chain()[1:]]
    assert check([tlsa_record(CA.cert, 2)], chain).endswith(
        "(certificate 0 was not issued by the one above it)"
    )


def test_dane_ta_rejects_a_leaf_posing_as_an_intermediate() -> None:
    not_a_ca = CA.issue("intermediate.test")
    below = TestCa.__new__(TestCa)
    below.name, below.key_kind, below.issued = "intermediate.test", "ec", not_a_ca
    leaf = below.issue(MX)
    assert check([tlsa_record(CA.cert, 2)], leaf.chain()).endswith(
        "(certificate 1 is not a CA certificate)"
    )


DAY = datetime.timedelta(days=1)
EXPIRED = CA.issue(MX, not_before=NOW - 9 * DAY, not_after=NOW - 2 * DAY)
NOT_YET_VALID = CA.issue(MX, not_before=NOW + 2 * DAY, not_after=NOW + 9 * DAY)


def _when(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def test_dane_ta_refuses_an_expired_leaf_saying_when_it_expired() -> None:
    after = EXPIRED.cert.not_valid_after_utc
    assert check([tlsa_record(CA.cert, 2)], EXPIRED.chain()) == (
        f"fail: the certificate chain matches none of the 1 TLSA records at {TLSA_NAME}"
        f" (certificate 0 ({MX}) expired on {_when(after)})"
    )


def test_dane_ta_refuses_a_leaf_not_yet_valid() -> None:
    before = NOT_YET_VALID.cert.not_valid_before_utc
    assert check([tlsa_record(CA.cert, 2, 0, 1)], NOT_YET_VALID.chain()).endswith(
        f"(certificate 0 ({MX}) is not valid before {_when(before)})"
    )


def test_dane_ta_checks_the_leaf_against_the_time_it_is_given() -> None:
    record = tlsa_record(CA.cert, 2)
    assert check([record], LEAF.chain()).startswith("ok:")
    later = NOW + 400 * DAY  # after the leaf, before the CA expires
    assert "certificate 0 (mx.dane.test) expired on" in check([record], LEAF.chain(), now=later)
    assert check([record], EXPIRED.chain(), now=NOW - 5 * DAY).startswith("ok:")


def test_dane_ta_refuses_an_expired_intermediate_below_the_anchor() -> None:
    lapsed = TestCa.__new__(TestCa)
    lapsed.name, lapsed.key_kind = "lapsed intermediate", "ec"
    lapsed.issued = CA.issue(
        ca=True,
        common_name="lapsed intermediate",
        not_before=NOW - 9 * DAY,
        not_after=NOW - DAY,
    )
    leaf = lapsed.issue(MX)  # itself within its dates
    assert check([tlsa_record(CA.cert, 2)], leaf.chain()).endswith(
        f"(certificate 1 (lapsed intermediate) expired on {_when(lapsed.cert.not_valid_after_utc)})"
    )
    # the intermediate as the trust anchor: its own dates are not checked
    assert check([tlsa_record(lapsed.cert, 2)], leaf.chain()).startswith("ok:")


def test_a_dane_ta_record_of_the_leaf_itself_still_checks_its_dates() -> None:
    assert check([tlsa_record(LEAF.cert, 2)], LEAF.chain()).startswith("ok:")
    after = EXPIRED.cert.not_valid_after_utc
    assert check([tlsa_record(EXPIRED.cert, 2)], EXPIRED.chain()).endswith(
        f"(certificate 0 ({MX}) expired on {_when(after)})"
    )


def test_dane_ee_ignores_the_dates_a_dane_ta_match_would_refuse() -> None:
    for leaf in (EXPIRED, NOT_YET_VALID):
        records = [tlsa_record(CA.cert, 2), tlsa_record(leaf.cert, 3)]
        assert check(records, leaf.chain()) == "ok: the certificate matches TLSA 3 1 1"
        assert check(records[:1], leaf.chain()).startswith("fail:")


def test_pkix_usages_and_unknown_parameters_are_unusable() -> None:
    good = tlsa_record(LEAF.cert, 3)
    assert usable(good)
    unusable = [
        tlsa_record(LEAF.cert, 0),
        tlsa_record(LEAF.cert, 1),
        TlsaRecord(4, 1, 1, good.data),
        TlsaRecord(3, 2, 1, good.data),
        TlsaRecord(3, 1, 3, good.data),
        TlsaRecord(3, 1, 1, good.data[:31]),  # a SHA-256 digest is 32 octets
        TlsaRecord(3, 1, 2, good.data),  # and SHA-512 64
        TlsaRecord(3, 1, 0, b""),
    ]
    assert not any(usable(r) for r in unusable)
    policy = dane_policy(TLSA_NAME, unusable, (MX,))
    assert not policy.authenticated and policy.unusable == len(unusable)
    result = verify_chain(policy, SELF_SIGNED.chain(), NOW)
    assert result.ok and "TLS unauthenticated" in result.text
    mixed = dane_policy(TLSA_NAME, [*unusable, good], (MX,))
    assert mixed.records == (good,) and mixed.authenticated


def test_no_certificate_or_garbage_fails() -> None:
    record = tlsa_record(LEAF.cert, 3)
    assert check([record], []) == "fail: the server presented no certificate"
    verdict = check([tlsa_record(CA.cert, 2)], [b"\x30\x03\x02\x01\x00"])
    assert verdict.endswith("(a certificate of the chain cannot be parsed)")


@pytest.mark.parametrize(
    ("reference", "presented", "expected"),
    [
        ("mx.dane.test", ["MX.dane.test."], True),
        ("mx.dane.test", ["*.dane.test"], True),
        ("a.mx.dane.test", ["*.dane.test"], False),
        ("dane.test", ["*.dane.test"], False),
        ("mx.dane.test", ["m*.dane.test"], False),
        ("mx.dane.test", ["*.*.test"], False),
        ("mx.dane.test", [], False),
    ],
)
def test_name_matching(reference: str, presented: list[str], expected: bool) -> None:
    assert name_matches(reference, presented) is expected


def test_tlsa_presentation_form() -> None:
    record = TlsaRecord.from_text("3 1 1 0A0b 0c")
    assert record == TlsaRecord(3, 1, 1, b"\x0a\x0b\x0c") and record.to_text() == "3 1 1 0a0b0c"
    with pytest.raises(ValueError):
        TlsaRecord.from_text("3 1")


records = st.builds(
    TlsaRecord,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=80),
)
_REAL = [LEAF.der, CA.issued.der, SELF_SIGNED.der]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A real certificate with a few octets changed or cut short."""
    der = bytearray(draw(st.sampled_from(_REAL)))
    for _ in range(draw(st.integers(1, 4))):
        der[draw(st.integers(0, len(der) - 1))] = draw(st.integers(0, 255))
    return bytes(der[: draw(st.integers(0, len(der)))])


@given(st.lists(records, max_size=4), st.lists(st.binary(max_size=300) | damaged(), max_size=3))
@settings(max_examples=150, deadline=None)
def test_arbitrary_records_and_chains_never_raise(
    tlsa: list[TlsaRecord], chain: list[bytes]
) -> None:
    verdict = check(tlsa, chain)
    assert verdict.startswith(("ok:", "fail:"))
    if verdict.startswith("ok:"):  # garbage authenticates nothing
        assert not dane_policy(TLSA_NAME, tlsa, (MX,)).authenticated


@given(st.text(max_size=40))
def test_arbitrary_presentation_text_parses_or_is_a_value_error(text: str) -> None:
    try:
        record = TlsaRecord.from_text(text)
    except ValueError:
        return
    assert TlsaRecord.from_text(record.to_text()) == record
