"""Logging in to the real database with the proxy's own credentials.

The agent never sees these credentials: they come from the config (or an RDS IAM token
made fresh per connection) and are used only here. Errors raised from this module never
carry a password or token.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.config import Config
from common.wire import messages as m
from common.wire.errors import CONNECTION_FAILURE, INVALID_PASSWORD, PgError, ProtocolViolation
from common.wire.framing import startup_packet
from common.wire.scram import MECHANISM, ScramClient, ScramError, salted_password

_SALTED: dict[tuple[str, bytes, int], bytes] = {}
_SALTED_MAX = 16


def cached_salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """SCRAM's SaltedPassword, derived once per (password, salt, iterations), as pgbouncer
    does: the server's salt and iteration count for a role change only with its password,
    and deriving it (4096 PBKDF2 rounds or more) is most of the CPU an upstream login costs.
    A few entries at most (a password rotation adds one; the oldest is dropped)."""
    key = (password, salt, iterations)
    salted = _SALTED.get(key)
    if salted is None:
        salted = salted_password(password, salt, iterations)
        if len(_SALTED) >= _SALTED_MAX:
            _SALTED.pop(next(iter(_SALTED)))
        _SALTED[key] = salted
    return salted


class UpstreamError(PgError):
    """The upstream could not be reached or refused the proxy's login."""

    def __init__(self, message: str, sqlstate: str = CONNECTION_FAILURE):
        super().__init__(message, sqlstate, "FATAL")


class Inbox:
    """Bytes received during a handshake, read by a coroutine a frame at a time."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed: BaseException | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def close(self, exc: BaseException | None = None) -> None:
        self.closed = exc or ConnectionResetError("connection closed")
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _wait(self) -> None:
        if self.closed is not None:
            raise self.closed
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._wait()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_frame(self, max_len: int, error=ProtocolViolation, who: str = "client") -> bytes:
        """One whole frame; a length outside 4..max_len raises ``error`` at once (the body is
        never waited for, so a peer cannot make us buffer up to a bogus length)."""
        while True:
            out = self.frame(max_len, error, who)
            if out is not None:
                return out
            await self._wait()

    def frame(self, max_len: int, error=ProtocolViolation, who: str = "client") -> bytes | None:
        """``read_frame``'s frame if the whole of it is here, else None (nothing waited for:
        a reader of many frames awaits, with its timeout, only when one is not)."""
        buf = self.buf
        if len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big", signed=True)
            if length < 4 or length > max_len:
                raise error(f"{who} sent an invalid message length {length}")
            if len(buf) >= 1 + length:
                out = bytes(buf[: 1 + length])
                del buf[: 1 + length]
                return out
        return None


class UpstreamProtocol(asyncio.Protocol):
    """The connection to the database. During login a coroutine reads from ``inbox``;
    afterwards every read goes straight to ``on_data`` (the relay)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.inbox: Inbox | None = Inbox()
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Any], None] | None = None
        self.on_pause: Callable[[], None] | None = None
        self.on_resume: Callable[[], None] | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
        elif self.inbox is not None:
            self.inbox.feed(data)

    def connection_lost(self, exc):
        if self.inbox is not None:
            self.inbox.close(exc)
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        if self.on_resume is not None:
            self.on_resume()


@dataclass
class UpstreamSession:
    """A logged-in upstream connection, ready for the relay."""

    protocol: UpstreamProtocol
    transport: asyncio.Transport
    backend_pid: int
    backend_secret: bytes
    startup_messages: bytes  # ParameterStatus/BackendKeyData/Notice frames up to (not incl.) Z
    ready_status: bytes
    tls: str
    connect_seconds: float
    leftover: bytes = field(default=b"", repr=False)
    parameters: dict[str, str] = field(default_factory=dict)  # from ParameterStatus
    logged_in_at: float = field(default_factory=time.monotonic)  # kept across reuse


def client_ssl_context(cfg: Config) -> ssl.SSLContext | None:
    mode = cfg.upstream.sslmode
    if mode == "disable":
        return None
    if mode in ("prefer", "require"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if mode == "require" and cfg.upstream.sslrootcert:
            # libpq: require with a root cert behaves like verify-ca.
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cfg.upstream.sslrootcert)
        return ctx
    ctx = ssl.create_default_context(cafile=cfg.upstream.sslrootcert)
    ctx.check_hostname = mode == "verify-full"
    return ctx


