"""Frame splitting for the Postgres v3 protocol, sans-IO.

``FrameReader`` takes bytes as they arrive and hands back runs of frames (type byte +
int32 length that counts itself + body) as one ``bytes`` object plus an index of where
each frame starts, so the relay can forward the run untouched and look only at the
frames it cares about. Frames are whole, except that a large frame of a *streamed* type
(row data, COPY data, Bind: bytes the relay never inspects) is passed on as it arrives
rather than buffered up to Postgres's 1 GB limit. ``read_startup`` parses the startup
phase, whose first packet has no type byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from .errors import ProtocolViolation

_INT32: Final = struct.Struct("!i")
_STARTUP_HEAD: Final = struct.Struct("!ii")

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_STARTUP_BYTES = 10_004  # Postgres: 10000 bytes after the length word (MAX_STARTUP_PACKET_LENGTH)
TLS_HANDSHAKE_RECORD = b"\x16"  # first byte of a TLS handshake record (ClientHello)
# Postgres's own ceiling for one message (PQ_LARGE_MESSAGE_LIMIT, MaxAllocSize - 1): the
# limit for streamed frames, which the proxy never holds whole.
MAX_STREAMED_LENGTH: Final = 0x3FFFFFFE
# A streamed-type frame at least this long (type byte included) that is not complete yet
# is passed on in pieces; a smaller one is buffered until whole.
STREAM_MIN_BYTES: Final = 256 * 1024


class FrameReader:
    """Buffers a byte stream and yields runs of frames.

    ``feed(data)`` returns ``(run, frames)``: ``run`` is the bytes passed on by this call,
    in order, and ``frames`` a list of ``(type, start, end)`` offsets into ``run``, one per
    frame that *starts* in this run. Bytes of an incomplete trailing frame stay buffered,
    unless its type is in ``streamed`` and it is at least ``stream_min`` bytes long: then
    what has arrived is passed on now (its ``end`` is clipped to ``len(run)``) and the
    rest leads the next runs, as continuation bytes before the first frame.

    Frames the caller inspects are never streamed, so they are always whole and at most
    ``max_len`` long; streamed ones may be as long as Postgres allows. While a frame is
    being streamed, ``mid_frame`` is true: nothing may be spliced into the output then.
    """

    __slots__ = ("_buf", "_part", "_need", "_skip", "max_len", "valid", "streamed", "stream_min")

    def __init__(
        self,
        max_len: int = 64 * 1024 * 1024,
        valid: frozenset[int] | None = None,
        streamed: frozenset[int] = frozenset(),
        stream_min: int = STREAM_MIN_BYTES,
    ):
        self._buf = b""  # the start of a frame whose length is not known yet (< 5 bytes)
        # An incomplete frame whose length is known: its bytes so far, appended in place
        # (never copied per read: a 60 MiB Query arriving 64 KiB at a time would be
        # copied a thousand times), and its whole size.
        self._part = bytearray()
        self._need = 0
        self._skip = 0  # continuation bytes still owed to a streamed frame
        self.max_len = max_len
        self.valid = valid  # message types this direction may carry; None: any
        self.streamed = streamed
        self.stream_min = stream_min

    @property
    def pending(self) -> int:
        """Bytes held back: the incomplete frame at the end of the stream so far."""
        return len(self._part) if self._need else len(self._buf)

    @property
    def wanted(self) -> int:
        """The whole size of the incomplete frame being held (0: none, or its length is not
        known yet): what the caller's memory budget must allow for."""
        return self._need

    @property
    def mid_frame(self) -> bool:
        """Part of a frame has been passed on and the rest has not arrived yet."""
        return self._skip > 0

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        if self._skip:
            return self._continue(data)
        if self._need:
            part = self._part
            part += data
            if len(part) < self._need:
                return b"", []
            buf = bytes(part)
            self._part = bytearray()
            self._need = 0
        else:
            buf = self._buf + data if self._buf else bytes(data)
        frames: list[tuple[int, int, int]] = []
        pos = 0
        n = len(buf)
        max_len = self.max_len
        valid = self.valid
        while n - pos >= 5:
            t = buf[pos]
            if valid is not None and t not in valid:
                self._buf = b""
                raise ProtocolViolation(f"invalid frontend message type {t}")
            # the big-endian int32 after the type, read byte by byte (compiled: native int
            # arithmetic, no struct call or tuple per frame)
            length = (
                (buf[pos + 1] << 24) | (buf[pos + 2] << 16) | (buf[pos + 3] << 8) | buf[pos + 4]
            )
            if length >= 0x80000000:
                length -= 0x100000000
            # Streamed types may be as long as Postgres allows: they are never held whole.
            if length < 4 or (
                length > max_len and (t not in self.streamed or length > MAX_STREAMED_LENGTH)
            ):
                self._buf = b""
                raise _bad_length(t, length, self.streamed, max_len)
            end = pos + 1 + length
            if end > n:
                if end - pos >= self.stream_min and t in self.streamed:
                    frames.append((t, pos, n))
                    self._skip = end - n
                    self._buf = b""
                    return buf, frames
                self._part = bytearray(memoryview(buf)[pos:])
                self._need = end - pos
                self._buf = b""
                return buf[:pos], frames
            frames.append((t, pos, end))
            pos = end
        if pos == n:
            self._buf = b""
            return buf, frames
        self._buf = buf[pos:]
        return buf[:pos], frames

    def _continue(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        """The next bytes of a streamed frame, then framing as usual on whatever follows."""
        k = self._skip
        if len(data) <= k:
            self._skip = k - len(data)
            return bytes(data), []
        self._skip = 0
        head = bytes(data[:k])
        run, frames = self.feed(data[k:])
        return head + run, [(t, s + k, e + k) for t, s, e in frames]


def _bad_length(t: int, length: int, streamed: frozenset[int], max_len: int) -> ProtocolViolation:
    if length < 4:
        return ProtocolViolation(f"invalid message length {length} for message type {chr(t)!r}")
    limit = MAX_STREAMED_LENGTH if t in streamed else max_len
    setting = "" if t in streamed else ": proxy.max_message_bytes"
    return ProtocolViolation(
        f"oversized message length {length} for message type {chr(t)!r} (limit {limit} bytes{setting})"
    )


@dataclass(frozen=True, slots=True)
class StartupMessage:
    major: int
    minor: int
    params: dict[str, str]
    unknown_protocol_options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True, slots=True)
