"""Fetching a domain's MTA-STS policy over HTTPS (RFC 8461 3.3), with httpx.

`PolicyFetcher.fetch` asks ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` and
returns the body, or raises `PolicyFetchError` saying why not. The rules:

- The host's addresses come from poczta's `Resolver` (A, then AAAA), like every other
  DNS question; each is tried in turn until one answers. The request goes to the
  address with the host name as Host and as TLS server name, so the certificate is
  verified for ``mta-sts.DOMAIN`` (PKIX, the given context: the system's trust store
  unless a CA file is configured, TLS 1.2 at least).
- Only a 200 counts: redirects are never followed (3.3), nor proxies from the
  environment used.
- The whole fetch has one deadline (`timeout`, a minute as RFC 8461 suggests), and a
  body over `MAX_POLICY_SIZE` octets is refused as it is read, never held whole.
- A new client per fetch: connections are not pooled, so a connection verified for one
  domain's policy host is never used for another's on the same address.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

from poczta.dns import DnsError, NXDomain, Resolver
from poczta.queue.mta_sts import MAX_POLICY_SIZE

__all__ = ["MAX_ADDRESSES", "PolicyFetchError", "PolicyFetcher", "policy_context"]

MAX_ADDRESSES = 4  # of the policy host, tried in turn
WELL_KNOWN = "/.well-known/mta-sts.txt"


class PolicyFetchError(Exception):
    """The policy could not be fetched; the text says why."""


def policy_context(cafile: str | None = None) -> ssl.SSLContext:
    """A verifying client context (PKIX, host name checked, TLS 1.2 or newer): the
    system's trust store, or the certificates in `cafile`. Raises OSError or
    ssl.SSLError when the file cannot be loaded."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PolicyFetcher:
    """Fetches policies through one resolver and one verifying TLS context."""

    def __init__(
        self,
        resolver: Resolver,
        context: ssl.SSLContext,
        *,
        port: int = 443,
        timeout: float = 60.0,
    ) -> None:
        self.resolver = resolver
        self.context = context
        self.port = port
        self.timeout = timeout

    async def fetch(self, domain: str) -> bytes:
        """The policy text `domain` serves; PolicyFetchError when there is none to have."""
        host = f"mta-sts.{domain.rstrip('.').lower()}"
        try:
            async with asyncio.timeout(self.timeout):
                addresses = await self._addresses(host)
                errors: list[str] = []
                for address in addresses[:MAX_ADDRESSES]:
                    try:
                        return await self._get(host, address)
                    except (httpx.ConnectError, httpx.ConnectTimeout, OSError) as exc:
                        errors.append(f"{address}: {_reason(exc)}")
                raise PolicyFetchError(f"{host}: " + "; ".join(errors))
        except TimeoutError:
            raise PolicyFetchError(f"{host}: no policy within {self.timeout:g} s") from None

    async def _addresses(self, host: str) -> list[str]:
        found: list[str] = []
        failure = "no address"
        for lookup in (self.resolver.a, self.resolver.aaaa):
            try:
                found += await lookup(host)
            except NXDomain:
                failure = "no such host"
            except DnsError as exc:
                failure = f"address lookup failed: {type(exc).__name__}"
        if not found:
            raise PolicyFetchError(f"{host}: {failure}")
        return found

    async def _get(self, host: str, address: str) -> bytes:
        netloc = f"[{address}]" if ":" in address else address
        url = f"https://{netloc}:{self.port}{WELL_KNOWN}"
        headers = {"Host": host if self.port == 443 else f"{host}:{self.port}"}
        async with httpx.AsyncClient(
            verify=self.context, follow_redirects=False, trust_env=False, timeout=self.timeout
        ) as client:
            try:
                async with client.stream(
                    "GET", url, headers=headers, extensions={"sni_hostname": host}
                ) as response:
                    if response.status_code != 200:
                        text = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                        raise PolicyFetchError(f"{host}: {text} (only a 200 counts)")
                    return await _read_capped(host, response)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise
            except (httpx.HTTPError, ValueError) as exc:  # ValueError: a name TLS cannot use
                raise PolicyFetchError(f"{host}: {_reason(exc)}") from None


async def _read_capped(host: str, response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_POLICY_SIZE:
        raise PolicyFetchError(f"{host}: the policy is over {MAX_POLICY_SIZE} octets")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_POLICY_SIZE:
            raise PolicyFetchError(f"{host}: the policy is over {MAX_POLICY_SIZE} octets")
    return bytes(body)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError) and str(cause) not in text:
        text = f"{text}: {cause}" if text else str(cause)
    return text or type(exc).__name__
