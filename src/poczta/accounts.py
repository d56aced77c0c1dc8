"""Account helpers: password hashing and policy, address normalisation, login throttling.

This module is pure: no asyncio, no store, no sockets (it reads nothing but its own list
of common passwords). The store keeps users, domains and aliases; what every protocol
needs to agree on about them lives here.

Passwords
    `hash_password` produces an argon2id PHC string with t=3 and m=64 MiB (the work and
    memory of RFC 9106's second recommended profile) in one lane, 16-byte salt, 32-byte
    tag. Hashing and verifying go through libsodium (PyNaCl): its vectorised argon2 is
    about twice as fast as the portable reference code in argon2-cffi, and an attacker's
    cost does not depend on which implementation the defender runs, so the speed is pure
    gain. libsodium computes lanes one after the other, so one lane costs the same as four
    and leaves the other cores to other logins. Older hashes (four lanes, made by earlier
    versions) still verify, and `needs_rehash` says when to replace them.
    argon2-cffi remains for reading parameters and for argon2i/argon2d strings.
    Verifying one costs tens of milliseconds of CPU and 64 MiB of memory, so callers in an
    event loop must run `verify_password` and `hash_password` in a worker thread
    (``await asyncio.to_thread(verify_password, stored, given)``). `verify_password`
    never raises for a malformed stored hash; it answers False. Passing ``None`` as the
    stored hash (the user does not exist) still spends the time of one verification,
    so a login's duration does not reveal whether the account exists.
    `password_weakness` is the policy for new passwords: a minimum length, none of the
    common passwords bundled in ``poczta/data/common-passwords.txt``, not the address.

Addresses
    An address is ``local@domain``. poczta treats the local part case-insensitively and
    stores it lower-cased: RFC 5321 allows a server to distinguish ``Bob`` from ``bob``,
    but no deployed mail system relies on it and users expect them to be the same
    mailbox. The domain is converted to its ASCII (IDNA, "xn--") form and lower-cased;
    a trailing root dot is dropped. Unicode local parts (RFC 6531) are kept as given,
    only lower-cased.

Throttling
    `LoginThrottle` counts failed logins within a sliding window per client network (an
    IPv4 address, or the /64 an IPv6 address belongs to), per (network, account) and per
    account name. Only the first two refuse a client; the account-wide count only slows
    answers, so nobody can lock an account's owner out by failing from elsewhere. SMTP
    AUTH, POP3 and IMAP share one instance. It never consults the store: a failure for an
    unknown account is counted exactly like one for a real account. It keeps its counts
    in memory, for one process; a server of several processes or nodes keeps them in a
    `poczta.store.base.LoginFailureStore` and asks the same instance for the rules
    (`keys`, `caps`, `blocks`, `delay`), so both ways answer alike.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable
from importlib import resources
from typing import Final, NamedTuple, Protocol

import nacl.exceptions
import nacl.pwhash.argon2id
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "Failures",
    "LoginThrottle",
    "ThrottleSettings",
    "domain_of",
    "hash_password",
    "is_valid_address",
    "needs_rehash",
    "normalize_address",
    "normalize_domain",
    "password_weakness",
    "split_address",
    "verify_password",
]

# --------------------------------------------------------------------------- passwords

_TIME_COST: Final = 3
_MEMORY_KIB: Final = 64 * 1024
#: Verifies only what libsodium does not (argon2i/argon2d strings); it never hashes, so
#: its own parameters do not matter (each string carries its own).
_LEGACY_VERIFIER: Final = PasswordHasher()
_ARGON2ID_PREFIX: Final = "$argon2id$"
_COMMON_PASSWORDS: Final = "data/common-passwords.txt"


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so both paths cost the same."""
    return hash_password("poczta: no such account")


