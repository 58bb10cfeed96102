"""Why a client connection ended: the ``cause`` of ``session.end`` records, the
``sessions_ended_total`` label and the "session ended" log line.

The values are the strings recordings and dashboards have always used: a ``StrEnum``
member *is* its value (JSON, Prometheus labels and logs see the plain string).
"""

from __future__ import annotations

from enum import StrEnum


class EndCause(StrEnum):
    TERMINATE = "terminate"  # the client sent Terminate
    DISCONNECT = "disconnect"  # the client closed its socket while live
    UPSTREAM = "upstream"  # the database ended the session or broke the protocol
    PROTOCOL_ERROR = "protocol_error"  # the client broke the protocol while live
    EXPIRED = "expired"  # the grant expired
    REVOKED = "revoked"  # the grant was revoked
    SHUTDOWN = "shutdown"  # the proxy stopped, past its grace period
    HANDSHAKE_ABORTED = "handshake_aborted"  # the client left before logging in
    HANDSHAKE_FAILED = "handshake_failed"  # refused, timed out or failed before login
    PRELOGIN_EVICTED = "prelogin_evicted"  # the pre-login places were full: the oldest went
