"""A blocking Postgres v3 client on a raw socket, for tests that need exact bytes.

Shared by the proxy test modules (bad input, TLS/auth, ops, grants, policy, recording).
"""

from __future__ import annotations

import socket
import ssl
import struct

from proxy.wire import messages as m
from proxy.wire.framing import startup_packet
from proxy.wire.scram import MECHANISM, ScramClient
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER

PROTO_3_0 = 3 << 16
PROTO_3_2 = (3 << 16) | 2


class RawClient:
    """A blocking Postgres v3 client on a raw socket."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, source: str | None = None):
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buf = bytearray()
        self.backend_pid: int | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(1 << 16)
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_byte(self) -> bytes:
        if not self.buf and not self._fill():
            return b""
        out = bytes(self.buf[:1])
        del self.buf[:1]
        return out

    def read_frame(self) -> bytes | None:
        """One whole backend message, or None at end of stream."""
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack_from("!i", self.buf, 1)[0]
                if len(self.buf) >= 1 + length:
                    out = bytes(self.buf[: 1 + length])
                    del self.buf[: 1 + length]
                    return out
            if not self._fill():
                if self.buf:
                    raise AssertionError(f"stream ended inside a message: {bytes(self.buf[:40])!r}")
                return None

    def frames_until_eof(self) -> list[bytes]:
        frames = []
        while (f := self.read_frame()) is not None:
            frames.append(f)
        return frames

    def frames_until_ready(self) -> list[bytes]:
        frames = []
        while True:
            f = self.read_frame()
            if f is None:
                raise AssertionError(f"connection closed before ReadyForQuery: {describe(frames)}")
            frames.append(f)
            if f[:1] == b"Z":
                return frames
            if f[:1] == b"E" and error_fields(f).get("S") == "FATAL":
                return frames

    def startup(
        self, user: str = STATIC_USER, database: str = "app", *, code: int = PROTO_3_0, **params
    ) -> None:
        self.send(startup_packet({"user": user, "database": database, **params}, code))

    def authenticate(self, password: str = STATIC_PASSWORD) -> list[bytes]:
        """Answer AuthenticationSASL with SCRAM; frames received up to ReadyForQuery (or FATAL)."""
        seen: list[bytes] = []
        scram = ScramClient(password)
        while True:
            f = self.read_frame()
            if f is None:
                raise AssertionError(f"connection closed during login: {describe(seen)}")
            seen.append(f)
            if f[:1] == b"R":
                code, data = m.decode_auth(f)
                if code == m.AUTH_SASL:
                    assert MECHANISM.encode() in data
                    self.send(m.sasl_initial_response(MECHANISM, scram.first()))
                elif code == m.AUTH_SASL_CONTINUE:
                    self.send(m.password_message(scram.final(data)))
                elif code == m.AUTH_SASL_FINAL:
                    scram.verify(data)
                elif code == m.AUTH_OK:
                    rest = self.frames_until_ready()
                    for r in rest:
                        if r[:1] == b"K":
                            self.backend_pid = struct.unpack_from("!i", r, 5)[0]
                    return seen + rest
                else:
                    raise AssertionError(f"unexpected auth request {code}")
            elif f[:1] == b"E":
                return seen

    def login(
        self, user: str = STATIC_USER, password: str = STATIC_PASSWORD, database: str = "app", **kw
    ) -> list[bytes]:
        self.startup(user, database, **kw)
        frames = self.authenticate(password)
        assert frames[-1][:1] == b"Z", f"login failed: {describe(frames)}"
        return frames

    def until_ready(self) -> list[bytes]:
        """Frames up to ReadyForQuery or a FATAL; whatever came if the stream ends first."""
        frames = []
        while (f := self.read_frame()) is not None:
            frames.append(f)
            if f[:1] == b"Z" or (f[:1] == b"E" and error_fields(f).get("S") == "FATAL"):
                break
        return frames

    def server_first(self, user: str, database: str = "app") -> dict[str, str]:
        """Start SCRAM and return the server-first-message's attributes (r, s, i)."""
        self.startup(user, database)
        f = self.read_frame()
        assert f is not None and f[:1] == b"R", describe([f] if f else [])
        code, data = m.decode_auth(f)
        assert code == m.AUTH_SASL and MECHANISM.encode() in data
        self.send(m.sasl_initial_response(MECHANISM, ScramClient("x").first()))
        f = self.read_frame()
        assert f is not None and f[:1] == b"R", describe([f] if f else [])
        code, data = m.decode_auth(f)
        assert code == m.AUTH_SASL_CONTINUE
        return dict(part.split("=", 1) for part in data.decode().split(","))

    def query(self, sql: str) -> list[bytes]:
        self.send(m.query(sql))
        return self.frames_until_ready()

    def scalar(self, sql: str) -> str:
        frames = self.query(sql)
        rows = [f for f in frames if f[:1] == b"D"]
        assert frames[-1][:1] == b"Z" and len(rows) == 1, describe(frames)
        n = struct.unpack_from("!i", rows[0], 7)[0]
        return rows[0][11 : 11 + n].decode()


def error_fields(frame: bytes) -> dict[str, str]:
    return m.decode_error_fields(frame)


def describe(frames: list[bytes]) -> list[str]:
    out = []
    for f in frames:
        if f[:1] in (b"E", b"N"):
            fields = error_fields(f)
            out.append(f"{chr(f[0])}:{fields.get('S')}:{fields.get('C')}:{fields.get('M')}")
        else:
            out.append(chr(f[0]))
    return out
