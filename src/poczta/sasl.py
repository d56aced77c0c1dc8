"""Server side of the SASL mechanisms poczta offers: PLAIN, LOGIN and SCRAM-SHA-256.

The module is pure: an exchange takes raw client bytes and hands back events, and
the protocol that drives it (SMTP AUTH, POP3 AUTH, IMAP AUTHENTICATE) owns the
framing. `decode_client_response` and `encode_challenge` are the base64 framing
those protocols share.

An exchange never looks anything up. When it needs the world it asks:

- `VerifyPassword(authcid, password)`: answer with `exchange.password_checked(user)`;
- `NeedScramCredentials(authcid)`: answer with `exchange.scram_credentials(creds, user)`.

`user` is the canonical account name, or None when the login must fail. Under
SCRAM an unknown user is never revealed: the exchange carries on with fake
credentials and fails at the proof step like a wrong password would.

Rules kept here: an authorization identity, when given, must equal the
authentication identity (no proxy authentication); SCRAM channel binding is not
offered, so a client that asks for it (gs2 flag `p`) fails, while `n` and `y` are
accepted. Names and passwords are normalised with NFKC (a light SASLprep). An
identity (authcid or authzid) with a character that is not printable (a control
character, a line separator) is malformed: it never reaches a lookup, a log line or
a header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN", "SCRAM-SHA-256")

SCRAM_PREFIX = "SCRAM-SHA-256"
_DEFAULT_ITERATIONS = 4096
_MIN_ITERATIONS = 1
_SALT_SIZE = 16


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class ScramCredentials:
    """What a server stores to verify SCRAM-SHA-256 logins without the password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_string(self) -> str:
        """Serialise as `SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`."""

        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode("ascii")

        return (
            f"{SCRAM_PREFIX}${self.iterations}:{b64(self.salt)}"
            f"${b64(self.stored_key)}:{b64(self.server_key)}"
        )

    @classmethod
    def from_string(cls, s: str) -> ScramCredentials:
        """Parse what `to_string` wrote; raises ValueError on anything else."""
        parts = s.split("$")
        if len(parts) != 3 or parts[0] != SCRAM_PREFIX:
            raise ValueError("not a SCRAM-SHA-256 credential string")
        iter_text, _, salt_text = parts[1].partition(":")
        stored_text, _, server_text = parts[2].partition(":")
        try:
            iterations = int(iter_text)
            salt = base64.b64decode(salt_text, validate=True)
            stored = base64.b64decode(stored_text, validate=True)
            server = base64.b64decode(server_text, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"malformed SCRAM-SHA-256 credential string: {exc}") from exc
        if iterations < _MIN_ITERATIONS or not salt or len(stored) != 32 or len(server) != 32:
            raise ValueError("malformed SCRAM-SHA-256 credential string")
        return cls(salt=salt, iterations=iterations, stored_key=stored, server_key=server)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def derive_scram_credentials(
    password: str, *, iterations: int = _DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """Derive the stored SCRAM-SHA-256 keys for a password (RFC 5802 section 3)."""
    if iterations < _MIN_ITERATIONS:
        raise ValueError("iterations must be positive")
    if salt is None:
        salt = secrets.token_bytes(_SALT_SIZE)
    salted = hashlib.pbkdf2_hmac("sha256", _normalize(password).encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


# Fake credentials for unknown users must look stable (same salt on every try) but
# must never verify: the keys are random and the salt is keyed by a process secret.
_FAKE_SECRET = secrets.token_bytes(32)


def _fake_credentials(authcid: str) -> ScramCredentials:
    salt = _hmac(_FAKE_SECRET, b"salt:" + authcid.encode("utf-8"))[:_SALT_SIZE]
    return ScramCredentials(
        salt=salt,
        iterations=_DEFAULT_ITERATIONS,
        stored_key=secrets.token_bytes(32),
        server_key=secrets.token_bytes(32),
    )


# --------------------------------------------------------------------------- framing


class Cancelled:
    """The client answered `*`: it abandons the exchange."""

    def __repr__(self) -> str:
        return "CANCELLED"


class Malformed:
    """The client's line was not valid base64."""

    def __repr__(self) -> str:
        return "MALFORMED"


CANCELLED = Cancelled()
MALFORMED = Malformed()


def decode_client_response(line: bytes) -> bytes | Cancelled | Malformed:
    """Decode one base64 client line (without or with its CRLF).

    `*` cancels; `=` is the empty initial response (RFC 4954); an empty line is an
    empty response. Anything that is not strict, padded base64 is MALFORMED.
    """
    line = line.rstrip(b"\r\n")
    if line == b"*":
        return CANCELLED
    if line in (b"", b"="):
        return b""
    if len(line) % 4:
        return MALFORMED
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return MALFORMED


def encode_challenge(data: bytes) -> str:
    """Base64-encode server data for a challenge line (empty data gives "")."""
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Challenge:
    """Send `data` (base64 framed by the protocol) and wait for a response."""

    data: bytes


@dataclass(frozen=True)
class VerifyPassword:
    """Check the password; answer with `SaslExchange.password_checked`."""

    authcid: str
    password: str


@dataclass(frozen=True)
class NeedScramCredentials:
    """Look up stored SCRAM keys; answer with `SaslExchange.scram_credentials`."""

    authcid: str


@dataclass(frozen=True)
class Succeeded:
    """Authenticated as `user`; `final_data` is server data to send with success."""

    user: str
    final_data: bytes | None = None


@dataclass(frozen=True)
class Failed:
    """The exchange is over without success.

    `malformed` is True for syntax errors (protocols reply 501) and False for
    rejected credentials (535).
    """

    reason: str
    malformed: bool


SaslEvent = Challenge | VerifyPassword | NeedScramCredentials | Succeeded | Failed


class SaslStateError(RuntimeError):
    """The caller drove the exchange out of order (a programming error)."""


class _Step(Enum):
    START = "start"
    PLAIN_RESPONSE = "plain-response"
    LOGIN_USER = "login-user"
    LOGIN_PASSWORD = "login-password"
    PASSWORD_CHECK = "password-check"
    SCRAM_FIRST = "scram-first"
    SCRAM_LOOKUP = "scram-lookup"
    SCRAM_FINAL = "scram-final"
    DONE = "done"


def _malformed(reason: str) -> Failed:
    return Failed(reason, malformed=True)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _identity(text: str) -> str | None:
    """An authcid or authzid, normalised; None when it is not printable throughout."""
    name = _normalize(text)
    return name if name.isprintable() else None


# --------------------------------------------------------------------------- SCRAM syntax


def _decode_saslname(raw: str) -> str | None:
    """Undo `=2C` / `=3D` escaping; None if any other `=` escape appears."""
    if "=" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "=":
            code = raw[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class _ClientFirst:
    gs2_header: str
    bare: str
    authcid: str
    nonce: str


def _parse_client_first(data: bytes) -> _ClientFirst | Failed:
    text = _utf8(data)
    if text is None:
        return _malformed("client-first-message is not UTF-8")
    fields = text.split(",", 2)
    if len(fields) != 3:
        return _malformed("client-first-message lacks a gs2 header")
    flag, authz_field, bare = fields
    if flag.startswith("p="):
        return Failed("channel binding is not supported", malformed=False)
    if flag not in ("n", "y"):
        return _malformed("bad gs2 channel binding flag")
    authzid: str | None = None
    if authz_field:
        if not authz_field.startswith("a="):
            return _malformed("bad gs2 authzid")
        authzid = _decode_saslname(authz_field[2:])
        if authzid is None:
            return _malformed("bad saslname escape in authzid")
        authzid = _identity(authzid)
        if authzid is None:
            return _malformed("authzid is not printable")
    attrs = bare.split(",")
    if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
        return _malformed("client-first-message needs n= and r=")
    authcid = _decode_saslname(attrs[0][2:])
    authcid = _identity(authcid) if authcid else None
    nonce = attrs[1][2:]
    if not authcid or not nonce or not _printable_nonce(nonce):
        return _malformed("empty or invalid username or nonce")
    if authzid and authzid != authcid:
        return Failed("authorization identity differs from authentication identity", False)
    return _ClientFirst(f"{flag},{authz_field},", bare, authcid, nonce)


def _printable_nonce(nonce: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


# --------------------------------------------------------------------------- exchange


NonceFactory = Callable[[], str]


def _random_nonce() -> str:
    return secrets.token_urlsafe(24)


class SaslExchange:
    """One server-side SASL exchange for a single mechanism."""

    def __init__(
        self,
        mechanism: str,
        initial_response: bytes | None,
        *,
        nonce_factory: NonceFactory = _random_nonce,
    ) -> None:
        mech = mechanism.upper()
        if mech not in MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism: {mechanism}")
        self.mechanism = mech
        self._initial = initial_response
        self._nonce_factory = nonce_factory
        self._step = _Step.START
        self._login_user = ""
        self._first: _ClientFirst | None = None
        self._server_first = ""
        self._creds: ScramCredentials | None = None
        self._scram_user: str | None = None

    @property
    def authcid(self) -> str | None:
        """The authentication identity once the client has named it."""
        if self._first is not None:
            return self._first.authcid
        return self._login_user or None

    @property
    def done(self) -> bool:
        """True once the exchange has succeeded or failed."""
        return self._step is _Step.DONE

    def _finish(self, event: Succeeded | Failed) -> Succeeded | Failed:
        self._step = _Step.DONE
        return event

    def _expect(self, *steps: _Step) -> None:
        if self._step not in steps:
            raise SaslStateError(f"SASL exchange is at step {self._step.value}")

    def start(self) -> SaslEvent:
        """Begin the exchange, consuming the initial response if one was given."""
        self._expect(_Step.START)
        initial = self._initial
        if self.mechanism == "PLAIN":
            self._step = _Step.PLAIN_RESPONSE
        elif self.mechanism == "LOGIN":
            self._step = _Step.LOGIN_USER
            if initial is None:
                return Challenge(b"Username:")
        else:
            self._step = _Step.SCRAM_FIRST
        if initial is None:
            return Challenge(b"")
        return self.respond(initial)

    def respond(self, data: bytes) -> SaslEvent:
        """Feed the client's decoded response to the last challenge."""
        step = self._step
        if step is _Step.PLAIN_RESPONSE:
            return self._plain(data)
        if step is _Step.LOGIN_USER:
            return self._login_user_step(data)
        if step is _Step.LOGIN_PASSWORD:
            return self._login_password_step(data)
        if step is _Step.SCRAM_FIRST:
            return self._scram_first(data)
        if step is _Step.SCRAM_FINAL:
            return self._scram_final(data)
        raise SaslStateError(f"SASL exchange is at step {step.value}")

    def cancel(self) -> Failed:
        """The client cancelled (`*`)."""
        self._step = _Step.DONE
        return _malformed("authentication cancelled")

    # PLAIN and LOGIN ---------------------------------------------------------------

    def _plain(self, data: bytes) -> SaslEvent:
        parts = data.split(b"\0")
        if len(parts) != 3:
            return self._finish(_malformed("PLAIN message needs authzid NUL authcid NUL passwd"))
        texts = [_utf8(p) for p in parts]
        authzid, authcid, password = texts
        if authzid is None or authcid is None or password is None:
            return self._finish(_malformed("PLAIN message is not UTF-8"))
        if not authcid or not password:
            return self._finish(_malformed("PLAIN needs a username and a password"))
        authcid, authzid = _identity(authcid), _identity(authzid)
        if authcid is None or authzid is None:
            return self._finish(_malformed("PLAIN identity is not printable"))
        if authzid and authzid != authcid:
            return self._finish(
                Failed("authorization identity differs from authentication identity", False)
            )
        self._step = _Step.PASSWORD_CHECK
        return VerifyPassword(authcid, _normalize(password))

    def _login_user_step(self, data: bytes) -> SaslEvent:
        user = _identity(_utf8(data) or "")
        if not user:
            return self._finish(_malformed("LOGIN needs a printable UTF-8 username"))
        self._login_user = user
        self._step = _Step.LOGIN_PASSWORD
        return Challenge(b"Password:")

    def _login_password_step(self, data: bytes) -> SaslEvent:
        password = _utf8(data)
        if not password or "\0" in password:
            return self._finish(_malformed("LOGIN needs a UTF-8 password"))
        self._step = _Step.PASSWORD_CHECK
        return VerifyPassword(self._login_user, _normalize(password))

    def password_checked(self, user: str | None) -> Succeeded | Failed:
        """Answer a VerifyPassword: the canonical user, or None if it did not match."""
        self._expect(_Step.PASSWORD_CHECK)
        if user is None:
            return self._finish(Failed("invalid credentials", malformed=False))
        return self._finish(Succeeded(user, None))

    # SCRAM-SHA-256 -----------------------------------------------------------------

    def _scram_first(self, data: bytes) -> SaslEvent:
        first = _parse_client_first(data)
        if isinstance(first, Failed):
            return self._finish(first)
        self._first = first
        self._step = _Step.SCRAM_LOOKUP
        return NeedScramCredentials(first.authcid)

    def scram_credentials(self, creds: ScramCredentials | None, user: str | None) -> SaslEvent:
        """Answer NeedScramCredentials: stored keys and canonical user, or None for unknown."""
        self._expect(_Step.SCRAM_LOOKUP)
        assert self._first is not None
        if creds is None or user is None:
            creds, user = _fake_credentials(self._first.authcid), None
        self._creds = creds
        self._scram_user = user
        nonce = self._first.nonce + self._nonce_factory()
        salt = base64.b64encode(creds.salt).decode("ascii")
        self._server_first = f"r={nonce},s={salt},i={creds.iterations}"
        self._step = _Step.SCRAM_FINAL
        return Challenge(self._server_first.encode("ascii"))

    def _scram_final(self, data: bytes) -> SaslEvent:
        first, creds = self._first, self._creds
        assert first is not None and creds is not None
        text = _utf8(data)
        if text is None:
            return self._finish(_malformed("client-final-message is not UTF-8"))
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c="):
            return self._finish(_malformed("client-final-message needs c=, r= and p="))
        cbind = decode_client_response(attrs[0][2:].encode("ascii", "replace"))
        proof = decode_client_response(proof_b64.encode("ascii", "replace"))
        if not isinstance(cbind, bytes) or not isinstance(proof, bytes) or len(proof) != 32:
            return self._finish(_malformed("bad base64 in client-final-message"))
        if cbind != first.gs2_header.encode("utf-8"):
            return self._finish(Failed("channel binding mismatch", malformed=False))
        if attrs[1] != "r=" + self._server_first[2:].split(",", 1)[0]:
            return self._finish(Failed("nonce mismatch", malformed=False))
        auth_message = f"{first.bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(creds.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        valid = hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key)
        if not valid or self._scram_user is None:
            return self._finish(Failed("invalid credentials", malformed=False))
        signature = _hmac(creds.server_key, auth_message)
        final = b"v=" + base64.b64encode(signature)
        return self._finish(Succeeded(self._scram_user, final))
