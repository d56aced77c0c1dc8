"""CPU cost of poczta's DKIM signing per message, measured in this process.

Submission signs with `poczta.dkim_keys.Signer.signatures`: it finds the domain's active
keys (cached per directory) and calls `sign_dkim` once per key, which loads the PEM key,
canonicalizes and hashes the body and the signed header fields, and signs. This times
that call over distinct 4 KB messages for a domain with one rsa-2048 key and for one
with one ed25519 key (a domain with both pays the sum); then the same with the key
loaded once and kept (`sign_dkim`'s `load_signing_key` replaced, for the measurement
only, by one that hands back the key already loaded), which is what a signer keeping
its keys loaded would pay; and loading the key from its PEM alone. CPU time
(`time.process_time`), the median of three rounds.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outbound_targets import make_message

__all__ = ["KEY_LOADS", "DkimCost", "dkim_costs"]

ROUNDS = 3
KEY_LOADS = 30  # loads timed per round: each costs as much as a whole signature


@dataclass(frozen=True)
class DkimCost:
    label: str
    us_per_message: float
    key_kept_us: float  # the same with the key loaded once
    key_load_us: float  # loading the PEM key alone


def _cpu_us(work: Callable[[bytes], object], messages: Sequence[bytes]) -> float:
    """Median over ROUNDS of the CPU microseconds per call of `work` on each message."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.process_time()
        for message in messages:
            work(message)
        rounds.append((time.process_time() - start) / len(messages) * 1e6)
    return statistics.median(rounds)


def _sign(signer: Any, domain: str, message: bytes) -> bytes:
    return bytes(signer.signatures(message, domain))


def _load(load_signing_key: Callable[[str, str], object], key: Any, _message: bytes) -> object:
    return load_signing_key(key.pem, key.algorithm)


@contextlib.contextmanager
def keys_kept(module: Any) -> Iterator[None]:
    """Within the block `module.load_signing_key` loads each PEM once and keeps the key."""
    original = module.load_signing_key
    module.load_signing_key = functools.cache(original)
    try:
        yield
    finally:
        module.load_signing_key = original


def dkim_costs(count: int, size: int) -> list[DkimCost]:
    from poczta.dkim_keys import KeyStore, Signer
    from poczta.mailauth import dkim_sign
    from poczta.mailauth.dkim_sign import load_signing_key

    algorithms = {"rsa-2048": "rsa", "ed25519": "ed25519"}
    with tempfile.TemporaryDirectory(prefix="dkim-") as root:
        keys = KeyStore(Path(root))
        signer = Signer(keys)
        messages = [make_message(i, f"user{i}@d0.test", size) for i in range(count)]
        out = []
        for label, algorithm in algorithms.items():
            domain = f"{algorithm}.test"
            key = keys.generate(domain, algorithm=algorithm)
            if not signer.signatures(messages[0], domain):
                raise RuntimeError(f"no signature for {domain}")
            total = _cpu_us(functools.partial(_sign, signer, domain), messages)
            with keys_kept(dkim_sign):
                kept = _cpu_us(functools.partial(_sign, signer, domain), messages)
            load = _cpu_us(functools.partial(_load, load_signing_key, key), messages[:KEY_LOADS])
            out.append(DkimCost(label, total, kept, load))
        return out