class Credentials:
    """Produces the upstream login (``user``) and its password for each new connection.

    By default the proxy's shared login (``upstream.user``); ``proxy.provision`` makes
    others for a grant's database role (``user``, and ``secret`` giving its password;
    without one, RDS IAM tokens are made for that user when ``upstream.auth = rds-iam``).
    """

    def __init__(self, cfg: Config, user: str | None = None, secret=None):
        self.cfg = cfg
        self.user = user or cfg.upstream.user
        self._secret = secret
        self._rds_client: Any = None  # boto3 has no types

    def password(self) -> str:
        if self._secret is not None:
            return self._secret()
        if self.cfg.upstream.auth == "rds-iam":
            return self.rds_token()
        return self.cfg.upstream_password()

    def rds_token(self) -> str:
        if self._rds_client is None:
            import boto3

            self._rds_client = boto3.client("rds", region_name=self.cfg.upstream.rds_region)
        return self._rds_client.generate_db_auth_token(
            DBHostname=self.cfg.upstream.host,
            Port=self.cfg.upstream.port,
            DBUsername=self.user,
            Region=self.cfg.upstream.rds_region,
        )


async def _negotiate_tls(loop, transport, protocol, cfg: Config, ctx) -> tuple[asyncio.Transport, str]:
    transport.write(m.ssl_request())
    answer = await protocol.inbox.read_exact(1)
    if answer == m.SSL_YES:
        if protocol.inbox.buf:
            raise UpstreamError("upstream sent data after accepting TLS: refusing (possible injection)")
        server_hostname = cfg.upstream.host if cfg.upstream.sslmode == "verify-full" else None
        try:
            new_transport = await loop.start_tls(
                transport, protocol, ctx, server_hostname=server_hostname
            )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise UpstreamError(f"TLS to upstream {cfg.upstream.host} failed: {exc}") from exc
        sslobj = new_transport.get_extra_info("ssl_object")
        version = sslobj.version() if sslobj else "TLS"
        return new_transport, version or "TLS"
    if answer == m.SSL_NO:
        if cfg.upstream.sslmode != "prefer":
            raise UpstreamError(
                f"upstream {cfg.upstream.host} does not support TLS but sslmode={cfg.upstream.sslmode}"
            )
        return transport, "none"
    raise UpstreamError("upstream answered the TLS request with garbage")


