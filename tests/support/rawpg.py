"""The one raw Postgres v3 client of the tests: a blocking socket, exact bytes.

Two ways to use it: step by step from the first byte (``startup``, ``authenticate``,
``read_frame``: bad input, TLS/auth, limits, grants) or as a logged-in session
(``RawClient.via_proxy`` / ``RawClient.direct``, then ``run`` and ``read``: (type, body)
messages, for the relay's transparency tests). Also the message builders and inspectors
those tests share.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct

from common.wire import messages as m
from common.wire.errors import frame
from common.wire.framing import startup_packet
from common.wire.scram import MECHANISM, ScramClient
from tests.support.fixtures_proxy import STATIC_PASSWORD, STATIC_USER

PROTO_3_0 = 3 << 16
PROTO_3_2 = (3 << 16) | 2
UPSTREAM_USER = "pgwitness"  # the proxy's own upstream login in the ``pg`` cluster
I16 = struct.Struct("!h")
I32 = struct.Struct("!i")


class RawError(Exception):
    """A session login refused with an ErrorResponse; ``fields`` are its fields."""

    def __init__(self, fields: dict[str, str]):
        super().__init__(fields.get("M", "error"))
        self.fields = fields


class RawClient:
    """A blocking Postgres v3 client on a raw socket."""

    def __init__(self, host: str, port: int, timeout: float = 5.0, source: str | None = None):
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buf = bytearray()
        self.backend_pid: int | None = None
        self.secret = b""  # the cancel key of a session login
        self.params: dict[str, str] = {}  # ParameterStatus of a session login
        self.preamble_answers: list[bytes] = []
        self.terminate_on_close = False

    @classmethod
    def session(
        cls,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str = "app",
        timeout: float = 15.0,
        preamble: tuple[bytes, ...] = (),
        params=None,
        early: bytes = b"",
    ) -> RawClient:
        """Logged in with SCRAM, ready for queries; closing sends Terminate first.

        ``preamble``: SSLRequest/GSSENCRequest frames sent first (one-byte answers in
        ``preamble_answers``); ``early``: frames sent with the last SCRAM message, before
        the login has finished (pipelined startup). A refused login raises ``RawError``."""
        c = cls(host, port, timeout)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.terminate_on_close = True
        for request in preamble:
            c.send(request)
            c.preamble_answers.append(c.sock.recv(1))
        c.startup(user, database, **(params or {}))
        frames = c.authenticate(password, early)
        if frames and frames[-1][:1] == b"E":
            c.sock.close()
            raise RawError(error_fields(frames[-1]))
        return c

    @classmethod
    def via_proxy(cls, proxy, database: str = "app", **kw) -> RawClient:
        ckw = proxy.connect_kwargs()
        return cls.session(ckw["host"], ckw["port"], ckw["user"], ckw["password"], database, **kw)

    @classmethod
    def direct(cls, pg, database: str = "app", **kw) -> RawClient:
        return cls.session(pg.host, pg.port, UPSTREAM_USER, pg.users[UPSTREAM_USER], database, **kw)

    @property
    def pid(self) -> int | None:
        return self.backend_pid

    def close(self) -> None:
        if self.terminate_on_close:
            try:
                self.sock.sendall(m.TERMINATE)
            except OSError:
                pass
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

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

    def read(self) -> tuple[str, bytes]:
        """One backend message as (type, body); EOFError at the end of the stream."""
        f = self.read_frame()
        if f is None:
            raise EOFError("connection closed")
        return chr(f[0]), f[5:]

    def read_until(self, type_char: str, count: int = 1) -> list[tuple[str, bytes]]:
        """Every message up to and including the ``count``-th of type ``type_char``."""
        out = []
        while count:
            msg = self.read()
            out.append(msg)
            if msg[0] == type_char:
                count -= 1
        return out

    def run(self, *frames: bytes) -> list[tuple[str, bytes]]:
        """Send ``frames``; return every answer up to the ReadyForQuery of the last Q/S/F."""
        self.send(*frames)
        n = sum(1 for f in frames if f[:1] in (b"Q", b"S", b"F"))
        return self.read_until("Z", n)

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

    def authenticate(self, password: str = STATIC_PASSWORD, early: bytes = b"") -> list[bytes]:
        """Answer AuthenticationSASL with SCRAM; frames received up to ReadyForQuery (or FATAL).

        ``early``: frames sent with the last SCRAM message, before the login has finished
        (pipelined startup). Records the backend key and the ParameterStatus values."""
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
                    self.send(m.password_message(scram.final(data)), early)
                elif code == m.AUTH_SASL_FINAL:
                    scram.verify(data)
                elif code == m.AUTH_OK:
                    rest = self.frames_until_ready()
                    for r in rest:
                        if r[:1] == b"K":
                            self.backend_pid = struct.unpack_from("!i", r, 5)[0]
                            self.secret = r[9:]
                        elif r[:1] == b"S":
                            k, v, _ = r[5:].split(b"\x00")
                            self.params[k.decode()] = v.decode()
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

    def extended(self, sql: str) -> list[bytes]:
        """``sql`` over the extended protocol (unnamed statement and portal, then Sync):
        every frame until ReadyForQuery."""
        self.send(m.parse("", sql), m.bind_no_params(), m.execute(), m.SYNC)
        return self.frames_until_ready()

    def query(self, sql: str) -> list[bytes]:
        self.send(m.query(sql))
        return self.frames_until_ready()

    def scalar(self, sql: str) -> str:
        frames = self.query(sql)
        rows = [f for f in frames if f[:1] == b"D"]
        assert frames[-1][:1] == b"Z" and len(rows) == 1, describe(frames)
        n = struct.unpack_from("!i", rows[0], 7)[0]
        return rows[0][11 : 11 + n].decode()


def policy_denial(frames: list[bytes]) -> dict[str, str] | None:
    """The fields of the proxy's policy denial (42501, "may not") among ``frames``."""
    errors = [error_fields(f) for f in frames if f[:1] == b"E"]
    return next((e for e in errors if e.get("C") == "42501" and "may not" in e.get("M", "")), None)


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


