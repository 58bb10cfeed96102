"""Correlation with the database's own logs: the upstream connection's application_name.

With ``upstream.tag_application_name`` (off by default: the client could read the tag
back with ``SHOW application_name``, which Postgres would not show it), the proxy logs in
upstream with ``application_name = "pgw:<tag>"`` (plus the client's own
name after a ``/``, cut to Postgres's 63 bytes), where ``<tag>`` is a random correlation id
recorded in the session's start metadata (``upstream_application_name``). pgAudit's ``%a``,
RDS Database Activity Streams' ``clientApplication`` and ``pg_stat_activity`` then name the
pgwitness session. The client keeps seeing the name it set: the server's ParameterStatus
for application_name in the login answer is rewritten back to the client's value.
"""

from __future__ import annotations

import secrets
import struct

NAMEDATALEN = 64  # Postgres keeps application_name to NAMEDATALEN - 1 bytes


def upstream_name(client_name: str | None) -> str:
    name = f"pgw:{secrets.token_hex(8)}"
    if client_name:
        name += "/" + client_name
    raw = name.encode()[: NAMEDATALEN - 1]
    return raw.decode("utf-8", "ignore")  # never cut a character in half


def restore_client_name(frames: bytes, client_name: str) -> bytes:
    """Rewrite ParameterStatus(application_name) in the server's login frames."""
    out, off = [], 0
    while off + 5 <= len(frames):
        (length,) = struct.unpack_from(">i", frames, off + 1)
        end = off + 1 + length
        frame = frames[off:end]
        if frame[:1] == b"S" and frame[5:].startswith(b"application_name\x00"):
            body = b"application_name\x00" + client_name.encode() + b"\x00"
            frame = b"S" + struct.pack(">i", len(body) + 4) + body
        out.append(frame)
        off = end
    out.append(frames[off:])
    return b"".join(out)


def parameter_status_swap(upstream_name: str, client_name: str) -> tuple[bytes, bytes]:
    """(ParameterStatus body the server sends for ``upstream_name``, the whole frame the
    client gets instead): for the Relay, which swaps it after RESET / DISCARD ALL."""
    body = b"application_name\x00" + client_name.encode() + b"\x00"
    return (b"application_name\x00" + upstream_name.encode() + b"\x00",
            b"S" + struct.pack(">i", len(body) + 4) + body)
