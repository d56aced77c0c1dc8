"""Tests for password hashing and policy, address normalisation and the login throttle."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.accounts import (
    LoginThrottle,
    account_key,
    client_key,
    domain_of,
    hash_password,
    is_valid_address,
    needs_rehash,
    normalize_address,
    normalize_domain,
    password_weakness,
    split_address,
    verify_password,
)
from poczta.cli.server import DEV_PASSWORD_ENV, dev_password
from poczta.config import AuthSettings
from tests.clock import Clock

# --------------------------------------------------------------------------- passwords


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse ✓")


def test_hash_is_argon2id(stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=1$")
    assert not needs_rehash(stored)


def test_hash_is_readable_by_the_reference_implementation(stored: str) -> None:
    reference = PasswordHasher()
    assert reference.verify(stored, "correct horse ✓")
    with pytest.raises(Exception, match="not match"):
        reference.verify(stored, "correct horse")


def test_four_lane_hashes_of_earlier_versions_verify_and_need_rehash() -> None:
    legacy = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4).hash("pw ✓")
    assert verify_password(legacy, "pw ✓")
    assert not verify_password(legacy, "pw")
    assert needs_rehash(legacy)


def test_argon2i_hashes_still_verify() -> None:
    from argon2.low_level import Type

    legacy = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.I).hash("pw")
    assert verify_password(legacy, "pw")
    assert not verify_password(legacy, "px")
    assert needs_rehash(legacy)


def test_verify(stored: str) -> None:
    assert verify_password(stored, "correct horse ✓")
    assert not verify_password(stored, "correct horse")
    assert not verify_password(stored, "")


def test_hashes_are_salted(stored: str) -> None:
    assert hash_password("correct horse ✓") != stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "plain text",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$AAAA$BBBB",
        "$2b$12$abcdefghijklmnopqrstuv",
        "$argon2id$v=19$m=65536,t=3,p=4$$",
        "\x00",
    ],
)
def test_verify_never_raises_on_bad_hashes(bad: str) -> None:
    assert verify_password(bad, "anything") is False
    assert needs_rehash(bad) is True


def test_verify_unknown_account_is_false() -> None:
    assert verify_password(None, "poczta: no such account") is False


def test_unencodable_password(stored: str) -> None:
    assert verify_password(stored, "\udc80") is False
    with pytest.raises(ValueError):
        hash_password("\udc80")


def test_needs_rehash_for_weaker_parameters() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert needs_rehash(weak)
    assert verify_password(weak, "pw")  # still accepted, so it can be upgraded at login


# --------------------------------------------------------------------------- password policy


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-pw1", "it is shorter than 10 characters"),
        ("1234567890", "it is one of the most common passwords"),
        ("Password123", "it is one of the most common passwords"),
        ("QWERTYUIOP", "it is one of the most common passwords"),
        ("iloveyou2024", "it is one of the most common passwords"),
        ("１２３４５６７８９０", "it is one of the most common passwords"),  # fullwidth digits
        ("Ann.Smith@Example.test", "it is the address or its local part"),
        ("ANN.SMITH0", None),
        ("ann.smith-in-the-woods", None),
        ("correct horse battery", None),
    ],
)
def test_password_policy(password: str, reason: str | None) -> None:
    assert password_weakness("ann.smith@example.test", password, min_length=10) == reason


def test_password_policy_local_part_and_length_setting() -> None:
    assert password_weakness("longname1@example.test", "LongName1", min_length=8) == (
        "it is the address or its local part"
    )
    assert password_weakness("ann@example.test", "zq8#Lw", min_length=6) is None
    assert password_weakness("ann@example.test", "zq8#Lw", min_length=7) is not None


def test_the_common_password_list_is_bundled_and_says_where_it_comes_from() -> None:
    text = resources.files("poczta").joinpath("data/common-passwords.txt").read_text("utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    entries = [line for line in lines if not line.startswith("#")]
    assert 1000 <= len(entries) <= 10_000
    assert entries[:2] == ["123456", "password"]
    assert all(entry and entry == entry.strip() for entry in entries)


def test_the_generated_dev_password_passes_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEV_PASSWORD_ENV, raising=False)
    password, _ = dev_password(tmp_path)
    assert password_weakness("demo@example.test", password, min_length=10) is None


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("given_address", "expected"),
    [
        ("User@Example.ORG", "user@example.org"),
        ("  bob@example.org ", "bob@example.org"),
        ("a.b+tag@EXAMPLE.org.", "a.b+tag@example.org"),
        ("ola@bücher.example", "ola@xn--bcher-kva.example"),
        ("Żaneta@Poczta.PL", "żaneta@poczta.pl"),
        ('"odd@local"@example.org', '"odd@local"@example.org'),
    ],
)
def test_normalize_address(given_address: str, expected: str) -> None:
    assert normalize_address(given_address) == expected
    assert is_valid_address(given_address)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nobody",
        "@example.org",
        "user@",
        "us er@example.org",
        ".user@example.org",
        "us..er@example.org",
        "user@exa mple.org",
        "user@-bad.org",
        "user@a..org",
        "user@[192.0.2.1]",
        "x" * 65 + "@example.org",
        "user@" + "a" * 64 + ".org",
        "user@" + ".".join(["a" * 60] * 5),
    ],
)
def test_invalid_addresses(bad: str) -> None:
    assert not is_valid_address(bad)
    with pytest.raises(ValueError):
        normalize_address(bad)


def test_split_and_domain_of() -> None:
    assert split_address("a@b@example.org") == ("a@b", "example.org")
    assert domain_of("x@Bücher.Example") == "xn--bcher-kva.example"
    with pytest.raises(ValueError):
        split_address("no-at-sign")
    with pytest.raises(ValueError):
        domain_of("x@")


def test_normalize_domain() -> None:
    assert normalize_domain("EXAMPLE.org.") == "example.org"
    assert normalize_domain("xn--bcher-kva.example") == "xn--bcher-kva.example"
    for bad in ("", ".", "a_b.org", "a..b", "-a.org", "a-.org", "x" * 64 + ".org"):
        with pytest.raises(ValueError):
            normalize_domain(bad)


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_address_helpers_raise_only_value_error(text: str) -> None:
    try:
        result = normalize_address(text)
    except ValueError:
        assert not is_valid_address(text)
    else:
        assert is_valid_address(text)
        assert normalize_address(result) == result  # idempotent


# --------------------------------------------------------------------------- throttle


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kwargs: float) -> LoginThrottle:
    options: dict[str, float] = {
        "window": 300,
        "max_failures_per_ip": 10,
        "max_failures_per_ip_account": 5,
        "failure_delay": 1.0,
        "max_delay": 15.0,
    }
    options.update(kwargs)
    return LoginThrottle(
        window=options["window"],
        max_failures_per_ip=int(options["max_failures_per_ip"]),
        max_failures_per_ip_account=int(options["max_failures_per_ip_account"]),
        failure_delay=options["failure_delay"],
        max_delay=options["max_delay"],
        max_tracked=int(options.get("max_tracked", 100_000)),
        clock=clock,
    )


def test_clean_client_has_no_delay(clock: Clock) -> None:
    throttle = make(clock)
    assert throttle.delay_for("192.0.2.1", "bob@example.org") == 0.0
    assert not throttle.is_blocked("192.0.2.1", "bob@example.org")


def test_delay_grows_and_is_capped(clock: Clock) -> None:
    throttle = make(clock, max_failures_per_ip_account=100, max_failures_per_ip=100)
    delays = []
    for _ in range(8):
        throttle.record_failure("192.0.2.1", "bob@example.org")
        delays.append(throttle.delay_for("192.0.2.1", "bob@example.org"))
    assert delays == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0]


def test_failures_from_one_network_block_it_for_that_account_only(clock: Clock) -> None:
    throttle = make(clock)
    for _ in range(5):
        assert not throttle.is_blocked("192.0.2.1", "bob@example.org")
        throttle.record_failure("192.0.2.1", "bob@example.org")
    assert throttle.is_blocked("192.0.2.1", "Bob@EXAMPLE.org")
    assert not throttle.is_blocked("192.0.2.1", "alice@example.org")
    assert not throttle.is_blocked("198.51.100.7", "bob@example.org")


def test_nobody_can_lock_the_owner_out(clock: Clock) -> None:
    """However many failures others cause for an account, a clean client is not refused."""
    throttle = make(clock)
    for i in range(50):
        throttle.record_failure("203.0.113.9", "bob@example.org")  # one attacker
        throttle.record_failure(f"192.0.2.{i}", "bob@example.org")  # and a botnet
    assert throttle.is_blocked("203.0.113.9", "bob@example.org")
    assert not throttle.is_blocked("198.51.100.7", "bob@example.org")
    assert throttle.failures("198.51.100.7", "bob@example.org") == (0, 0, 32)


def test_account_failures_from_elsewhere_only_slow_answers(clock: Clock) -> None:
    throttle = make(clock)
    for i in range(3):
        throttle.record_failure(f"192.0.2.{i}", "bob@example.org")
    assert throttle.delay_for("198.51.100.7", "bob@example.org") == 4.0
    assert throttle.delay_for("198.51.100.7", "alice@example.org") == 0.0
    for i in range(3, 30):
        throttle.record_failure(f"192.0.2.{i}", "bob@example.org")
    assert throttle.delay_for("198.51.100.7", "bob@example.org") == 15.0  # capped
    assert not throttle.is_blocked("198.51.100.7", "bob@example.org")


def test_ip_limit_blocks_every_account(clock: Clock) -> None:
    throttle = make(clock)
    for i in range(10):
        throttle.record_failure("203.0.113.9", f"user{i}@example.org")
    assert throttle.is_blocked("203.0.113.9", "someone-else@example.org")
    assert not throttle.is_blocked("203.0.113.10", "someone-else@example.org")


def test_failures_expire_after_window(clock: Clock) -> None:
    throttle = make(clock)
    for _ in range(5):
        throttle.record_failure("192.0.2.1", "bob")
    assert throttle.is_blocked("192.0.2.1", "bob")
    clock.now += 299
    assert throttle.is_blocked("192.0.2.1", "bob")
    clock.now += 2
    assert not throttle.is_blocked("192.0.2.1", "bob")
    assert throttle.delay_for("192.0.2.1", "bob") == 0.0


def test_window_slides(clock: Clock) -> None:
    throttle = make(clock)
    for _ in range(3):
        throttle.record_failure("192.0.2.1", "bob")
    clock.now += 200
    for _ in range(2):
        throttle.record_failure("192.0.2.1", "bob")
    assert throttle.failures("192.0.2.1", "bob") == (5, 5, 5)
    clock.now += 150  # the first three have aged out
    assert throttle.failures("192.0.2.1", "bob") == (2, 2, 2)
    assert not throttle.is_blocked("192.0.2.1", "bob")


def test_success_clears_the_networks_failures_for_the_account_only(clock: Clock) -> None:
    throttle = make(clock)
    for _ in range(4):
        throttle.record_failure("192.0.2.1", "bob@example.org")
    throttle.record_failure("192.0.2.1", "carol@example.org")
    throttle.record_success("192.0.2.1", "BOB@example.org")
    assert throttle.failures("192.0.2.1", "bob@example.org") == (5, 0, 4)
    assert throttle.failures("192.0.2.1", "carol@example.org") == (5, 1, 1)
    assert throttle.delay_for("192.0.2.1", "bob@example.org") == 15.0  # the network's count


def test_unknown_accounts_count_the_same(clock: Clock) -> None:
    """The throttle knows nothing of the store; no answer differs for a non-existent user."""
    known, unknown = make(clock), make(clock)
    for _ in range(5):
        known.record_failure("192.0.2.1", "bob@example.org")
        unknown.record_failure("192.0.2.1", "nobody-at-all@example.org")
    assert known.failures("192.0.2.1", "bob@example.org") == unknown.failures(
        "192.0.2.1", "nobody-at-all@example.org"
    )
    assert known.delay_for("192.0.2.1", "bob@example.org") == unknown.delay_for(
        "192.0.2.1", "nobody-at-all@example.org"
    )
    assert known.is_blocked("192.0.2.1", "bob@example.org")
    assert unknown.is_blocked("192.0.2.1", "nobody-at-all@example.org")


def test_ipv6_grouped_by_64(clock: Clock) -> None:
    throttle = make(clock)
    for i in range(10):
        throttle.record_failure(f"2001:db8:1:2::{i + 1:x}", f"u{i}")
    assert throttle.is_blocked("2001:db8:1:2:ffff::1", "fresh")
    assert not throttle.is_blocked("2001:db8:1:3::1", "fresh")
    for _ in range(5):
        throttle.record_failure("2001:db8:9:9::1", "bob")
    assert throttle.is_blocked("2001:db8:9:9:abcd::2", "bob")
    assert client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.5") == "192.0.2.5"
    assert client_key("192.0.2.5") == "192.0.2.5"
    assert client_key("unix:/run/socket") == "unix:/run/socket"


def test_account_key() -> None:
    assert account_key("Bob@Example.ORG") == "bob@example.org"
    assert account_key("  Bob ") == "bob"


def test_expired_entries_are_pruned(clock: Clock) -> None:
    throttle = make(clock)
    for i in range(50):
        throttle.record_failure(f"192.0.2.{i}", f"user{i}")
    assert throttle.tracked() == (50, 50, 50)
    clock.now += 301
    throttle.record_failure("198.51.100.1", "late")
    assert throttle.tracked() == (1, 1, 1)


def test_tracked_keys_are_capped(clock: Clock) -> None:
    throttle = make(clock, max_tracked=100)
    for i in range(1000):
        clock.now += 0.01
        throttle.record_failure(f"10.0.{i // 256}.{i % 256}", f"user{i}")
    assert throttle.tracked() == (100, 100, 100)
    assert throttle.failures("10.0.3.231", "user999") == (1, 1, 1)  # newest kept
    assert throttle.failures("10.0.0.0", "user0") == (0, 0, 0)  # oldest dropped


def test_per_key_history_is_bounded(clock: Clock) -> None:
    throttle = make(clock, max_failures_per_ip=10_000)
    for _ in range(10_000):
        throttle.record_failure("192.0.2.1", "bob")
    # a key keeps at most limit + 1 timestamps (enough to know it is over the limit);
    # an account, which only sets a delay, 32
    assert throttle.failures("192.0.2.1", "bob") == (10_000, 6, 32)
    assert throttle.is_blocked("192.0.2.1", "bob")


def test_from_settings(clock: Clock) -> None:
    auth = AuthSettings(
        throttle_window=60,
        max_failures_per_ip=3,
        max_failures_per_ip_account=2,
        failure_delay=0.5,
        max_failure_delay=0.75,
    )
    throttle = LoginThrottle.from_settings(auth, clock=clock)
    throttle.record_failure("192.0.2.1", "bob")
    assert throttle.delay_for("192.0.2.1", "bob") == 0.5
    throttle.record_failure("192.0.2.1", "bob")
    assert throttle.is_blocked("192.0.2.1", "bob")
    assert throttle.delay_for("192.0.2.1", "bob") == 0.75
    throttle.record_failure("192.0.2.1", "alice")
    assert throttle.is_blocked("192.0.2.1", "carol")
    clock.now += 61
    assert not throttle.is_blocked("192.0.2.1", "bob")


def test_zero_delay_setting(clock: Clock) -> None:
    throttle = make(clock, failure_delay=0.0)
    throttle.record_failure("192.0.2.1", "bob")
    assert throttle.delay_for("192.0.2.1", "bob") == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"max_failures_per_ip": 0},
        {"max_failures_per_ip_account": 0},
        {"failure_delay": -1},
        {"max_delay": -1},
        {"max_tracked": 0},
    ],
)
def test_rejects_bad_parameters(clock: Clock, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make(clock, **kwargs)
