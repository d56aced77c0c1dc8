"""DKIM signing keys in the data directory, and the signatures they put on submitted mail.

Each key is two files under `DATA_DIR/dkim/<domain>/`: `<selector>.pem` (the private key,
PKCS#8, mode 0600) and `<selector>.json` (its algorithm, when it was made and when it
was retired). Rotation is by selector: generate a new one, publish its record, and once
it is in DNS retire the old one (`poczta dkim retire`); a retired key signs nothing but
stays on disk so its record can be kept until mail signed with it is old.

`Signer` signs a submitted message for the domain of its From address (or, when that
domain has no key, the closest parent domain that has one: relaxed DMARC alignment still
holds) with the newest active key of each algorithm: one rsa-sha256 signature, plus an
ed25519-sha256 one when such a key exists (RFC 8463 asks for both during the transition).
Keys are read again when their directory changes, so a new key signs without a restart.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from poczta.mailauth.dkim_sign import (
    SIGNING_ALGORITHMS,
    DkimSignError,
    PrivateKey,
    dkim_dns_record,
    generate_dkim_key,
    load_signing_key,
    sign_dkim,
)

__all__ = ["DkimKey", "DkimKeyError", "KeyStore", "Signer", "txt_record_lines"]

ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
MAX_LOADED_KEYS = 1000  # a signer's loaded keys; past it they are loaded again
#: The header fields signed (each present one, and From and the identity fields once more).
SIGNED_FIELDS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "sender", "list-id", "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class DkimKeyError(Exception):
    """A key that cannot be made, found or used; the message says which and why."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str
    created: datetime
    retired: datetime | None
    record: str  # the TXT record value to publish at <selector>._domainkey.<domain>
    pem: str = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def txt_record_lines(key: DkimKey, ttl: int = 3600) -> str:
    """The record in zone-file form, its value split into strings of at most 255 octets."""
    value = key.record
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
    quoted = " ".join(f'"{chunk}"' for chunk in chunks)
    return f"{key.name}. {ttl} IN TXT {quoted}"


def _record_of(pem: str) -> str:
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimKeyError("not an RSA or Ed25519 key")
    return dkim_dns_record(private.public_key())


class KeyStore:
    """The keys of every domain under `DATA_DIR/dkim`."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "dkim"
        self._cache: dict[str, tuple[int, list[DkimKey]]] = {}

    def _dir(self, domain: str) -> Path:
        domain = domain.lower().rstrip(".")
        if not domain or "/" in domain or domain.startswith("."):
            raise DkimKeyError(f"not a domain: {domain!r}")
        return self.root / domain

    def generate(
        self,
        domain: str,
        selector: str | None = None,
        algorithm: str = "rsa",
        now: datetime | None = None,
    ) -> DkimKey:
        """Make and store a new key; the selector defaults to the algorithm and the date."""
        now = now or datetime.now(UTC)
        full = ALGORITHMS.get(algorithm, algorithm)
        if full not in SIGNING_ALGORITHMS:
            raise DkimKeyError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")
        prefix = "rsa" if full == "rsa-sha256" else "ed"
        selector = (selector or f"{prefix}{now:%Y%m%d}").lower()
        if not _SELECTOR.match(selector):
            raise DkimKeyError(f"bad selector {selector!r} (letters, digits and '-')")
        directory = self._dir(domain)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem, record = generate_dkim_key(full)
        try:
            fd = os.open(directory / f"{selector}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise DkimKeyError(f"{domain} has a key with selector {selector} already") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        self._write_meta(directory, selector, {"algorithm": full, "created": now.isoformat()})
        return DkimKey(directory.name, selector, full, now, None, record, pem)

    def _write_meta(self, directory: Path, selector: str, meta: dict[str, str]) -> None:
        temp = directory / f".{selector}.json.new"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(meta, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, directory / f"{selector}.json")

    def keys(self, domain: str) -> list[DkimKey]:
        """The keys of `domain`, newest first (read again only when the directory changed)."""
        directory = self._dir(domain)
        try:
            stamp = directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._cache.get(directory.name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = [self._load(directory, meta) for meta in sorted(directory.glob("*.json"))]
        found.sort(key=lambda k: (k.created, k.selector), reverse=True)
        self._cache[directory.name] = (stamp, found)
        return found

    def _load(self, directory: Path, meta_path: Path) -> DkimKey:
        selector = meta_path.stem
        try:
            meta = json.loads(meta_path.read_text())
            pem = (directory / f"{selector}.pem").read_text()
            retired = meta.get("retired")
            return DkimKey(
                directory.name,
                selector,
                meta["algorithm"],
                datetime.fromisoformat(meta["created"]),
                datetime.fromisoformat(retired) if retired else None,
                _record_of(pem),
                pem,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DkimKeyError(f"unreadable DKIM key {meta_path}: {exc}") from exc

    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def find(self, domain: str, selector: str) -> DkimKey:
        for key in self.keys(domain):
            if key.selector == selector.lower():
                return key
        raise DkimKeyError(f"{domain} has no key with selector {selector}")

    def retire(self, domain: str, selector: str, now: datetime | None = None) -> DkimKey:
        """Stop signing with a key (kept on disk, and its record worth keeping a while)."""
        key = self.find(domain, selector)
        if key.retired is not None:
            return key
        now = now or datetime.now(UTC)
        meta = {"algorithm": key.algorithm, "created": key.created.isoformat()}
        self._write_meta(self._dir(domain), key.selector, {**meta, "retired": now.isoformat()})
        return self.find(domain, selector)

    def signing_keys(self, domain: str) -> list[DkimKey]:
        """The newest active key of each algorithm, rsa-sha256 first."""
        chosen: dict[str, DkimKey] = {}
        for key in self.keys(domain):
            if key.retired is None and key.algorithm not in chosen:
                chosen[key.algorithm] = key
        return [chosen[a] for a in SIGNING_ALGORITHMS if a in chosen]


class Signer:
    """Signs submitted mail with the keys of a `KeyStore`.

    Each key is loaded once (by its PEM text, so a rotated key is loaded afresh): loading
    an RSA key validates it, which costs ~50 ms, thirty times the signing itself.
    """

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._loaded: dict[tuple[str, str], PrivateKey] = {}

    def _private_key(self, key: DkimKey) -> PrivateKey:
        loaded = self._loaded.get((key.algorithm, key.pem))
        if loaded is None:
            if len(self._loaded) >= MAX_LOADED_KEYS:
                self._loaded.clear()
            loaded = load_signing_key(key.pem, key.algorithm)
            self._loaded[(key.algorithm, key.pem)] = loaded
        return loaded

    def keys_for(self, author_domain: str) -> list[DkimKey]:
        """The keys to sign with for mail from `author_domain`: its own, else a parent's."""
        labels = author_domain.lower().rstrip(".").split(".")
        for start in range(len(labels) - 1):
            try:
                found = self.keys.signing_keys(".".join(labels[start:]))
            except DkimKeyError:
                return []
            if found:
                return found
        return []

    def signatures(self, message: bytes, author_domain: str) -> bytes:
        """The DKIM-Signature fields to prepend (b"" when there is no key for the domain)."""
        fields = b""
        for key in self.keys_for(author_domain):
            try:
                fields += sign_dkim(
                    message,
                    domain=key.domain,
                    selector=key.selector,
                    private_key=self._private_key(key),
                    algorithm=key.algorithm,
                    headers=SIGNED_FIELDS,
                )
            except DkimSignError as exc:
                raise DkimKeyError(f"cannot sign with {key.name}: {exc}") from exc
        return fields