# --- messages as (type, body) lists, and the frontend messages the tests build ----------


def types_of(msgs) -> str:
    return "".join(t for t, _ in msgs)


def errors_of(msgs) -> list[dict[str, str]]:
    return [m.decode_error_fields(frame(b"E", b)) for t, b in msgs if t == "E"]


def same_session_shape(msgs):
    """Each session has its own temporary schema (pg_temp_N): the one expected difference."""
    return [(t, re.sub(rb"pg_temp_\d+", b"pg_temp_N", body)) for t, body in msgs]


def bind(
    portal: str = "", statement: str = "", params=(), param_formats=(), result_formats=()
) -> bytes:
    body = portal.encode() + b"\x00" + statement.encode() + b"\x00"
    body += I16.pack(len(param_formats)) + b"".join(I16.pack(f) for f in param_formats)
    body += I16.pack(len(params))
    for p in params:
        body += I32.pack(-1) if p is None else I32.pack(len(p)) + p
    body += I16.pack(len(result_formats)) + b"".join(I16.pack(f) for f in result_formats)
    return frame(b"B", body)


def parse(name: str, sql: str, oids=()) -> bytes:
    body = name.encode() + b"\x00" + sql.encode() + b"\x00" + I16.pack(len(oids))
    return frame(b"P", body + b"".join(I32.pack(o) for o in oids))


def query(sql: str) -> bytes:
    return frame(b"Q", sql.encode() + b"\x00")


def execute(portal: str = "", n: int = 0) -> bytes:
    return frame(b"E", portal.encode() + b"\x00" + I32.pack(n))


SYNC = frame(b"S")
FLUSH = frame(b"H")
