"""TLS server contexts: TLS 1.2+ only, reloadable certificates, the self-signed dev certificate."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(Exception):
    """The certificate or key could not be loaded."""


@dataclass(frozen=True)
class TlsInfo:
    """What a session knows about its TLS layer, for Received headers and logs."""

    version: str
    cipher: str
    bits: int

    @classmethod
    def from_ssl_object(cls, obj: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo | None:
        if obj is None:
            return None
        cipher = obj.cipher()
        if cipher is None:
            return None
        name, _proto, bits = cipher
        return cls(version=obj.version() or "TLS", cipher=name, bits=int(bits or 0))


def make_server_context(cert: Path, key: Path, min_version: str = "1.2") -> ssl.SSLContext:
    """A server context with modern defaults; TLS 1.0 and 1.1 are never negotiated."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MIN_VERSIONS.get(min_version, ssl.TLSVersion.TLSv1_2)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load certificate {cert} / key {key}: {exc}") from exc
    return context


class ReloadableContext:
    """A server context whose certificate can be reloaded (SIGHUP) without new listeners.

    `context` is created once and handed to listeners and STARTTLS; its SNI callback
    (which OpenSSL calls for every ClientHello, with or without SNI) switches each new
    connection to the most recently loaded context.
    """

    def __init__(self, cert: Path, key: Path, min_version: str = "1.2") -> None:
        self.cert, self.key, self.min_version = cert, key, min_version
        self.context = make_server_context(cert, key, min_version)
        self._current = self.context
        self.context.sni_callback = self._select

    def _select(self, ssl_object: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._current is not self.context:
            ssl_object.context = self._current

    def reload(self) -> None:
        """Load the files again; on failure the old context stays in use and the error is raised."""
        self._current = make_server_context(self.cert, self.key, self.min_version)


def write_self_signed(cert: Path, key: Path, hostname: str, days: int = 3650) -> None:
    """Create a self-signed ECDSA P-256 certificate for `hostname` (plus localhost and loopback)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        alt_names.append(x509.DNSName("localhost"))
    alt_names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    key_bytes = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(key, key_bytes, 0o600)
    _write_file(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o640)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` with `mode`, also when the file was there with another mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
