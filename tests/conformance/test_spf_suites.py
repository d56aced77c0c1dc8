"""Public SPF conformance suites run against poczta.mailauth.spf.

The data is not part of the repository: it is read from ``../shared/conformance/spf``
beside the repository root, and every test here skips when it is absent.

- The OpenSPF RFC 7208 suite must pass in full.
- The OpenSPF RFC 4408 suite runs too; the few cases whose expectation RFC 7208
  changed are skipped with the reason (``RFC4408_SUPERSEDED``).
- The Stalwart mail-auth SPF cases use their own compact format (one record per
  line, repeated keys), read line by line by ``load_stalwart``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from poczta.dns import ZoneResolver, normalize_name
from poczta.mailauth.spf import check_host, check_spf

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the SPF suites")

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITES = REPO_ROOT.parent / "shared" / "conformance" / "spf"
RFC7208 = SUITES / "rfc7208-tests.yml"
RFC4408 = SUITES / "rfc4408-tests.yml"
STALWART = SUITES / "stalwart-mail-auth"
ABSENT = f"SPF conformance data not found at {SUITES} (kept outside the repository)"

# RFC 4408 cases whose expected result RFC 7208 changed; each skipped with the reason.
# Empty today: where the two RFCs differ (type SPF records, invalid domains, mx and ptr
# limits) the RFC 4408 suite already lists the RFC 7208 result among the acceptable ones.
RFC4408_SUPERSEDED: dict[str, str] = {}

_ZONE_TYPES = ("TXT", "A", "AAAA", "MX", "PTR", "CNAME")


@dataclass
class Scenario:
    zonedata: dict[str, list[Any]]


@dataclass
class Case:
    scenario: Scenario
    helo: str
    host: str
    mailfrom: str
    results: list[str]
    explanation: str | None = None


def zone_from_suite(zonedata: dict[str, list[Any]]) -> ZoneResolver:
    """A zone as the OpenSPF suites mean it.

    SPF (type 99) records are also published as TXT unless the name lists TXT records
    of its own (``TXT: NONE`` says "TXT exists but is empty"). ``TIMEOUT`` makes every
    type not listed before it time out; records after it are never seen.
    """
    zone = ZoneResolver()
    for raw_name, records in zonedata.items():
        name = normalize_name(raw_name)
        node = zone.records.setdefault(name, {})
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        generated: list[Any] = []
        seen: set[str] = set()
        timed_out = False
        for record in records:
            if record == "TIMEOUT":
                timed_out = True
                break
            for rtype, value in record.items():
                if value != "NONE":
                    seen.add(rtype)
                if value == "TIMEOUT":
                    zone.timeout_rtypes.add((name, rtype))
                elif rtype == "SPF":
                    if not has_txt:
                        generated.append(value)
                elif value != "NONE":
                    node.setdefault(rtype, []).append(value)
        if timed_out:
            zone.timeout_rtypes.update((name, t) for t in _ZONE_TYPES if t not in seen)
        else:
            node.setdefault("TXT", []).extend(generated) if generated else None
    return zone


def load_openspf(path: Path) -> list[Any]:
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT), id="absent")]
    params = []
    with path.open("rb") as stream:
        for document in yaml.safe_load_all(stream):
            scenario = Scenario(document.get("zonedata") or {})
            for name, test in document["tests"].items():
                result = test["result"]
                case = Case(
                    scenario,
                    helo=str(test.get("helo", "")),
                    host=str(test["host"]),
                    mailfrom=str(test.get("mailfrom", "")),
                    results=list(result) if isinstance(result, list) else [result],
                    explanation=test.get("explanation"),
                )
                params.append(pytest.param(case, id=name))
    return params


def run_openspf(case: Case) -> None:
    zone = zone_from_suite(case.scenario.zonedata)
    outcome = asyncio.run(
        check_spf(case.host, case.mailfrom, case.helo, zone, default_explanation="DEFAULT")
    )
    assert outcome.result in case.results, outcome
    if case.explanation is not None:
        assert outcome.explanation == case.explanation, outcome


@pytest.mark.parametrize("case", load_openspf(RFC7208))
def test_rfc7208_suite(case: Case) -> None:
    run_openspf(case)


@pytest.mark.parametrize("case", load_openspf(RFC4408))
def test_rfc4408_suite(case: Case, request: pytest.FixtureRequest) -> None:
    name = request.node.callspec.id
    if name in RFC4408_SUPERSEDED:
        pytest.skip(RFC4408_SUPERSEDED[name])
    run_openspf(case)


# --- Stalwart mail-auth cases -------------------------------------------------------

_EXISTS_A_ONLY = (
    "exists: asks for A records even for an IPv6 client, so a name with only AAAA "
    "records does not match (RFC 7208 5.7)"
)
# Stalwart cases whose expectation RFC 7208 (and the OpenSPF suite) contradicts.
STALWART_CONTRADICTS_RFC7208 = {
    "all-0-0": "'ip:10.0.0.1' after -all is an unknown mechanism: a syntax error anywhere "
    "in the record is a permerror (RFC 7208 4.6; OpenSPF case detect-errors-anywhere)",
    "basic-4-0": "ten a: lookups of names that do not exist are ten void lookups; RFC 7208 "
    "4.6.4 limits void lookups to two (OpenSPF case void-over-limit)",
    "exists-0-1": _EXISTS_A_ONLY,
    "macro-1-1": _EXISTS_A_ONLY,
}

_LINE = re.compile(r"^(\s*)(-\s+)?([a-z_]+):\s*(.*?)\s*$")


_RECORD_KEYS = frozenset({"spf", "exp", "a", "aaaa", "mx", "ptr"})


@dataclass
class StalwartCase:
    title: str
    records: list[tuple[str, str]]
    domain: str
    sender: str
    ip: str
    expect: str
    explanation: str | None = None


@dataclass
class _StalwartReader:
    records: list[tuple[str, str]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    cases: list[StalwartCase] = field(default_factory=list)
    in_tests: bool = False
    title: str = ""

    def line(self, text: str) -> None:
        match = _LINE.match(text)
        if match is None:
            return
        _, _, key, value = match.groups()
        if key == "records":
            self.in_tests = False
        elif key == "tests":
            self.in_tests = True
        elif key in _RECORD_KEYS:
            self.records.append((key, value))
        elif key == "name" and not self.in_tests:
            self.title = value
        elif key == "expect":
            self.expect(value)
        else:
            self.fields[key] = value

    def expect(self, value: str) -> None:
        result, _, explanation = value.partition(" ")
        sender = self.fields.get("sender", "")
        domain = self.fields.get("domain") or sender.rpartition("@")[2]
        self.cases.append(
            StalwartCase(
                self.title,
                list(self.records),
                domain,
                sender,
                self.fields["ip"],
                result,
                explanation or None,
            )
        )


def load_stalwart() -> list[Any]:
    if not STALWART.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT), id="absent")]
    params = []
    for path in sorted(STALWART.glob("*.yml")):
        for number, document in enumerate(path.read_text().split("\n---")):
            reader = _StalwartReader()
            for text in document.splitlines():
                if not text.lstrip().startswith("#"):
                    reader.line(text)
            for index, case in enumerate(reader.cases):
                params.append(pytest.param(case, id=f"{path.stem}-{number}-{index}"))
    return params


def zone_from_stalwart(records: list[tuple[str, str]]) -> ZoneResolver:
    """``spf``/``exp``: TXT; ``a``/``aaaa``: addresses; ``ptr``: names for an address;
    ``mx``: one exchange per address listed, each with that address. Later ``spf``
    lines for a name replace earlier ones; ``_dns_error`` names fail with SERVFAIL."""
    zone = ZoneResolver()
    spf: dict[str, str] = {}
    for key, value in records:
        name, _, rest = value.partition(" ")
        name = normalize_name(name)
        items = [item.strip() for item in rest.split(",") if item.strip()]
        if key == "spf":
            spf[name] = rest
        elif key == "exp":
            zone.add(name, "TXT", rest)
        elif key in ("a", "aaaa"):
            zone.add(name, key.upper(), *items)
        elif key == "ptr":
            zone.add(ipaddress.ip_address(name).reverse_pointer, "PTR", *items)
        elif key == "mx":
            for number, address in enumerate(items):
                exchange = f"mx{number}.{name}"
                zone.add(name, "MX", (number, exchange))
                family = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
                zone.add(exchange, family, address)
    for name, text in spf.items():
        zone.add(name, "TXT", text)
    zone.servfail.update(name for name in zone.records if name.startswith("_dns_error"))
    zone.servfail.update({"_dns_error.org", "_dns_error.test.org"})
    return zone


@pytest.mark.parametrize("case", load_stalwart())
def test_stalwart_spf(case: StalwartCase, request: pytest.FixtureRequest) -> None:
    name = request.node.callspec.id
    if name in STALWART_CONTRADICTS_RFC7208:
        pytest.skip(STALWART_CONTRADICTS_RFC7208[name])
    zone = zone_from_stalwart(case.records)
    # A case's "domain" is the HELO name; the "HELO identity" cases check that
    # identity, the others the MAIL FROM identity (the sender's domain).
    if "HELO" in case.title:
        helo = check_host(case.ip, case.domain, f"postmaster@{case.domain}", resolver=zone)
        outcome = asyncio.run(helo)
    else:
        outcome = asyncio.run(check_spf(case.ip, case.sender, case.domain, zone))
    assert outcome.result == case.expect, outcome
    if case.explanation is not None:
        assert outcome.explanation == case.explanation, outcome