async def connect_upstream(
    cfg: Config,
    credentials: Credentials,
    database: str,
    params: dict[str, str],
) -> UpstreamSession:
    """Open, secure and log in one upstream connection; raise UpstreamError on failure."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    host, port = cfg.upstream.host, cfg.upstream.port
    try:
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(UpstreamProtocol, host, port),
            cfg.upstream.connect_timeout,
        )
    except (TimeoutError, OSError) as exc:
        raise UpstreamError(f"cannot connect to upstream {host}:{port}: {exc.__class__.__name__}") from exc
    try:
        return await asyncio.wait_for(
            _login(loop, transport, protocol, cfg, credentials, database, params, started),
            cfg.upstream.connect_timeout,
        )
    except TimeoutError as exc:
        transport.abort()
        raise UpstreamError(f"upstream {host}:{port} did not complete login in time") from exc
    except BaseException:
        transport.abort()
        raise


async def _login(loop, transport, protocol, cfg, credentials, database, params, started):
    tls = "none"
    ctx = client_ssl_context(cfg)
    if ctx is not None:
        transport, tls = await _negotiate_tls(loop, transport, protocol, cfg, ctx)
    startup = {"user": credentials.user, "database": database}
    startup.update(params)
    transport.write(startup_packet(startup))
    inbox = protocol.inbox
    scram: ScramClient | None = None
    scram_state = "none"  # none -> started -> continued -> verified
    password: str | None = None
    startup_messages = []
    parameters: dict[str, str] = {}
    pid, secret = 0, b""
    while True:
        try:
            msg = await inbox.read_frame(cfg.proxy.max_message_bytes, UpstreamError, "upstream")
        except (ConnectionError, OSError) as exc:
            raise UpstreamError("upstream closed the connection during login") from exc
        t = msg[0]
        if t == m.Backend.AUTHENTICATION:
            code, data = m.decode_auth(msg)
            if code == m.AUTH_OK:
                if scram_state not in ("none", "verified"):
                    raise UpstreamError("upstream ended SCRAM without proving it knows the password")
                continue
            if password is None:
                # An RDS IAM token may take a network round trip (credential refresh):
                # never on the event loop, where it would stall every session.
                password = await loop.run_in_executor(None, credentials.password)
            if code == m.AUTH_CLEARTEXT:
                if tls == "none" and cfg.upstream.sslmode != "disable":
                    raise UpstreamError("upstream asked for a cleartext password without TLS")
                transport.write(m.password_message(password.encode() + b"\x00"))
            elif code == m.AUTH_MD5:
                salt = data[:4]
                inner = hashlib.md5(password.encode() + credentials.user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + salt).hexdigest()
                transport.write(m.password_message(b"md5" + outer.encode() + b"\x00"))
            elif code == m.AUTH_SASL:
                mechanisms = [x.decode() for x in data.split(b"\x00") if x]
                if MECHANISM not in mechanisms:
                    raise UpstreamError(f"upstream offers no supported SASL mechanism ({mechanisms})")
                if scram_state != "none":
                    raise UpstreamError("upstream restarted SASL authentication")
                scram = ScramClient(password, cached_salted_password)
                scram_state = "started"
                transport.write(m.sasl_initial_response(MECHANISM, scram.first()))
            elif code == m.AUTH_SASL_CONTINUE and scram_state == "started":
                try:
                    transport.write(m.password_message(scram.final(data)))
                except ScramError as exc:
                    raise UpstreamError(f"upstream SCRAM exchange failed: {exc}") from exc
                scram_state = "continued"
            elif code == m.AUTH_SASL_FINAL and scram_state == "continued":
                try:
                    scram.verify(data)
                except ScramError as exc:
                    raise UpstreamError(f"upstream SCRAM exchange failed: {exc}") from exc
                scram_state = "verified"
            elif code in (m.AUTH_SASL_CONTINUE, m.AUTH_SASL_FINAL):
                raise UpstreamError("upstream sent SCRAM messages out of order")
            else:
                raise UpstreamError(f"upstream asked for unsupported authentication (code {code})")
        elif t == m.Backend.ERROR_RESPONSE:
            fields = m.decode_error_fields(msg)
            code = fields.get("C", "")
            if code in ("28P01", "28000"):
                raise UpstreamError(
                    f"upstream rejected pgwitness's login as {credentials.user!r} ({code}): "
                    "check upstream credentials",
                    INVALID_PASSWORD if code == "28P01" else code,
                )
            # Other errors (database does not exist, too many connections, ...) are the
            # server's own words and safe to pass on: they carry no credentials.
            err = UpstreamError(fields.get("M", "upstream error"), code or CONNECTION_FAILURE)
            raise err
        elif t == m.Backend.BACKEND_KEY_DATA:
            pid = int.from_bytes(msg[5:9], "big", signed=True)
            secret = msg[9:]
            startup_messages.append(msg)
        elif t == m.Backend.READY_FOR_QUERY:
            protocol.inbox = None
            return UpstreamSession(
                protocol=protocol,
                transport=transport,
                backend_pid=pid,
                backend_secret=secret,
                startup_messages=b"".join(startup_messages),
                ready_status=msg[5:6],
                tls=tls,
                connect_seconds=time.perf_counter() - started,
                leftover=bytes(inbox.buf),
                parameters=parameters,
            )
        elif t in (m.Backend.PARAMETER_STATUS, m.Backend.NOTICE_RESPONSE):
            startup_messages.append(msg)
            if t == m.Backend.PARAMETER_STATUS:
                name, pos = m.cstring(msg, 5)
                parameters[name] = m.cstring(msg, pos)[0]
        elif t == m.Backend.NEGOTIATE_PROTOCOL_VERSION:
            continue
        else:
            raise UpstreamError(f"unexpected message {chr(t)!r} from upstream during login")


async def send_cancel(cfg: Config, pid: int, secret: bytes) -> None:
    """Forward a CancelRequest to the upstream (over TLS when the upstream wants it)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await asyncio.wait_for(
        loop.create_connection(UpstreamProtocol, cfg.upstream.host, cfg.upstream.port),
        cfg.upstream.connect_timeout,
    )
    try:
        ctx = client_ssl_context(cfg)
        if ctx is not None and cfg.upstream.sslmode != "prefer":
            transport, _ = await asyncio.wait_for(
                _negotiate_tls(loop, transport, protocol, cfg, ctx), cfg.upstream.connect_timeout
            )
        transport.write(m.cancel_request(pid, secret))
        # The server closes the connection once it has read the request.
        try:
            assert protocol.inbox is not None  # nothing took it over: no session here
            await asyncio.wait_for(protocol.inbox.read_exact(1), 2.0)
        except (TimeoutError, ConnectionError, OSError):
            pass
    finally:
        transport.close()
