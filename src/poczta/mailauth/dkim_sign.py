"""DKIM signing of outgoing mail (RFC 6376, RFC 8463) and DKIM key generation.

`sign_dkim` returns the DKIM-Signature header field to prepend to a message; it signs
with rsa-sha256 or ed25519-sha256 (never rsa-sha1, RFC 8301), over a default set of
header fields with From and the other identity fields oversigned. `generate_dkim_key`
makes a key pair and the TXT record that publishes it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim import hash_headers
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

from poczta.mailauth.dkim import MIN_RSA_BITS, NAME_SYNTAX, split_message

#: Header fields signed when present (each occurrence once).
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "from", "reply-to", "sender", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
    "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe",
    "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
)  # fmt: skip
#: Header fields signed once more than they occur, so none can be added (or, when
#: absent, added at all) without breaking the signature.
OVERSIGNED_HEADERS: frozenset[str] = frozenset(
    {"from", "reply-to", "sender", "subject", "date", "to", "cc", "message-id"}
)
SIGNING_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


class DkimSignError(ValueError):
    """Signing is impossible: bad key, unknown algorithm, or no From header field."""


PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def load_signing_key(private_key: bytes | str | PrivateKey, algorithm: str) -> PrivateKey:
    """A PEM private key (PKCS#1 or PKCS#8), or for ed25519 also a raw or base64 32-byte seed;
    a key already loaded is checked against `algorithm` and returned as it is."""
    if isinstance(private_key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        wanted = rsa.RSAPrivateKey if algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey
        if not isinstance(private_key, wanted):
            raise DkimSignError(f"the private key does not fit {algorithm}")
        return private_key
    data = private_key.encode() if isinstance(private_key, str) else bytes(private_key)
    key: object = None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimSignError(f"unreadable private key: {exc}") from None
    elif algorithm == "ed25519-sha256":
        seed = data if len(data) == 32 else _seed_from_base64(data)
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    wanted = rsa.RSAPrivateKey if algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey
    if not isinstance(key, wanted):
        raise DkimSignError(f"the private key does not fit {algorithm}")
    return key


def _seed_from_base64(data: bytes) -> bytes:
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise DkimSignError("an ed25519 seed is 32 bytes (raw or base64)")
    return seed


def _headers_to_sign(present: Sequence[tuple[bytes, bytes]], wanted: Sequence[str]) -> list[str]:
    counts: dict[str, int] = {}
    for raw_name, _ in present:
        key = raw_name.decode("ascii", "replace").strip().lower()
        counts[key] = counts.get(key, 0) + 1
    out: list[str] = []
    for name in dict.fromkeys(h.lower() for h in wanted):
        extra = 1 if name in OVERSIGNED_HEADERS else 0
        out.extend([name] * (counts.get(name, 0) + extra))
    return out


def _fold_tags(tags: Sequence[tuple[str, str]], first: int) -> str:
    """Join tags with "; ", folding with CRLF TAB so that lines stay under ~78 characters."""
    out, width = "", first
    for i, (name, value) in enumerate(tags):
        piece = f"{name}={value}" + (";" if i < len(tags) - 1 else "")
        if out and width + 1 + len(piece) > 76:
            out, width = out + "\r\n\t", 8
        elif out:
            out, width = out + " ", width + 1
        out, width = out + piece, width + len(piece)
    return out


def _fold_base64(value: str, first: int) -> str:
    chunks, width = [], 76 - first
    while value:
        chunks.append(value[:width])
        value, width = value[width:], 70
    return "\r\n\t".join(chunks)


def sign_dkim(
    message: bytes,
    *,
    domain: str,
    selector: str,
    private_key: bytes | str | PrivateKey,
    algorithm: str = "rsa-sha256",
    headers: Sequence[str] = DEFAULT_SIGNED_HEADERS,
    canonicalization: str = "relaxed/relaxed",
    timestamp: int | None = None,
    expire_after: int | None = None,
) -> bytes:
    """The DKIM-Signature header field (folded, CRLF-terminated) to prepend to `message`.

    `headers` lists the fields to sign; those present are signed, and the ones in
    OVERSIGNED_HEADERS once more. Raises DkimSignError when signing is impossible.
    """
    if algorithm not in SIGNING_ALGORITHMS:
        raise DkimSignError(f"unsupported algorithm {algorithm}")
    if not NAME_SYNTAX.match(domain) or not NAME_SYNTAX.match(selector):
        raise DkimSignError("malformed domain or selector")
    try:
        policy = CanonicalizationPolicy.from_c_value(canonicalization.encode())
    except InvalidCanonicalizationPolicyError:
        raise DkimSignError(f"unknown canonicalization {canonicalization}") from None
    key = load_signing_key(private_key, algorithm)
    present, body = split_message(message)
    signed = _headers_to_sign(present, headers)
    if not any(name.strip().lower() == b"from" for name, _ in present):
        raise DkimSignError("the message has no From header field")
    body_hash = hashlib.sha256(policy.canonicalize_body(body)).digest()
    now = int(time.time()) if timestamp is None else timestamp
    tags = [
        ("v", "1"), ("a", algorithm), ("c", policy.to_c_value().decode()),
        ("d", domain.lower()), ("s", selector), ("t", str(now)),
    ]  # fmt: skip
    if expire_after is not None:
        tags.append(("x", str(now + expire_after)))
    tags += [("h", ":".join(signed)), ("bh", base64.b64encode(body_hash).decode()), ("b", "")]
    unsigned_value = " " + _fold_tags(tags, len("DKIM-Signature: "))
    sig_header = (b"DKIM-Signature", unsigned_value.encode())
    hasher = hashlib.sha256()
    canon_headers = policy.canonicalize_headers(list(present))
    hash_headers(hasher, policy, canon_headers, [h.encode() for h in signed], sig_header, {})
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    else:
        raw = key.sign(hasher.digest())
    last_line = unsigned_value.rsplit("\n", 1)[-1]
    b_value = _fold_base64(base64.b64encode(raw).decode(), len(last_line) + 1)
    return b"DKIM-Signature:" + unsigned_value.encode() + b_value.encode() + b"\r\n"


def dkim_dns_record(public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    """The TXT record value publishing `public_key` at <selector>._domainkey.<domain>."""
    if isinstance(public_key, rsa.RSAPublicKey):
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def generate_dkim_key(algorithm: str = "rsa-sha256", *, bits: int = 2048) -> tuple[str, str]:
    """A new signing key: (PKCS#8 PEM private key, DNS TXT record value)."""
    private: PrivateKey
    if algorithm == "rsa-sha256":
        if bits < MIN_RSA_BITS:
            raise DkimSignError(f"RSA keys shorter than {MIN_RSA_BITS} bits are not accepted")
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519-sha256":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimSignError(f"unsupported algorithm {algorithm}")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode(), dkim_dns_record(private.public_key())
