"""Message type bytes and the few encoders/decoders the proxy needs.

'D', 'C', 'E', 'S' mean different things by direction, so the two directions have
their own constant sets. Everything the proxy does not need to understand is relayed
as the exact bytes received.
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import ProtocolViolation, frame

_I16: Final = struct.Struct("!h")
_I32: Final = struct.Struct("!i")


class Frontend:
    """Frontend (client → server) message types, as ints (what indexing bytes gives)."""

    QUERY: Final[int] = ord("Q")  # Query
    PARSE: Final[int] = ord("P")  # Parse
    BIND: Final[int] = ord("B")  # Bind
    DESCRIBE: Final[int] = ord("D")  # Describe
    EXECUTE: Final[int] = ord("E")  # Execute
    CLOSE: Final[int] = ord("C")  # Close
    SYNC: Final[int] = ord("S")  # Sync
    FLUSH: Final[int] = ord("H")  # Flush
    FUNCTION_CALL: Final[int] = ord("F")  # FunctionCall
    TERMINATE: Final[int] = ord("X")  # Terminate
    COPY_DATA: Final[int] = ord("d")  # CopyData
    COPY_DONE: Final[int] = ord("c")  # CopyDone
    COPY_FAIL: Final[int] = ord("f")  # CopyFail
    PASSWORD: Final[int] = ord("p")  # PasswordMessage / SASLInitialResponse / SASLResponse

    KNOWN: Final[frozenset[int]] = frozenset(b"QPBDECSHFXdcfp")


class Backend:
    """Backend (server → client) message types."""

    AUTHENTICATION: Final[int] = ord("R")
    BACKEND_KEY_DATA: Final[int] = ord("K")
    BIND_COMPLETE: Final[int] = ord("2")
    CLOSE_COMPLETE: Final[int] = ord("3")
    COMMAND_COMPLETE: Final[int] = ord("C")
    COPY_IN_RESPONSE: Final[int] = ord("G")
    COPY_OUT_RESPONSE: Final[int] = ord("H")
    COPY_BOTH_RESPONSE: Final[int] = ord("W")
    COPY_DATA: Final[int] = ord("d")
    DATA_ROW: Final[int] = ord("D")
    EMPTY_QUERY: Final[int] = ord("I")
    ERROR_RESPONSE: Final[int] = ord("E")
    FUNCTION_CALL_RESPONSE: Final[int] = ord("V")
    NEGOTIATE_PROTOCOL_VERSION: Final[int] = ord("v")
    NO_DATA: Final[int] = ord("n")
    NOTICE_RESPONSE: Final[int] = ord("N")
    NOTIFICATION: Final[int] = ord("A")
    PARAMETER_DESCRIPTION: Final[int] = ord("t")
    PARAMETER_STATUS: Final[int] = ord("S")
    PARSE_COMPLETE: Final[int] = ord("1")
    PORTAL_SUSPENDED: Final[int] = ord("s")
    READY_FOR_QUERY: Final[int] = ord("Z")
    ROW_DESCRIPTION: Final[int] = ord("T")


# Authentication request codes (the int32 after 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


def cstring(buf: bytes, pos: int, encoding: str = "utf-8") -> tuple[str, int]:
    """Decode a NUL-terminated string at ``pos``; return it and the position after."""
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise ProtocolViolation("unterminated string in message")
    try:
        return buf[pos:end].decode(encoding), end + 1
    except UnicodeDecodeError as exc:
        raise ProtocolViolation(f"invalid {encoding} text in message") from exc


# --- frontend decoders -------------------------------------------------------------


def decode_query(msg: bytes, encoding: str = "utf-8") -> str:
    """Query: the SQL text of a whole 'Q' frame, in the session's client encoding."""
    return query_text(msg, 0, len(msg), encoding)


def query_text(run: bytes, start: int, end: int, encoding: str = "utf-8") -> str:
    """The SQL text of the whole 'Q' frame at ``run[start:end]`` (``decode_query``), read in
    place: the relay's hot path does not copy the frame first."""
    nul = run.find(b"\x00", start + 5, end)
    if nul < 0:
        raise ProtocolViolation("unterminated string in message")
    try:
        return run[start + 5 : nul].decode(encoding)
    except UnicodeDecodeError as exc:
        raise ProtocolViolation(f"invalid {encoding} text in message") from exc


def notification_channel(run: bytes, start: int, end: int, encoding: str = "utf-8") -> str:
    """The channel of the whole NotificationResponse ('A') frame at ``run[start:end]`` (after
    its sender's pid), as the server names it; "" if the frame is malformed."""
    nul = run.find(b"\x00", start + 9, end)
    if nul < 0:
        return ""
    return run[start + 9 : nul].decode(encoding, "replace")


