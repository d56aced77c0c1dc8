"""Test certificates made with `cryptography`: a CA, the certificates it issues, self-signed
ones, the TLS contexts and trust files built from them, and the TLSA records (RFC 6698)
that match them.

`TestCa.issue` gives a leaf (or an intermediate CA) for some DNS names; `Issued` holds
the DER, the key, writes PEM files (certificate chain first, as TLS servers load them)
and makes a server context of them. `TestCa.write_ca_file` and `TestCa.client_context`
are for clients that verify a server by PKIX (MTA-STS, a verified relay). `tlsa_record`
computes the record of a usage/selector/matching type for a certificate. Keys are ECDSA
P-256 (fast to make) unless the test asks for RSA.

`poczta.net.tls.write_self_signed` is what `poczta init` makes; tests of that certificate
use it directly.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from poczta.dns import TlsaRecord
from poczta.net.tls import make_server_context

__all__ = ["Issued", "TestCa", "self_signed", "spki", "tlsa_record"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
NOW = datetime.datetime.now(datetime.UTC)


def _key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Issued:
    """A certificate, its key, and the chain above it (issuer first, root last)."""

    cert: x509.Certificate
    key: PrivateKey
    above: list[x509.Certificate] = field(default_factory=list)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def chain(self) -> list[bytes]:
        """DER, leaf first, as a server would present it."""
        return [self.der] + [c.public_bytes(serialization.Encoding.DER) for c in self.above]

    def write(self, cert_path: Path, key_path: Path, *, with_chain: bool = True) -> None:
        certs = [self.cert] + (self.above if with_chain else [])
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)

    def server_context(self, directory: Path, *, with_chain: bool = True) -> ssl.SSLContext:
        """A TLS server context presenting this certificate (and its chain, unless told
        otherwise), as poczta builds one; the PEM files are written to `directory`."""
        stem = f"{self.cert.serial_number:x}"
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        self.write(cert_path, key_path, with_chain=with_chain)
        return make_server_context(cert_path, key_path)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _build(
    subject: str,
    names: list[str],
    key: PrivateKey,
    issuer: x509.Name,
    signer: PrivateKey,
    *,
    ca: bool,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(_CA_KEY_USAGE, critical=True)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


@dataclass
class TestCa:
    """A self-signed root (or, via `intermediate`, a CA below one)."""

    __test__ = False  # not a pytest test class

    name: str = "poczta test CA"
    key_kind: str = "ec"
    issued: Issued = field(init=False)

    def __post_init__(self) -> None:
        self.issued = _self_signed(self.name, [], ca=True, key_kind=self.key_kind, days=3650)

    @property
    def cert(self) -> x509.Certificate:
        return self.issued.cert

    def issue(
        self,
        *names: str,
        ca: bool = False,
        key_kind: str = "ec",
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        common_name: str | None = None,
    ) -> Issued:
        key = _key(key_kind)
        cert = _build(
            common_name or (names[0] if names else "no name"),
            list(names),
            key,
            self.cert.subject,
            self.issued.key,
            ca=ca,
            not_before=not_before or NOW - datetime.timedelta(days=1),
            not_after=not_after or NOW + datetime.timedelta(days=365),
        )
        return Issued(cert, key, [self.cert, *self.issued.above])

    def write_ca_file(self, path: Path) -> Path:
        """This CA's certificate as PEM at `path`: the file a client is told to trust."""
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context (TLS 1.2+) that trusts this CA and no other."""
        pem = self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        context = ssl.create_default_context(cadata=pem)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def intermediate(self, name: str) -> TestCa:
        """A CA issued by this one, which issues certificates of its own."""
        below = TestCa.__new__(TestCa)
        below.name, below.key_kind = name, "ec"
        below.issued = self.issue(ca=True, common_name=name)
        return below


def self_signed(*names: str) -> Issued:
    """A self-signed leaf for `names`, as `poczta init` makes one."""
    return _self_signed(names[0], list(names), ca=False, key_kind="ec", days=365)


def _self_signed(subject: str, names: list[str], *, ca: bool, key_kind: str, days: int) -> Issued:
    key = _key(key_kind)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    before, after = NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=days)
    cert = _build(subject, names, key, issuer, key, ca=ca, not_before=before, not_after=after)
    return Issued(cert, key)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tlsa_record(
    cert: x509.Certificate, usage: int, selector: int = 1, mtype: int = 1
) -> TlsaRecord:
    """The TLSA record of `cert` with these parameters."""
    data = cert.public_bytes(serialization.Encoding.DER) if selector == 0 else spki(cert)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return TlsaRecord(usage, selector, mtype, data)
