"""Postgres v3 wire protocol, sans-IO: framing, the startup phase, messages, errors, SCRAM."""

from .errors import PgError, ProtocolViolation
from .framing import FrameReader, read_startup
from .scram import ScramClient, ScramServer, make_verifier

__all__ = [
    "FrameReader",
    "PgError",
    "ProtocolViolation",
    "ScramClient",
    "ScramServer",
    "make_verifier",
    "read_startup",
]