def decode_parse(msg: bytes, encoding: str = "utf-8") -> tuple[str, str]:
    """Parse: ``(statement name, query text)`` of a whole 'P' frame."""
    name, pos = cstring(msg, 5, encoding)
    query, _ = cstring(msg, pos, encoding)
    return name, query


def reparsed(msg: bytes, sql: str, encoding: str = "utf-8") -> bytes | None:
    """A whole 'P' frame with its query text replaced by ``sql`` (its name and parameter
    types kept), or None: the frame's own text does not encode back to its bytes in
    ``encoding`` (a sequence the decoder maps that the server would not read so), or
    ``sql`` does not encode."""
    at = msg.find(b"\x00", 5) + 1
    end = msg.find(b"\x00", at) if at > 0 else -1
    if end < 0:
        return None
    text = msg[at:end]
    try:
        if text.decode(encoding).encode(encoding) != text:
            return None
        body = sql.encode(encoding)
    except (UnicodeError, LookupError):
        return None
    if b"\x00" in body:
        return None
    return frame(b"P", msg[5:at] + body + msg[end:])


# parameter types a parameter cast to text or varchar reads as the text bound (and 0: none)
_TEXT_LIKE_OIDS: Final = frozenset((0, 25, 1043))


def policy_parse_types(msg: bytes) -> tuple[int, ...]:
    """The parameter types of a whole 'P' frame given by OID from 16384 on (types a user
    made: a value bound to one may run its functions), then a 0 if the frame gives any
    parameter a type other than text or varchar (built-in or a user's): the policy allows
    a setting named by a parameter cast to text or varchar only where the server reads the
    bound text itself (``StatementPolicy._checked_parse``). () for the common frame with
    none. A truncated list raises ProtocolViolation (the server would too)."""
    end = msg.find(b"\x00", msg.find(b"\x00", 5) + 1)  # after the name and the query
    if end < 0:
        raise ProtocolViolation("unterminated string in message")
    pos = end + 1
    if len(msg) < pos + 2:
        raise ProtocolViolation("malformed Parse message")
    n = _I16.unpack_from(msg, pos)[0]
    if n <= 0:
        return ()
    if len(msg) < pos + 2 + 4 * n:
        raise ProtocolViolation("malformed Parse message: parameter types cut short")
    out = []
    other = False
    for i in range(n):
        oid = _I32.unpack_from(msg, pos + 2 + 4 * i)[0] & 0xFFFFFFFF  # an OID is unsigned
        if oid >= 16384:
            out.append(oid)
        if oid not in _TEXT_LIKE_OIDS:
            other = True
    if other:
        out.append(0)
    return tuple(out)


def bind_statement(msg: bytes, encoding: str = "utf-8") -> str:
    """Bind: the name of the statement it binds (read from the frame's head, which a
    streamed frame's first part holds)."""
    _portal, pos = cstring(msg, 5, encoding)
    return cstring(msg, pos, encoding)[0]


def renamed_statement(msg: bytes, name: str) -> bytes:
    """A whole Parse, Bind, Describe or Close frame naming statement ``name`` instead:
    Parse's first string, Bind's second (after the portal), a statement Describe's or
    Close's name (after the 'S')."""
    t = msg[:1]
    if t == b"P":
        start = 5
    elif t == b"B":
        start = msg.index(b"\x00", 5) + 1
    elif t in (b"D", b"C") and msg[5:6] == b"S":
        start = 6
    else:
        raise ProtocolViolation("no statement name to rename in this message")
    end = msg.index(b"\x00", start)
    body = msg[5:start] + name.encode() + msg[end:]
    return t + _I32.pack(len(body) + 4) + body


def statement_named(msg: bytes, encoding: str = "utf-8") -> str | None:
    """The statement a whole Describe or Close frame names (None: a portal's)."""
    if msg[5:6] != b"S":
        return None
    return cstring(msg, 6, encoding)[0]


def decode_bind(msg: bytes) -> tuple[tuple[int, ...], tuple[bytes | None, ...]]:
    """Bind: ``(parameter format codes, parameter values)`` of a whole 'B' frame, each
    format as the protocol gives it (none: all text; one: all the same; else one each),
    a value None for SQL NULL. A frame cut short or inconsistent raises
    ProtocolViolation (the server would refuse it too)."""
    if len(msg) < 5 or _I32.unpack_from(msg, 1)[0] != len(msg) - 1:
        raise ProtocolViolation("malformed Bind message: not whole")
    pos = msg.find(b"\x00", 5)
    pos = msg.find(b"\x00", pos + 1) if pos >= 0 else -1
    if pos < 0:
        raise ProtocolViolation("unterminated string in message")
    pos += 1
    try:
        nf = _I16.unpack_from(msg, pos)[0]
        formats = tuple(_I16.unpack_from(msg, pos + 2 + 2 * i)[0] for i in range(nf))
        pos += 2 + 2 * nf
        n = _I16.unpack_from(msg, pos)[0]
        pos += 2
        values: list[bytes | None] = []
        for _ in range(n):
            size = _I32.unpack_from(msg, pos)[0]
            pos += 4
            if size == -1:
                values.append(None)
                continue
            if size < 0 or pos + size > len(msg):
                raise ProtocolViolation("malformed Bind message: a value cut short")
            values.append(msg[pos : pos + size])
            pos += size
    except struct.error as exc:
        raise ProtocolViolation("malformed Bind message") from exc
    if nf < 0 or n < 0 or nf not in (0, 1, n):
        raise ProtocolViolation("malformed Bind message: parameter formats")
    return formats, tuple(values)


