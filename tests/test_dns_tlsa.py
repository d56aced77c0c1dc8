"""The TLSA check of `poczta dns --check` (poczta.dns_tlsa): DNSSEC-secure or not, matching
the certificate served or not, over an in-memory zone, with generated certificates."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from poczta.dns import TlsaRecord, ZoneResolver
from poczta.dns_tlsa import TlsaVerdict, judge_tlsa, load_chain, suggested_record
from tests.certificates import NOW, TestCa, self_signed, tlsa_record

HOST, DOMAIN = "mx.example.org", "example.org"
NAME = f"_25._tcp.{HOST}"
CA = TestCa()
SERVED = CA.issue(HOST)
NEXT_KEY = CA.issue(HOST)  # the certificate of a rollover to come, with its own key
STRANGER = self_signed(HOST)


def judge(
    records: list[TlsaRecord | str],
    *,
    chain: list[bytes] | None = None,
    signed: bool = True,
    validating: bool = True,
    now: datetime.datetime | None = None,
    resolver: ZoneResolver | None = None,
) -> TlsaVerdict:
    if resolver is None:
        resolver = ZoneResolver.from_mapping({NAME: {"TLSA": list(records)}} if records else {})
        resolver.add(HOST, "A", "192.0.2.10")
    if signed:
        resolver.secure_zones.add(DOMAIN)
    resolver.validating = validating
    served = SERVED.chain() if chain is None else chain
    return asyncio.run(judge_tlsa(HOST, DOMAIN, served, resolver, now))


def test_the_suggested_record_is_3_1_1_of_the_leaf_and_matches_what_senders_compute() -> None:
    assert suggested_record(SERVED.chain()) == tlsa_record(SERVED.cert, 3, 1, 1)
    assert suggested_record([]) is None


@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (0, 1), (1, 2)])
def test_a_secure_matching_dane_ee_record_is_ok(selector: int, mtype: int) -> None:
    verdict = judge([tlsa_record(SERVED.cert, 3, selector, mtype)])
    assert verdict.name == NAME and verdict.state == "ok"
    assert verdict.detail == f"the certificate served on port 25 matches TLSA 3 {selector} {mtype}"


def test_a_dane_ta_record_of_the_issuing_ca_is_ok_while_the_leaf_is_valid() -> None:
    record = tlsa_record(CA.cert, 2)
    assert judge([record]).state == "ok"
    later = judge([record], now=NOW + datetime.timedelta(days=400))
    assert later.state == "wrong" and "certificate 0 (mx.example.org) expired on" in later.detail


def test_the_next_keys_record_beside_the_current_one_is_ok() -> None:
    records = [tlsa_record(SERVED.cert, 3), tlsa_record(NEXT_KEY.cert, 3)]
    verdict = judge(records)
    assert verdict.state == "ok" and len(verdict.found) == 2
    assert judge(records, chain=NEXT_KEY.chain()).state == "ok"  # after the rollover too


def test_a_record_of_another_key_is_wrong_and_says_what_ours_is() -> None:
    verdict = judge([tlsa_record(STRANGER.cert, 3)])
    assert verdict.state == "wrong"
    assert verdict.found == (tlsa_record(STRANGER.cert, 3).to_text(),)
    ours_spki, ours_cert = tlsa_record(SERVED.cert, 3, 1, 1), tlsa_record(SERVED.cert, 3, 0, 1)
    assert f"this server's certificate is {ours_spki.to_text()}, {ours_cert.to_text()}" in (
        verdict.detail
    )
    assert verdict.detail.endswith(f"senders that check DANE defer all mail to {HOST}")


def test_records_in_an_unsigned_zone_are_wrong_even_when_they_match() -> None:
    verdict = judge([tlsa_record(SERVED.cert, 3)], signed=False)
    assert verdict.state == "wrong"
    assert verdict.detail.startswith("not DNSSEC-secure (no AD bit from the validating resolver)")
    assert "only helps once the zone is DNSSEC-signed" in verdict.detail


def test_a_resolver_not_trusted_to_validate_cannot_tell_security() -> None:
    verdict = judge([tlsa_record(SERVED.cert, 3)], validating=False)
    assert verdict.state == "ok" and "cannot be told" in verdict.detail
    assert judge([tlsa_record(STRANGER.cert, 3)], validating=False).state == "wrong"


def test_only_pkix_records_are_unusable_for_smtp() -> None:
    verdict = judge([tlsa_record(SERVED.cert, 1), tlsa_record(CA.cert, 0)])
    assert verdict.state == "wrong" and verdict.detail.startswith("no usable record")


def test_no_records_are_optional_with_the_record_to_publish() -> None:
    verdict = judge([])
    record = tlsa_record(SERVED.cert, 3).to_text()
    assert verdict.state == "optional" and verdict.found == ()
    assert verdict.detail == (
        "none published: TLSA only helps once the zone is DNSSEC-signed;"
        f" publish {NAME}. IN TLSA {record}"
    )


def test_bogus_and_failed_lookups() -> None:
    resolver = ZoneResolver.from_mapping({NAME: {"TLSA": [tlsa_record(SERVED.cert, 3)]}})
    resolver.bogus.add((NAME, "TLSA"))
    bogus = judge([], resolver=resolver)
    assert bogus.state == "wrong" and "DNSSEC validation failed" in bogus.detail
    resolver = ZoneResolver(servfail={NAME})
    assert judge([], resolver=resolver).state == "error"


def test_the_certificate_file_is_read_leaf_first(tmp_path: Path) -> None:
    SERVED.write(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert load_chain(tmp_path / "cert.pem") == tuple(SERVED.chain())
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError):
        load_chain(tmp_path / "junk.pem")
