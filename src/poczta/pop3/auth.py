"""POP3 AUTH framing (RFC 5034) around one SASL exchange.

Turns the exchange's events into POP3 steps: "+ " challenge lines, questions for
the session, and the outcome. The base64 framing: an initial response of "=" is
empty, a client line "*" cancels, anything not valid base64 fails the command, and
data the server sends with success travels in a last challenge that the client
answers with an empty line.
"""

from __future__ import annotations

from dataclasses import dataclass

from poczta.pop3.events import CheckPassword, Continue, NeedScram
from poczta.sasl import (
    Cancelled,
    Challenge,
    Failed,
    NeedScramCredentials,
    SaslEvent,
    SaslExchange,
    ScramCredentials,
    Succeeded,
    VerifyPassword,
    decode_client_response,
)


@dataclass(frozen=True)
class AuthDone:
    """The client authenticated as `user`."""

    user: str


@dataclass(frozen=True)
class AuthFailed:
    """The exchange ended without success.

    `malformed` marks protocol errors (bad base64, cancel, broken mechanism
    messages); otherwise the credentials were rejected.
    """

    text: str
    malformed: bool


AuthStep = Continue | CheckPassword | NeedScram | AuthDone | AuthFailed


class SaslLogin:
    """One AUTH command in progress: feed it client lines and the session's answers."""

    def __init__(self, mechanism: str, initial_response: bytes | None) -> None:
        self._exchange = SaslExchange(mechanism, initial_response)
        self._final_user: str | None = None
        self.reading = False

    @classmethod
    def begin(cls, mechanism: str, initial_arg: str | None) -> tuple[SaslLogin | None, AuthStep]:
        """Start `AUTH mechanism [initial-response]`; the login is None when it failed at once."""
        initial: bytes | None = None
        if initial_arg is not None:
            decoded = decode_client_response(initial_arg.encode("utf-8"))
            if not isinstance(decoded, bytes):
                return None, AuthFailed("Invalid base64 in initial response", malformed=True)
            initial = decoded
        login = cls(mechanism, initial)
        return login, login._step(login._exchange.start())

    def line(self, line: bytes) -> AuthStep:
        """The client's line answering the last challenge."""
        self.reading = False
        decoded = decode_client_response(line)
        if isinstance(decoded, Cancelled):
            return AuthFailed("Authentication cancelled", malformed=True)
        if not isinstance(decoded, bytes):
            return AuthFailed("Invalid base64 in authentication response", malformed=True)
        if self._final_user is not None:
            if decoded:
                return AuthFailed("Expected an empty response to the final data", malformed=True)
            return AuthDone(self._final_user)
        return self._step(self._exchange.respond(decoded))

    def password_checked(self, user: str | None) -> AuthStep:
        """The session's answer to CheckPassword: canonical user or None."""
        return self._step(self._exchange.password_checked(user))

    def scram_credentials(self, creds: ScramCredentials | None, user: str | None) -> AuthStep:
        """The session's answer to NeedScram."""
        return self._step(self._exchange.scram_credentials(creds, user))

    def _step(self, event: SaslEvent) -> AuthStep:
        match event:
            case Challenge(data=data):
                self.reading = True
                return Continue(data)
            case VerifyPassword(authcid=authcid, password=password):
                return CheckPassword(authcid, password)
            case NeedScramCredentials(authcid=authcid):
                return NeedScram(authcid)
            case Succeeded(user=user, final_data=final):
                if not final:
                    return AuthDone(user)
                self.reading = True
                self._final_user = user
                return Continue(final)
            case Failed(reason=reason, malformed=malformed):
                if malformed:
                    return AuthFailed(f"Malformed authentication exchange: {reason}", True)
                return AuthFailed("Authentication failed", malformed=False)
        raise AssertionError(f"unexpected SASL event {event!r}")
