"""The certificate chain a TLS server presented, and the DANE verdict on it.

Python 3.11's `ssl` offers no public way to read the peer's chain: `getpeercert` gives
the leaf only, and `SSLObject.get_unverified_chain` became public in 3.13. The C
object under every `SSLObject` (`_sslobj`) has had `get_unverified_chain()` since
3.10, though, and it answers with the certificates as received even when the context
verifies nothing (CERT_NONE, as DANE needs: the TLSA records, not the system's CAs,
decide). `peer_chain` uses it where it exists and falls back to the leaf alone, with
which DANE-EE still works and DANE-TA works when the anchor's key signed the leaf.

Verifying inside OpenSSL (its `SSL_dane_*` API, as Postfix does) would need a binding
the standard library does not have; checking the handshake's result in
`poczta.queue.dane` before anything is sent over the connection is as strict, since no
mail data goes out until the check passed.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import UTC, datetime

from poczta.logs import log
from poczta.queue.dane import DanePolicy, DaneResult, verify_chain

__all__ = ["dane_check", "peer_chain"]

_ENCODING_DER = 2  # _ssl.ENCODING_DER


def peer_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent, leaf first, as DER (empty if it sent none)."""
    get_chain: Callable[[], object] | None = getattr(ssl_object, "get_unverified_chain", None)
    if get_chain is None:
        get_chain = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if get_chain is not None:
        try:
            chain = get_chain()
            if isinstance(chain, list) and chain:
                return [_der(cert) for cert in chain]
        except (ssl.SSLError, ValueError, TypeError, AttributeError):
            pass
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _der(cert: object) -> bytes:
    if isinstance(cert, bytes):
        return cert
    public_bytes = getattr(cert, "public_bytes")  # noqa: B009 - an undocumented C type
    data = public_bytes(_ENCODING_DER)
    if not isinstance(data, bytes):
        raise TypeError("a certificate that is not DER bytes")
    return data


def dane_check(
    policy: DanePolicy, ssl_object: ssl.SSLObject, now: datetime | None = None
) -> DaneResult:
    """Whether the chain of this TLS connection satisfies the host's TLSA records; a
    refusal is logged (`queue.dane`, with the TLSA name and the reason)."""
    result = verify_chain(policy, peer_chain(ssl_object), now or datetime.now(UTC))
    if not result.ok:
        log("queue.dane", tlsa=policy.tlsa_name, result="chain refused", reason=result.text)
    return result