def hash_password(password: str) -> str:
    """Return an argon2id PHC string for `password` (slow: run it in a thread).

    Raises ValueError when the password cannot be encoded as UTF-8 (lone surrogates).
    """
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("password is not valid Unicode text") from exc
    phc = nacl.pwhash.argon2id.str(secret, opslimit=_TIME_COST, memlimit=_MEMORY_KIB * 1024)
    return phc.decode("ascii")


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches the `stored` hash (slow: run it in a thread).

    Never raises: a malformed or foreign hash string answers False. With `stored` None
    (no such account) a dummy hash is verified so the time taken is the same.
    """
    target = _dummy_hash() if stored is None else stored
    try:
        if target.startswith(_ARGON2ID_PREFIX):
            ok = nacl.pwhash.argon2id.verify(target.encode("ascii"), password.encode("utf-8"))
        else:
            ok = _LEGACY_VERIFIER.verify(target, password)
    except (
        nacl.exceptions.CryptoError,
        VerificationError,
        InvalidHashError,
        UnicodeError,
        TypeError,
        ValueError,
    ):
        return False
    return ok and stored is not None


@functools.cache
def _common_passwords() -> frozenset[str]:
    """The bundled list of common passwords, folded like `_fold`."""
    text = resources.files("poczta").joinpath(_COMMON_PASSWORDS).read_text("utf-8")
    return frozenset(
        _fold(line) for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _fold(text: str) -> str:
    """A password as logins compare it (NFKC, see `poczta.sasl`), case folded."""
    return unicodedata.normalize("NFKC", text.strip()).casefold()


def password_weakness(address: str, password: str, *, min_length: int) -> str | None:
    """Why `password` may not become the password of `address`; None when it may.

    Refused: fewer than `min_length` characters, one of the bundled common passwords
    or the address or its local part (all compared case-insensitively).
    """
    folded = _fold(password)
    if len(unicodedata.normalize("NFKC", password)) < min_length:
        return f"it is shorter than {min_length} characters"
    if folded in _common_passwords():
        return "it is one of the most common passwords"
    local = address.rpartition("@")[0]
    if folded in (_fold(address), _fold(local)):
        return "it is the address or its local part"
    return None


def needs_rehash(stored: str) -> bool:
    """True when `stored` was made with other parameters than today's (or is unreadable)."""
    if not stored.startswith(_ARGON2ID_PREFIX):
        return True
    try:
        params = extract_parameters(stored)
    except (InvalidHashError, ValueError, TypeError):
        return True
    return (params.time_cost, params.memory_cost, params.parallelism) != (
        _TIME_COST,
        _MEMORY_KIB,
        1,
    )


# --------------------------------------------------------------------------- addresses

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# RFC 5322 atext, plus any non-ASCII character (RFC 6531).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_MAX_LOCAL = 64
_MAX_DOMAIN = 253
_MAX_ADDRESS = 254


def normalize_domain(domain: str) -> str:
    """Return `domain` in lower-case ASCII (IDNA) form; ValueError when it is not a host name."""
    name = domain.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("empty domain")
    labels: list[str] = []
    for label in name.split("."):
        try:
            ascii_label = label.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValueError(f"invalid domain label {label!r}") from exc
        if not _LDH_LABEL.match(ascii_label):
            raise ValueError(f"invalid domain label {label!r}")
        labels.append(ascii_label)
    result = ".".join(labels)
    if len(result) > _MAX_DOMAIN:
        raise ValueError("domain longer than 253 characters")
    return result


