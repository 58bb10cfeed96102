"""Errors the proxy sends to clients, each with a SQLSTATE and a message a user can act on."""

from __future__ import annotations

import struct


def frame(type_byte: bytes, body: bytes = b"") -> bytes:
    """Encode one message: type byte, int32 length (counting itself), body."""
    return type_byte + struct.pack("!i", len(body) + 4) + body


# SQLSTATEs the proxy itself emits.
PROTOCOL_VIOLATION = "08P01"
CONNECTION_FAILURE = "08006"
CANNOT_CONNECT_NOW = "57P03"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
INSUFFICIENT_PRIVILEGE = "42501"
TOO_MANY_CONNECTIONS = "53300"
ADMIN_SHUTDOWN = "57P01"
FEATURE_NOT_SUPPORTED = "0A000"


class PgError(Exception):
    """An error that becomes an ErrorResponse on the client connection."""

    # Set only on login refusals, read with getattr and a default (so declared, not
    # assigned): the connection outcome, the auth-failure metric label, the grant named.
    outcome: str
    reason: str
    grant: str | None

    def __init__(self, message: str, sqlstate: str, severity: str = "ERROR", detail: str = ""):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.severity = severity
        self.detail = detail

    @property
    def fatal(self) -> bool:
        return self.severity == "FATAL"

    def encode(self) -> bytes:
        return error_response(self.severity, self.sqlstate, self.message, self.detail)

    @classmethod
    def fatal_error(cls, message: str, sqlstate: str, detail: str = "") -> PgError:
        return cls(message, sqlstate, "FATAL", detail)


class Refused(PgError):
    """A connection refused before it went live: a FATAL the client gets, and what the
    proxy counts and records about it. ``outcome`` labels ``connections_total``;
    ``reason`` is the ``login.refused`` event's short code (the outcome if empty) and
    labels ``auth_failures_total``; ``grant`` names the grant concerned, if known."""

    def __init__(
        self,
        message: str,
        sqlstate: str,
        *,
        outcome: str = "refused",
        reason: str = "",
        grant: str | None = None,
        detail: str = "",
    ):
        super().__init__(message, sqlstate, "FATAL", detail)
        self.outcome = outcome
        self.reason = reason or outcome
        self.grant = grant

    @classmethod
    def of(cls, exc: PgError, outcome: str, reason: str = "") -> Refused:
        """``exc`` as a refusal with ``outcome``, keeping what it says and, for a refusal,
        its reason and grant (``reason`` given: replaces it)."""
        if isinstance(exc, Refused):
            reason, grant = reason or exc.reason, exc.grant
        else:
            grant = None
        out = cls(exc.message, exc.sqlstate, outcome=outcome, reason=reason, grant=grant, detail=exc.detail)
        out.severity = exc.severity
        return out


class ProtocolViolation(PgError):
    """Malformed input from a peer: FATAL 08P01 and the connection closes. ``unanswered``:
    Postgres closes without a word for this one (it logs it as a COMMERROR: an invalid
    startup packet length, the first bytes of a client that sent Terminate before its
    startup packet), and so does the proxy."""

    def __init__(self, message: str, sqlstate: str = PROTOCOL_VIOLATION, *, unanswered: bool = False):
        super().__init__(message, sqlstate, "FATAL")
        self.unanswered = unanswered


def error_response(severity: str, sqlstate: str, message: str, detail: str = "") -> bytes:
    fields = [b"S", severity.encode(), b"\x00", b"V", severity.encode(), b"\x00"]
    fields += [b"C", sqlstate.encode(), b"\x00", b"M", message.encode(), b"\x00"]
    if detail:
        fields += [b"D", detail.encode(), b"\x00"]
    fields.append(b"\x00")
    return frame(b"E", b"".join(fields))


def notice_response(message: str, sqlstate: str = "01000", severity: str = "WARNING") -> bytes:
    body = b"".join(
        [
            b"S", severity.encode(), b"\x00", b"V", severity.encode(), b"\x00",
            b"C", sqlstate.encode(), b"\x00", b"M", message.encode(), b"\x00", b"\x00",
        ]
    )
    return frame(b"N", body)