def column_values(msg: bytes) -> list[bytes]:
    """The non-NULL values of a DataRow frame, as far as ``msg`` holds them (a large row
    arrives in parts)."""
    count = int.from_bytes(msg[5:7], "big")
    pos = 7
    size_all = len(msg)
    values: list[bytes] = []
    for _column in range(count):
        if pos + 4 > size_all:
            break
        size = int.from_bytes(msg[pos : pos + 4], "big", signed=True)
        pos += 4
        if size < 0:
            continue
        if pos + size > size_all:
            break
        values.append(msg[pos : pos + size])
        pos += size
    return values


def decode_password(msg: bytes) -> bytes:
    return msg[5:]


def decode_sasl_initial(msg: bytes) -> tuple[str, bytes]:
    mech, pos = cstring(msg, 5)
    if len(msg) < pos + 4:
        raise ProtocolViolation("malformed SASLInitialResponse")
    n = _I32.unpack_from(msg, pos)[0]
    data = msg[pos + 4 :] if n < 0 else msg[pos + 4 : pos + 4 + n]
    return mech, data


# --- backend decoders ----------------------------------------------------------


def decode_error_fields(msg: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields keyed by their one-letter code."""
    fields: dict[str, str] = {}
    pos = 5
    while pos < len(msg) and msg[pos] != 0:
        code = chr(msg[pos])
        end = msg.find(b"\x00", pos + 1)
        if end < 0:
            break
        fields[code] = msg[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return fields


def encode_error_fields(type_byte: bytes, fields: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + v.encode() + b"\x00" for k, v in fields.items()) + b"\x00"
    return frame(type_byte, body)


def decode_auth(msg: bytes) -> tuple[int, bytes]:
    if len(msg) < 9:
        raise ProtocolViolation("malformed Authentication message")
    return _I32.unpack_from(msg, 5)[0], msg[9:]


# --- encoders ------------------------------------------------------------------


def auth_request(code: int, data: bytes = b"") -> bytes:
    return frame(b"R", _I32.pack(code) + data)


def auth_sasl(mechanisms: list[str]) -> bytes:
    return auth_request(AUTH_SASL, b"".join(m.encode() + b"\x00" for m in mechanisms) + b"\x00")


def ready_for_query(status: bytes = b"I") -> bytes:
    return frame(b"Z", status)


def parameter_status(name: str, value: str) -> bytes:
    return frame(b"S", name.encode() + b"\x00" + value.encode() + b"\x00")


def negotiate_protocol_version(newest_version: int, unknown_options: tuple[str, ...]) -> bytes:
    """Postgres puts the full newest version (196608 for 3.0) here, and libpq 18 checks it."""
    body = _I32.pack(newest_version) + _I32.pack(len(unknown_options))
    body += b"".join(o.encode() + b"\x00" for o in unknown_options)
    return frame(b"v", body)


def query(sql: str, encoding: str = "utf-8") -> bytes:
    return frame(b"Q", sql.encode(encoding) + b"\x00")


def parse(name: str, sql: str) -> bytes:
    return frame(b"P", name.encode() + b"\x00" + sql.encode() + b"\x00" + _I16.pack(0))


def bind_no_params(portal: str = "", statement: str = "") -> bytes:
    body = portal.encode() + b"\x00" + statement.encode() + b"\x00"
    body += _I16.pack(0) + _I16.pack(0) + _I16.pack(0)
    return frame(b"B", body)


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frame(b"E", portal.encode() + b"\x00" + _I32.pack(max_rows))


def copy_fail(message: str) -> bytes:
    return frame(b"f", message.encode() + b"\x00")


def close_statement(name: str) -> bytes:
    return frame(b"C", b"S" + name.encode() + b"\x00")


def password_message(data: bytes) -> bytes:
    return frame(b"p", data)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return frame(b"p", mechanism.encode() + b"\x00" + _I32.pack(len(data)) + data)


def cancel_request(pid: int, secret: bytes) -> bytes:
    body = _I32.pack(80877102) + _I32.pack(pid) + secret
    return _I32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return _I32.pack(8) + _I32.pack(80877103)


TERMINATE = frame(b"X")
SYNC = frame(b"S")
SSL_YES = b"S"
SSL_NO = b"N"