def split_address(address: str) -> tuple[str, str]:
    """Split ``local@domain`` at its last "@"; ValueError when either side is empty."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    return local, domain


def _check_local(local: str) -> None:
    if len(local.encode("utf-8", "surrogatepass")) > _MAX_LOCAL:
        raise ValueError("local part longer than 64 octets")
    if not (_DOT_ATOM.match(local) or _QUOTED.match(local)):
        raise ValueError(f"invalid local part {local!r}")


def normalize_address(address: str) -> str:
    """Return the canonical form of `address`: local part lower-cased, domain IDNA ASCII.

    ValueError when it is not a valid mailbox address.
    """
    local, domain = split_address(address)
    _check_local(local)
    result = f"{local.lower()}@{normalize_domain(domain)}"
    if len(result) > _MAX_ADDRESS:
        raise ValueError("address longer than 254 characters")
    return result


def is_valid_address(address: str) -> bool:
    """True when `address` is a mailbox address poczta accepts (see `normalize_address`)."""
    try:
        normalize_address(address)
    except ValueError:
        return False
    return True


def domain_of(address: str) -> str:
    """The normalised domain of `address`; ValueError when it has none or it is invalid."""
    return normalize_domain(split_address(address)[1])


# --------------------------------------------------------------------------- throttling


class ThrottleSettings(Protocol):
    """What `LoginThrottle.from_settings` reads (the config's ``[auth]`` table)."""

    @property
    def throttle_window(self) -> int: ...
    @property
    def max_failures_per_ip(self) -> int: ...
    @property
    def max_failures_per_ip_account(self) -> int: ...
    @property
    def failure_delay(self) -> float: ...
    @property
    def max_failure_delay(self) -> float: ...


def client_key(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The throttling key of a client: its IPv4 address or its IPv6 /64 network.

    IPv4-mapped IPv6 addresses count as their IPv4 address; anything that is not an IP
    address (a Unix socket peer, say) is used as given.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return str(ip).strip().lower()
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def account_key(account: str) -> str:
    """The throttling key of a login name: its normalised address, else the name lower-cased."""
    try:
        return normalize_address(account)
    except ValueError:
        return account.strip().lower()


#: Failures kept per account name: the account-wide count only sets a delay, and the
#: doubling delay reaches any sensible cap long before this many.
_ACCOUNT_HISTORY: Final = 32

_Key = str | tuple[str, str]


class _Counter:
    """Failure timestamps of one key, oldest first, bounded in length."""

    __slots__ = ("times",)

    def __init__(self, cap: int) -> None:
        self.times: deque[float] = deque(maxlen=cap)


class _FailureTable:
    """Sliding-window failure counts per key, with pruning and a cap on tracked keys."""

    def __init__(self, window: float, history: int, max_keys: int) -> None:
        self._window = window
        self._cap = max(history, 1)
        self._max_keys = max_keys
        self._entries: OrderedDict[_Key, _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, key: _Key, now: float) -> int:
        counter = self._entries.get(key)
        if counter is None:
            return 0
        horizon = now - self._window
        return sum(1 for t in counter.times if t > horizon)

    def add(self, key: _Key, now: float) -> None:
        self.prune(now)
        counter = self._entries.pop(key, None) or _Counter(self._cap)
        counter.times.append(now)
        self._entries[key] = counter  # most recently failed last
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)

    def clear(self, key: _Key) -> None:
        self._entries.pop(key, None)

    def prune(self, now: float) -> None:
        """Forget keys whose latest failure is outside the window (oldest come first)."""
        horizon = now - self._window
        while self._entries:
            key, counter = next(iter(self._entries.items()))
            if counter.times and counter.times[-1] > horizon:
                break
            del self._entries[key]


class Failures(NamedTuple):
    """Failed logins within the window, as `LoginThrottle` counts them for one attempt."""

    network: int  # from the client's network, for any account
    pair: int  # from the client's network, for this account
    account: int  # for this account, from anywhere


class LoginThrottle:
    """Counts failed logins per client network, per (network, account) and per account.

    Use it the same way in every protocol::

        if throttle.is_blocked(ip, user): refuse (without checking the password), no count
        ok = await asyncio.to_thread(verify_password, stored, password)
        if ok: throttle.record_success(ip, user)
        else:  throttle.record_failure(ip, user); await asyncio.sleep(throttle.delay_for(ip, user))

    A client is refused once its network reached `max_failures_per_ip` failures (for any
    accounts) or `max_failures_per_ip_account` for this account, until they age out of
    the window. The account-wide count never refuses: failures from elsewhere cannot
    lock the owner out. It only slows answers to failed logins: the delay is
    ``failure_delay * 2 ** (n - 1)`` for the largest of the three counts n, capped at
    `max_delay`. Memory is bounded: expired keys are pruned as new failures arrive and
    at most `max_tracked` keys are kept per table (the least recently failing dropped).
    """

    def __init__(
        self,
        *,
        window: float = 300.0,
        max_failures_per_ip: int = 10,
        max_failures_per_ip_account: int = 5,
        failure_delay: float = 1.0,
        max_delay: float = 15.0,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or max_tracked < 1:
            raise ValueError("window and max_tracked must be positive")
        if max_failures_per_ip < 1 or max_failures_per_ip_account < 1:
            raise ValueError("failure limits must be at least 1")
        if failure_delay < 0 or max_delay < 0:
            raise ValueError("delays must not be negative")
        self.window = window
        self.max_failures_per_ip = max_failures_per_ip
        self.max_failures_per_ip_account = max_failures_per_ip_account
        self.failure_delay = failure_delay
        self.max_delay = max_delay
        self.clock = clock
        # one more than the limit: enough to know a key is over it
        self._networks = _FailureTable(window, max_failures_per_ip + 1, max_tracked)
        self._pairs = _FailureTable(window, max_failures_per_ip_account + 1, max_tracked)
        self._accounts = _FailureTable(window, _ACCOUNT_HISTORY, max_tracked)

    @classmethod
    def from_settings(
        cls, settings: ThrottleSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> LoginThrottle:
        """Build a throttle from the ``[auth]`` settings."""
        return cls(
            window=float(settings.throttle_window),
            max_failures_per_ip=settings.max_failures_per_ip,
            max_failures_per_ip_account=settings.max_failures_per_ip_account,
            failure_delay=settings.failure_delay,
            max_delay=settings.max_failure_delay,
            clock=clock,
        )

    @staticmethod
    def keys(ip: str, account: str) -> tuple[str, str]:
        """The (network, account name) an attempt by `ip` for `account` is counted under."""
        return client_key(ip), account_key(account)

    @classmethod
    def _keys(cls, ip: str, account: str) -> tuple[str, tuple[str, str], str]:
        network, name = cls.keys(ip, account)
        return network, (network, name), name

    @property
    def caps(self) -> Failures:
        """The most failures of each kind worth counting: one past each limit, and for the
        account-wide count as many as it takes the delay to reach any sensible cap."""
        ip, pair = self.max_failures_per_ip, self.max_failures_per_ip_account
        return Failures(ip + 1, pair + 1, _ACCOUNT_HISTORY)

    def blocks(self, counts: Failures) -> bool:
        """True when these counts refuse the attempt: its network, or it for this
        account, has reached its limit."""
        return (
            counts.network >= self.max_failures_per_ip
            or counts.pair >= self.max_failures_per_ip_account
        )

    def delay(self, counts: Failures) -> float:
        """Seconds to wait before answering a failure with these counts: 0 when clean,
        doubling, capped."""
        n = max(counts)
        if n == 0:
            return 0.0
        return float(min(self.failure_delay * 2.0 ** min(n - 1, 32), self.max_delay))

    def failures(self, ip: str, account: str) -> Failures:
        """Failures within the window that concern this client's attempt for `account`."""
        now = self.clock()
        network, pair, name = self._keys(ip, account)
        return Failures(
            self._networks.count(network, now),
            self._pairs.count(pair, now),
            self._accounts.count(name, now),
        )

    def record_failure(self, ip: str, account: str) -> None:
        """Count one failed login by `ip` for `account` (existing or not)."""
        now = self.clock()
        network, pair, name = self._keys(ip, account)
        self._networks.add(network, now)
        self._pairs.add(pair, now)
        self._accounts.add(name, now)

    def record_success(self, ip: str, account: str) -> None:
        """Forget this network's failures for the account; its other failures stay counted.

        The account-wide count stays too: one success does not end an attack from elsewhere.
        """
        _, pair, _ = self._keys(ip, account)
        self._pairs.clear(pair)

    def delay_for(self, ip: str, account: str) -> float:
        """Seconds to wait before answering a failure: 0 when clean, doubling, capped."""
        return self.delay(self.failures(ip, account))

    def is_blocked(self, ip: str, account: str) -> bool:
        """True when the client's network, or it for this account, has reached its limit."""
        return self.blocks(self.failures(ip, account))

    def tracked(self) -> tuple[int, int, int]:
        """How many keys are held: (networks, pairs, accounts). For tests and metrics."""
        return len(self._networks), len(self._pairs), len(self._accounts)
