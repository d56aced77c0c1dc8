"""CPU cost of poczta's DKIM signing per message, measured in this process.

Submission signs with `poczta.dkim_keys.Signer.signatures`: it finds the domain's active
keys (cached per directory) and calls `sign_dkim` once per key with the key the signer
loaded the first time, which canonicalizes and hashes the body and the signed header
fields, and signs. This times that call over distinct 4 KB messages for a domain with
one rsa-2048 key and for one with one ed25519 key (a domain with both pays the sum),
and loading a key from its PEM alone (what a signer pays once per key). CPU time
(`time.process_time`), the median of three rounds.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
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
    key_load_us: float  # loading the PEM key alone, once per key


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


def dkim_costs(count: int, size: int) -> list[DkimCost]:
    from poczta.dkim_keys import KeyStore, Signer
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
            load = _cpu_us(functools.partial(_load, load_signing_key, key), messages[:KEY_LOADS])
            out.append(DkimCost(label, total, load))
        return out