class DirectTLS:
    """A TLS ClientHello where a startup packet belongs (PostgreSQL 17 clients with
    ``sslnegotiation=direct``). Nothing is consumed: the bytes belong to the TLS layer."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: bytes = field(repr=False)


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest | DirectTLS


def read_startup(buf: bytes | bytearray) -> tuple[StartupPacket | None, int]:
    """Parse one startup-phase packet from the front of ``buf``.

    Returns ``(packet, consumed)``; ``(None, 0)`` if more bytes are needed. Raises
    ProtocolViolation for anything malformed.
    """
    if buf[:1] == TLS_HANDSHAKE_RECORD:
        # A startup length's first byte is 0 (MAX_STARTUP_BYTES < 2**24), so this can only
        # be a TLS record: the handshake that opens a direct TLS connection.
        return DirectTLS(), 0
    if len(buf) < 8:
        if len(buf) >= 4:
            length = _INT32.unpack_from(buf, 0)[0]
            if length < 8 or length > MAX_STARTUP_BYTES:
                raise ProtocolViolation(f"invalid startup packet length {length}", unanswered=True)
        return None, 0
    length, code = _STARTUP_HEAD.unpack_from(buf, 0)
    if length < 8 or length > MAX_STARTUP_BYTES:
        raise ProtocolViolation(f"invalid startup packet length {length}", unanswered=True)
    if len(buf) < length:
        return None, 0
    body = bytes(buf[8:length])
    if code == SSL_REQUEST_CODE:
        if length != 8:
            raise ProtocolViolation("malformed SSLRequest")
        return SSLRequest(), length
    if code == GSSENC_REQUEST_CODE:
        if length != 8:
            raise ProtocolViolation("malformed GSSENCRequest")
        return GSSENCRequest(), length
    if code == CANCEL_REQUEST_CODE:
        # 3.0 keys are 4 bytes; 3.2 allows up to 256.
        if length < 16 or length > 8 + 4 + 256:
            raise ProtocolViolation("malformed CancelRequest")
        return CancelRequest(_INT32.unpack_from(body, 0)[0], body[4:]), length
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0"
        )
    params: dict[str, str] = {}
    unknown: list[str] = []
    parts = body.split(b"\x00")
    # A well-formed body is key\0value\0 ... \0, which splits into pairs plus ["", ""].
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"" or (len(parts) - 2) % 2:
        raise ProtocolViolation("malformed startup packet: parameters are not terminated")
    for i in range(0, len(parts) - 2, 2):
        try:
            key, value = parts[i].decode(), parts[i + 1].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolViolation("startup packet is not valid UTF-8") from exc
        if not key:
            raise ProtocolViolation("malformed startup packet: empty parameter name")
        if key.startswith("_pq_."):
            unknown.append(key)
            continue
        params[key] = value
    if "user" not in params or not params["user"]:
        raise ProtocolViolation("no PostgreSQL user name specified in startup packet", "28000")
    return StartupMessage(major, minor, params, tuple(unknown)), length


def startup_packet(params: dict[str, str], code: int = PROTOCOL_3_0) -> bytes:
    body = _INT32.pack(code)
    body += b"".join(k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in params.items())
    body += b"\x00"
    return _INT32.pack(len(body) + 4) + body
