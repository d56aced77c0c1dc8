"""One SMTP AUTH dialogue (RFC 4954): the AUTH argument, 334 challenges and the outcome.

`AuthDialogue` wraps a `poczta.sasl.SaslExchange` in SMTP framing. Each step
returns an `AuthStep`: the events to emit and what the server should do next.
The server keeps the session rules (who may AUTH when, failure and error limits);
this module only speaks the exchange. SASL success data (the SCRAM server-final)
is sent in a 334 challenge that the client answers with an empty line, since a
235 reply cannot carry it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from poczta import sasl
from poczta.smtp import replies as R
from poczta.smtp.events import AuthFailed, AuthPassword, AuthScram, AuthSucceeded, Event
from poczta.smtp.replies import Reply


class AuthOutcome(enum.Enum):
    """What the server does after an AUTH step."""

    CHALLENGE = "challenge"  # read the client's next line as an AUTH response
    QUESTION = "question"  # the step's last event is a question for the session
    SUCCESS = "success"  # authenticated as `AuthDialogue.user`
    FAILED = "failed"  # credentials refused: counts towards max_auth_failures
    ERROR = "error"  # malformed or cancelled: the reply counts as a client error


@dataclass(frozen=True, slots=True)
class AuthStep:
    """Events to emit (for ERROR, the single error reply) and the outcome."""

    events: tuple[Event, ...]
    outcome: AuthOutcome


def _error(reply: Reply) -> AuthStep:
    return AuthStep((reply,), AuthOutcome.ERROR)


def _challenge(data: bytes) -> AuthStep:
    return AuthStep((Reply(334, None, sasl.encode_challenge(data)),), AuthOutcome.CHALLENGE)


class AuthDialogue:
    """The exchange started by one AUTH command."""

    def __init__(self, exchange: sasl.SaslExchange) -> None:
        self._exchange = exchange
        self._final_user: str | None = None
        self.user: str | None = None

    @classmethod
    def begin(cls, arg: str, nonce_factory: Callable[[], str] | None) -> AuthStep | AuthDialogue:
        """Parse `mechanism [initial-response]`; an AuthStep here is an error."""
        parts = arg.split()
        if len(parts) not in (1, 2):
            return _error(Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
        mechanism = parts[0].upper()
        if mechanism not in sasl.MECHANISMS:
            return _error(Reply(504, "5.5.4", "Unrecognized authentication type"))
        initial: bytes | None = None
        if len(parts) == 2:
            decoded = sasl.decode_client_response(parts[1].encode("ascii", "replace"))
            if isinstance(decoded, sasl.Cancelled):
                return _error(R.AUTH_CANCELLED)
            if isinstance(decoded, sasl.Malformed):
                return _error(R.AUTH_MALFORMED)
            initial = decoded
        if nonce_factory is None:
            return cls(sasl.SaslExchange(mechanism, initial))
        return cls(sasl.SaslExchange(mechanism, initial, nonce_factory=nonce_factory))

    def start(self) -> AuthStep:
        """The first step, after `begin`."""
        return self._step(self._exchange.start())

    def line(self, line: bytes) -> AuthStep:
        """The client's line in answer to a 334."""
        decoded = sasl.decode_client_response(line)
        if self._final_user is not None:
            user, self._final_user = self._final_user, None
            if decoded == b"":
                return self._success(user)
            return _error(R.AUTH_MALFORMED)
        if isinstance(decoded, sasl.Cancelled):
            self._exchange.cancel()
            return _error(R.AUTH_CANCELLED)
        if isinstance(decoded, sasl.Malformed):
            return _error(R.AUTH_MALFORMED)
        return self._step(self._exchange.respond(decoded))

    def password_checked(self, user: str | None) -> AuthStep:
        """The session's answer to AuthPassword."""
        return self._step(self._exchange.password_checked(user))

    def scram_credentials(self, creds: sasl.ScramCredentials | None, user: str | None) -> AuthStep:
        """The session's answer to AuthScram."""
        return self._step(self._exchange.scram_credentials(creds, user))

    def _success(self, user: str) -> AuthStep:
        self.user = user
        mechanism = self._exchange.mechanism
        if mechanism.startswith("SCRAM"):
            # the session never saw the proof verify; tell it, for throttling and logs
            return AuthStep((AuthSucceeded(user, mechanism), R.AUTH_OK), AuthOutcome.SUCCESS)
        return AuthStep((R.AUTH_OK,), AuthOutcome.SUCCESS)

    def _step(self, event: sasl.SaslEvent) -> AuthStep:
        if isinstance(event, sasl.Challenge):
            return _challenge(event.data)
        if isinstance(event, sasl.VerifyPassword):
            return AuthStep((AuthPassword(event.authcid, event.password),), AuthOutcome.QUESTION)
        if isinstance(event, sasl.NeedScramCredentials):
            return AuthStep((AuthScram(event.authcid),), AuthOutcome.QUESTION)
        if isinstance(event, sasl.Succeeded):
            if event.final_data is None:
                return self._success(event.user)
            self._final_user = event.user
            return _challenge(event.final_data)
        if event.malformed:
            return _error(R.AUTH_MALFORMED)
        exchange = self._exchange
        if exchange.mechanism.startswith("SCRAM"):
            # the session never saw the proof fail; tell it, for throttling and logs
            failed = AuthFailed(exchange.authcid or "", exchange.mechanism)
            return AuthStep((failed, R.AUTH_INVALID), AuthOutcome.FAILED)
        return AuthStep((R.AUTH_INVALID,), AuthOutcome.FAILED)
