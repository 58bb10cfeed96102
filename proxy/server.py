"""The listener and the per-connection I/O: startup, TLS, authentication, then the relay.

Everything protocol-shaped is delegated to sans-IO code (``common.wire``, ``proxy.session``);
this module owns sockets, timers and back-pressure only. ``asyncio.Protocol`` is used on
the hot path (no streams), and each side's ``pause_writing`` pauses reading on the other
side, so a slow reader never makes the proxy buffer without bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta

from common.config import Config, parse_hostport
from common.wire import messages as m
from common.wire.errors import (
    ADMIN_SHUTDOWN,
    CANNOT_CONNECT_NOW,
    FEATURE_NOT_SUPPORTED,
    INSUFFICIENT_PRIVILEGE,
    INVALID_AUTHORIZATION,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    PgError,
    ProtocolViolation,
)
from common.wire.framing import (
    PROTOCOL_3_0,
    CancelRequest,
    DirectTLS,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    read_startup,
)
from common.wire.scram import MECHANISM, ScramError, ScramServer

from . import metrics
from .appname import parameter_status_swap, restore_client_name, upstream_name
from .auth import AuthPlan, FailureThrottle, Identity, auth_failed
from .catalog_loader import CatalogLoader
from .limits import FrameBudget, PreLoginBudget
from .logs import event
from .offload import classify_off_loop
from .refusals import RefusalLog
from .session import Relay
from .upstream import Credentials, Inbox, UpstreamError, connect_upstream, send_cancel

_PASSWORD = m.Frontend.PASSWORD
# Per worker: upstream logins started while clients compute their SCRAM proofs (see
# ClientConnection._speculate): what an unauthenticated client can make the proxy hold.
SPECULATIVE_UPSTREAM_MAX = 8
MAX_AUTH_MESSAGE = 65535  # Postgres's PG_MAX_AUTH_TOKEN_LENGTH: no big buffers before login
PRELOGIN_BUFFER = 256 * 1024  # bytes read ahead during the handshake before reading pauses
FRAME_BUDGET_MIN = 256 * 1024  # incomplete client frames longer than this use the FrameBudget


def server_ssl_context(cfg: Config) -> ssl.SSLContext | None:
    if not cfg.proxy.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.proxy.tls_cert, cfg.proxy.tls_key)
    # PostgreSQL's ALPN name: required for direct TLS, checked when a client offers it.
    ctx.set_alpn_protocols([ALPN_POSTGRESQL])
    return ctx


ALPN_POSTGRESQL = "postgresql"


def _feed_buffered(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand ``data`` to a buffered protocol the way a transport does."""
    view = memoryview(data)
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class ProxyServer:
    """One worker's listener, its live sessions, and the services they share."""

    def __init__(self, cfg: Config, authenticator, *, recorder=None, grant_store=None, policy_factory=None):
        self.cfg = cfg
        self.authenticator = authenticator
        self.recorder = recorder
        self.grant_store = grant_store
        self.policy_factory = policy_factory  # Identity -> StatementPolicy | None
        self.credentials = Credentials(cfg)
        from .provision import RoleLogins

        self.role_logins = RoleLogins(cfg, self.credentials)  # grant -> its upstream login
        self.catalogs = CatalogLoader(cfg, self.credentials)  # column syntax: x.fn is a call?
        self.ssl_context = server_ssl_context(cfg)
        self.throttle = FailureThrottle(
            cfg.proxy.auth_fail_delay, cfg.proxy.auth_fail_window, cfg.proxy.auth_fail_max_delay,
            per_address=cfg.proxy.auth_concurrency_per_address,
        )
        self.sessions: set[ClientConnection] = set()
        self.admitted = 0  # connections past the startup packet: what max_connections limits
        # Before the startup packet a connection holds a place of its own (never one of
        # max_connections), and frames read whole share one memory budget (proxy/limits.py).
        self.prelogin = PreLoginBudget(cfg.proxy.prelogin_max, cfg.proxy.prelogin_per_address)
        self.frame_budget = FrameBudget(cfg.proxy.frame_memory_bytes)
        self.refusals = RefusalLog(recorder, cfg.proxy.refusal_events_per_second)
        self._recorder_metrics = metrics.RecorderExporter()
        self.accepting = True
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._grant_watch_since: datetime | None = None
        self._expired_grants: set[str] = set()
        self._cancels: set[asyncio.Task] = set()
        self.speculating = 0  # upstream logins started before the client's proof (_speculate)

    async def start(self, *, reuse_port: bool = False) -> tuple[str, int]:
        host, port = parse_hostport("proxy.listen", self.cfg.proxy.listen)
        # Real values before the first client (a recorder_healthy of 0 would page someone).
        self._update_gauges()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self),
            host,
            port,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        self._tasks.append(asyncio.create_task(_watch_loop_lag()))
        if self.grant_store is not None:
            from .grant_census import watch_grants_census

            self._tasks.append(asyncio.create_task(watch_grants_census(self.grant_store)))
        sock = self._server.sockets[0]
        addr = sock.getsockname()
        event("listening", host=addr[0], port=addr[1])
        return addr[0], addr[1]

    async def _housekeeping(self) -> None:
        """About once a second: metrics, recorder health, grant revocations and extensions."""
        interval = self.cfg.grants.poll_interval if self.grant_store is not None else 1.0
        last_flush = time.monotonic()
        last_expiry = 0.0
        self._grant_watch_since = datetime.now(UTC)
        while True:
            await asyncio.sleep(min(interval, 1.0))
            now = time.monotonic()
            if now - last_flush >= 1.0:
                last_flush = now
                self.refusals.tick()
                self._update_gauges()
            if self.grant_store is not None:
                try:
                    await self._watch_grants()
                except Exception:  # the store may be briefly unreachable; keep serving
                    logging.getLogger("pgwitness").exception("grant watch failed")
                if now - last_expiry >= 1.0:
                    last_expiry = now
                    await self._expire_due()

    async def _expire_due(self) -> None:
        """grant.expired for every grant whose expiry passed (one proxy emits each)."""
        try:
            await self.grant_store.expire_due()
        except Exception:
            logging.getLogger("pgwitness").exception("grant expiry check failed")

    def _update_gauges(self) -> None:
        for conn in list(self.sessions):
            if conn.relay is not None:
                metrics.flush(conn.relay.counters, conn.identity.agent)
        grants = {c.identity.grant_id for c in self.sessions if c.identity is not None}
        metrics.GRANTS_ACTIVE.set(len(grants))
        if self.recorder is not None:
            self._recorder_metrics.update(self.recorder.status)

    async def _watch_grants(self) -> None:
        """Apply revocations and extensions to live sessions.

        The cursor trails by a margin: a change written by another proxy (another clock) or
        while a session was between its grant check and going live is still seen. Seeing a
        change twice is harmless (revoking an ended session, re-setting the same expiry).
        """
        margin = timedelta(seconds=5 + self.cfg.proxy.startup_timeout + self.cfg.upstream.connect_timeout)
        started = datetime.now(UTC)
        live = {c.identity.grant_id for c in self.sessions if c.identity is not None}
        if not live:
            self._grant_watch_since = started
            return
        changed = await self.grant_store.changed_since(self._grant_watch_since - margin)
        self._grant_watch_since = started
        for grant in changed:
            if grant.id not in live:
                continue
            for conn in [c for c in self.sessions if c.identity and c.identity.grant_id == grant.id]:
                conn.grant_changed(grant)

    def cancel_upstream(self, pid: int, secret: bytes) -> None:
        """Fire-and-forget CancelRequest upstream (used when we end a busy session)."""

        async def go() -> None:
            try:
                await send_cancel(self.cfg, pid, secret)
            except (TimeoutError, OSError, UpstreamError) as exc:
                event("cancel of a busy upstream failed", logging.WARNING, error=str(exc))

        task = asyncio.get_running_loop().create_task(go())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    def grant_expired(self, identity: Identity) -> None:
        """A live session's grant expired: have the store report it now (once, see
        ``GrantStore.expire_due``); without a store, record it once per worker."""
        if identity.grant_id in self._expired_grants:
            return
        self._expired_grants.add(identity.grant_id)
        if self.grant_store is not None:
            task = asyncio.get_running_loop().create_task(self._expire_due())
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)
            return
        if self.recorder is not None:
            self.recorder.control_event(
                "grant.expired",
                {
                    "grant_id": identity.grant_id,
                    "agent": identity.agent,
                    "task": identity.task,
                    "expires_at": identity.expires_at.isoformat() if identity.expires_at else None,
                    "by": "pgwitness (expiry)",
                },
            )

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting; let sessions finish until the deadline; then FATAL 57P01."""
        grace = self.cfg.proxy.shutdown_grace if grace is None else grace
        self.accepting = False
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.sessions):
            conn.terminate("shutdown", "terminating connection: pgwitness is shutting down", ADMIN_SHUTDOWN)
        await asyncio.sleep(0)
        if self._cancels:  # busy sessions' queries must be cancelled before we exit
            await asyncio.wait(set(self._cancels), timeout=3)
        for task in self._tasks:
            task.cancel()
        for conn in list(self.sessions):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()


class ClientConnection(asyncio.Protocol):
    """One client: handshake coroutine first, then bytes flow straight through ``Relay``."""

    def __init__(self, server: ProxyServer):
        self.server = server
        self.cfg = server.cfg
        self.transport: asyncio.Transport | None = None
        self.inbox: Inbox | None = Inbox()
        self.relay: Relay | None = None
        self.upstream = None
        self.identity: Identity | None = None
        self.srec = None  # recorder.SessionRecorder
        self.peer = "?"
        self.tls = "none"
        self.backend_key: tuple[int, bytes] | None = None
        self._handshake_task: asyncio.Task | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._release_timer: asyncio.TimerHandle | None = None
        self._offload_task: asyncio.Task | None = None  # a large statement classified off-loop
        self._ended = False
        self._admitted = False
        self._speculation = None  # (database, login user, params, task): see _speculate
        self._upstream_app: tuple[str, str] | None = None  # (client's, upstream application_name)
        self._client_paused = False
        self._upstream_paused = False
        self.addr = "?"
        self._prelogin = False  # holds a place in the server's PreLoginBudget
        self._inbox_paused = False
        self._frame_reserved = 0  # bytes of the server's FrameBudget this connection holds
        self._frame_waiting = False  # paused until the FrameBudget has room
        self._user: str | None = None  # from the startup packet, for login.refused events
        self._database = ""

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.addr = peer[0] if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        server = self.server
        if not server.accepting:
            self._refuse(
                PgError.fatal_error("the database system is shutting down", CANNOT_CONNECT_NOW),
                "refused",
                "shutting_down",
            )
            return
        admitted, evicted = server.prelogin.admit(self, self.addr)
        if not admitted:
            # One address's unauthenticated connections are capped; logins in progress and
            # sessions hold other places, so they are never displaced by these.
            self._refuse(
                PgError.fatal_error(
                    f"too many connections from {self.addr} that have not sent a startup packet "
                    f"(proxy.prelogin_per_address = {self.cfg.proxy.prelogin_per_address})",
                    TOO_MANY_CONNECTIONS,
                ),
                "prelogin_refused",
                "prelogin_per_address",
            )
            return
        self._prelogin = True
        if evicted is not None:
            evicted._evict()
        server.sessions.add(self)
        metrics.CONNECTIONS_ACTIVE.inc()
        self._handshake_task = asyncio.get_running_loop().create_task(self._handshake())

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is not None:
            try:
                to_server, to_client = relay.from_client(data)
            except PgError as exc:
                self.terminate("protocol_error", exc.message, exc.sqlstate)
                return
            self._deliver(relay, to_server, to_client)
            if relay.client_reader.wanted > FRAME_BUDGET_MIN or self._frame_reserved:
                self._frame_memory(relay.client_reader.wanted)
        elif self.inbox is not None:
            self.inbox.feed(data)
            if len(self.inbox.buf) > PRELOGIN_BUFFER and not self._inbox_paused:
                # Nothing the handshake reads is this long (startup and SASL frames are
                # capped far lower), so what it waits for is already here: stop reading.
                self._inbox_paused = True
                self.transport.pause_reading()

    def _offload(self, sqls: list[str]) -> None:
        """The relay parked a large statement: classify it in the worker process while this
        client's input waits; other sessions go on."""
        self.transport.pause_reading()
        self._offload_task = asyncio.get_running_loop().create_task(self._resume_after(sqls))

    async def _resume_after(self, sqls: list[str]) -> None:
        relay = self.relay
        await classify_off_loop(relay.policy, sqls)
        if self._ended:
            return
        try:
            to_server, to_client = relay.resume()
        except PgError as exc:
            self.terminate("protocol_error", exc.message, exc.sqlstate)
            return
        self._deliver(relay, to_server, to_client)
        if relay.parked is None and not self._ended and not self._client_paused:
            self.transport.resume_reading()

    def _deliver(self, relay, to_server: bytes, to_client: bytes) -> None:
        if to_server:
            self.upstream.transport.write(to_server)
        if to_client:
            self.transport.write(to_client)
            if self.srec is not None:
                self.srec.wire("s2c", to_client)
        if relay.terminated:
            self._end("terminate")

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        if self.inbox is not None:
            self.inbox.close(exc)
        self._leave_prelogin()
        if self._handshake_task is not None and not self._handshake_task.done():
            self._handshake_task.cancel()
        self._end("disconnect" if self.relay is not None else "handshake_aborted")

    def pause_writing(self) -> None:  # client reads slower than upstream writes
        if self.upstream is not None and not self._upstream_paused:
            self._upstream_paused = True
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self._upstream_paused:
            self._upstream_paused = False
            self.upstream.transport.resume_reading()

    # --- upstream side -----------------------------------------------------------

    def _from_server(self, data: bytes) -> None:
        relay = self.relay
        try:
            out = relay.from_server(data)
        except PgError as exc:
            self.terminate("upstream", f"upstream protocol error: {exc.message}", PROTOCOL_VIOLATION)
            return
        if out:
            self.transport.write(out)
        if relay.has_held and self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(0.05, self._release_held)

    def _release_held(self) -> None:
        self._release_timer = None
        if not self._ended and self.relay is not None:
            out = self.relay.release_held()
            if out:
                self.transport.write(out)

    def _upstream_lost(self, exc) -> None:
        if self._ended:
            return
        if self.relay is not None and self.relay.upstream_fatal:
            self._end("upstream", "the upstream database ended the session (FATAL)")
            return
        if not self._ended:
            self.terminate(
                "upstream",
                "terminating connection: the upstream database closed the connection",
                "08006",
            )

    def _upstream_pause(self) -> None:  # upstream reads slower than the client writes
        if not self._client_paused and self.transport is not None:
            self._client_paused = True
            self.transport.pause_reading()

    def _upstream_resume(self) -> None:
        if self._client_paused and self.transport is not None:
            self._client_paused = False
            if not self._frame_waiting:
                self.transport.resume_reading()

    # --- the worker's memory budget for frames read whole -------------------------

    def _frame_memory(self, wanted: int) -> None:
        """Hold a place in the worker's FrameBudget for the incomplete frame of ``wanted``
        bytes, or stop reading from this client until there is room (back-pressure)."""
        if wanted == self._frame_reserved or self._frame_waiting:
            return
        budget = self.server.frame_budget
        if self._frame_reserved:  # the frame it was for is complete
            reserved, self._frame_reserved = self._frame_reserved, 0
            budget.release(reserved)
        if wanted > FRAME_BUDGET_MIN:
            if budget.reserve(wanted):
                self._frame_reserved = wanted
                return
            self._frame_waiting = True
            self.transport.pause_reading()
            budget.wait(self, wanted, lambda: self._frame_granted(wanted))

    def _frame_granted(self, wanted: int) -> None:
        self._frame_waiting = False
        self._frame_reserved = wanted
        if not self._client_paused and self.transport is not None and not self._ended:
            self.transport.resume_reading()

    def _frame_memory_done(self) -> None:
        budget = self.server.frame_budget
        if self._frame_waiting:
            self._frame_waiting = False
            budget.cancel(self)
        if self._frame_reserved:
            reserved, self._frame_reserved = self._frame_reserved, 0
            budget.release(reserved)

    # --- handshake ---------------------------------------------------------------

    async def _handshake(self) -> None:
        outcome = "ok"
        try:
            async with asyncio.timeout(self.cfg.proxy.startup_timeout):
                async with asyncio.timeout(min(self.cfg.proxy.prelogin_timeout, self.cfg.proxy.startup_timeout)):
                    packet = await self._read_startup()
                if isinstance(packet, CancelRequest):  # keeps its pre-login place: bounded
                    outcome = "cancel"
                    await self._cancel(packet)
                    self.transport.close()
                    return
                # Waiting for the login throttle (this agent's back-off here, a place among
                # this address's authentications) keeps the pre-login place, so one address
                # holds at most auth_concurrency_per_address places of max_connections.
                async with self.server.throttle.attempt(self.addr, packet.params["user"]):
                    self._leave_prelogin()
                    # Like Postgres, the limit is told after the startup phase (so a client
                    # that opened with SSLRequest can read it); cancels never count against it.
                    if self.server.admitted >= self.cfg.proxy.max_connections:
                        err = PgError.fatal_error("sorry, too many clients already", TOO_MANY_CONNECTIONS)
                        err.outcome = err.reason = "too_many"
                        raise err
                    self.server.admitted += 1
                    self._admitted = True
                    identity, params = await self._authenticate(packet)
            await self._open_session(identity, packet, params)
        except TimeoutError:
            outcome = "protocol_error"
            err = PgError.fatal_error("timeout waiting for the startup packet and authentication", PROTOCOL_VIOLATION)
            self._refusal("timeout", err)
            self._send_fatal(err)
        except ProtocolViolation as exc:
            outcome = "protocol_error"
            self._refusal("protocol_error", exc)
            self._send_fatal(exc)
        except PgError as exc:
            outcome = getattr(exc, "outcome", "refused")
            self._refusal(getattr(exc, "reason", None) or outcome, exc)
            self._send_fatal(exc)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            outcome = "protocol_error"
            event("handshake failed", logging.DEBUG, peer=self.peer, error=str(exc))
            if self.transport is not None:
                self.transport.abort()
        except asyncio.CancelledError:
            outcome = "disconnected"
        except Exception:
            outcome = "error"
            logging.getLogger("pgwitness").exception("internal error during connection setup")
            self._send_fatal(PgError.fatal_error("pgwitness internal error during connection setup", "XX000"))
        finally:
            metrics.CONNECTIONS_TOTAL.labels(outcome).inc()
            if outcome != "ok" and outcome != "cancel" and not self._ended:
                self._end("handshake_failed")

    def _leave_prelogin(self) -> None:
        if self._prelogin:
            self._prelogin = False
            self.server.prelogin.release(self)

    def _evict(self) -> None:
        """The pre-login places are full and this connection is the oldest: close it."""
        self._prelogin = False  # its place was given to the newcomer
        err = PgError.fatal_error(
            "the proxy is full of connections that have not logged in; this one waited "
            "longest for its startup packet",
            TOO_MANY_CONNECTIONS,
        )
        self._refusal("prelogin_evicted", err)
        self._send_fatal(err)
        self._end("prelogin_evicted")

    def _send_fatal(self, exc: PgError) -> None:
        event("connection refused", peer=self.peer, sqlstate=exc.sqlstate, error=exc.message)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(exc.encode())
            self.transport.close()

    def _refusal(self, reason: str, exc: PgError) -> None:
        """Evidence of a refusal: a ``login.refused`` control event (proxy/refusals.py)."""
        self.server.refusals.refused(
            agent=self._user, database=self._database, grant=getattr(exc, "grant", None),
            client=self.peer, reason=reason, sqlstate=exc.sqlstate, message=exc.message,
        )

    def _refuse(self, exc: PgError, outcome: str, reason: str) -> None:
        self._refusal(reason, exc)
        metrics.CONNECTIONS_TOTAL.labels(outcome).inc()
        self.inbox = None
        self._ended = True
        self.transport.write(exc.encode())
        self.transport.close()

    async def _read_startup(self):
        inbox = self.inbox
        while True:
            packet, used = read_startup(inbox.buf)
            if packet is None:
                await inbox._wait()
                continue
            del inbox.buf[:used]
            if isinstance(packet, SSLRequest):
                if self.tls != "none":
                    raise ProtocolViolation("SSLRequest received on an encrypted connection")
                if self.server.ssl_context is None:
                    self.transport.write(m.SSL_NO)
                    continue
                if inbox.buf:
                    # Bytes after SSLRequest would be read as if they came over TLS.
                    raise ProtocolViolation("received unencrypted data after SSL request")
                self.transport.write(m.SSL_YES)
                await self._start_tls()
                continue
            if isinstance(packet, DirectTLS):
                if self.tls != "none":
                    raise ProtocolViolation("TLS handshake received on an encrypted connection")
                if self.server.ssl_context is None:
                    raise ProtocolViolation("direct TLS connection, but TLS is not configured")
                await self._start_tls(direct=True)
                sslobj = self.transport.get_extra_info("ssl_object")
                if sslobj is None or sslobj.selected_alpn_protocol() != ALPN_POSTGRESQL:
                    # As PostgreSQL: without ALPN a direct TLS peer may be another protocol.
                    raise ProtocolViolation(
                        "received direct TLS connection request without ALPN protocol "
                        f"negotiation extension ({ALPN_POSTGRESQL!r})"
                    )
                self.tls += " direct"
                continue
            if isinstance(packet, GSSENCRequest):
                self.transport.write(m.SSL_NO)
                continue
            if isinstance(packet, CancelRequest):
                return packet
            assert isinstance(packet, StartupMessage)
            self._user = packet.params.get("user")
            self._database = packet.params.get("database") or self._user or ""
            if self.cfg.proxy.require_tls and self.tls == "none":
                err = PgError.fatal_error(
                    "pgwitness requires TLS: connect with sslmode=require or stricter",
                    INVALID_AUTHORIZATION,
                )
                err.outcome = err.reason = "tls_required"
                raise err
            if packet.minor > 0 or packet.unknown_protocol_options:
                self.transport.write(
                    m.negotiate_protocol_version(PROTOCOL_3_0, packet.unknown_protocol_options)
                )
            return packet

    async def _start_tls(self, direct: bool = False) -> None:
        """Put TLS between the client and us. ``direct``: the client opened with its TLS
        ClientHello (now in the inbox), which goes to the TLS layer before any later read."""
        loop = asyncio.get_running_loop()
        ctx = self.server.ssl_context
        if not direct:
            # start_tls pauses reading and swaps protocols before it first yields, so the
            # client's ClientHello cannot reach our inbox in between.
            self.transport = await loop.start_tls(self.transport, self, ctx, server_side=True)
        else:
            self.transport.pause_reading()  # nothing more lands in the inbox from here on
            handshake = loop.create_task(
                loop.start_tls(self.transport, self, ctx, server_side=True)
            )
            # One step later start_tls has swapped in its TLS protocol and scheduled that
            # protocol's connection_made and the transport's resume_reading; a callback
            # scheduled now runs after both, before the socket is read again.
            await asyncio.sleep(0)
            tls_protocol = self.transport.get_protocol()
            if tls_protocol is self or handshake.done():  # pragma: no cover - loop change
                handshake.cancel()
                raise ProtocolViolation("direct TLS is not supported by this event loop")
            hello = bytes(self.inbox.buf)
            del self.inbox.buf[:]
            loop.call_soon(_feed_buffered, tls_protocol, hello)
            self.transport = await handshake
        sslobj = self.transport.get_extra_info("ssl_object")
        self.tls = (sslobj.version() if sslobj else None) or "TLS"

    async def _read_password_message(self) -> bytes:
        msg = await self.inbox.read_frame(MAX_AUTH_MESSAGE)
        if msg[0] != _PASSWORD:
            raise ProtocolViolation(f"expected SASL response, got message type {chr(msg[0])!r}")
        return msg

    async def _authenticate(self, packet: StartupMessage) -> tuple[Identity, dict[str, str]]:
        params = dict(packet.params)
        user = params.pop("user")
        database = params.pop("database", "") or user
        if any(k.lower() == "replication" for k in params):
            # Nobody's: the relay speaks the query protocol only. Other parameters are
            # decided once the identity is known (_startup_params).
            err = PgError.fatal_error(
                'pgwitness: startup parameter "replication" is not allowed: replication '
                "connections are not allowed",
                INSUFFICIENT_PRIVILEGE,
            )
            err.outcome = "refused"
            err.reason = "startup_params"
            raise err
        throttle, addr = self.server.throttle, self.addr
        # The grant lookup runs while the client answers AuthenticationSASL (one round trip
        # it would wait for anyway): the salt is needed only for the server-first message.
        lookup = asyncio.ensure_future(self.server.authenticator.begin(user, database))
        try:
            self.transport.write(m.auth_sasl([MECHANISM]))
            mech, data = m.decode_sasl_initial(await self._read_password_message())
            plan: AuthPlan = await lookup
        finally:
            if not lookup.done():
                lookup.cancel()
        if mech != MECHANISM:
            raise ProtocolViolation(f"client selected an invalid SASL authentication mechanism {mech!r}")
        scram = ScramServer(plan.iterations, plan.salt, plan.candidates)
        try:
            server_first = scram.first(data)
            self.transport.write(m.auth_request(m.AUTH_SASL_CONTINUE, server_first))
            self._speculate(plan, database, params)
            final = m.decode_password(await self._read_password_message())
            index, server_final = scram.final(final)
        except ScramError:
            throttle.failed(addr, user)
            metrics.AUTH_FAILURES.labels("password").inc()
            event("authentication failed", peer=self.peer, user=user, database=database)
            err = auth_failed(user)
            err.outcome = "auth_failed"
            err.reason = "password"
            raise err from None
        try:
            identity = await self.server.authenticator.identify(plan, index)
        except PgError as exc:
            throttle.failed(addr, user)
            metrics.AUTH_FAILURES.labels(getattr(exc, "reason", "refused")).inc()
            event("authentication refused", peer=self.peer, user=user, database=database, error=exc.message)
            exc.outcome = "auth_failed"
            raise
        throttle.succeeded(addr, user)
        self.transport.write(m.auth_request(m.AUTH_SASL_FINAL, server_final))
        self.transport.write(m.auth_request(m.AUTH_OK))
        params["database"] = database
        return identity, params

    async def _open_session(self, identity: Identity, packet: StartupMessage, params: dict[str, str]) -> None:
        server = self.server
        recorder = server.recorder
        if recorder is not None and not recorder.healthy:
            metrics.REFUSED_UNRECORDED.labels("connection").inc()
            err = PgError.fatal_error(
                "pgwitness cannot record sessions right now (recording store unavailable): "
                "refusing the connection rather than serving it unrecorded",
                CANNOT_CONNECT_NOW,
            )
            err.outcome = err.reason = "recorder_unavailable"
            raise err
        database = params.pop("database")
        if identity.expires_at is not None and identity.expires_at <= datetime.now(UTC):
            err = PgError.fatal_error(f"grant {identity.grant_id} for task {identity.task} expired", INVALID_AUTHORIZATION)
            err.reason, err.grant = "expired", identity.grant_id
            raise err
        policy, params, would_deny = self._session_params(identity, params)
        credentials = server.role_logins.credentials(identity)
        if policy is not None:
            await server.catalogs.attach(policy, database)
        client_app, upstream_app = self._upstream_app
        try:
            upstream = await self._upstream_for(database, credentials, params)
        except UpstreamError as exc:
            exc.outcome = "upstream_failed"
            event("upstream login failed", logging.WARNING, peer=self.peer, agent=identity.agent, error=exc.message)
            raise
        if self.transport is None or self.transport.is_closing():
            upstream.transport.abort()
            return
        if policy is not None and upstream.parameters.get("standard_conforming_strings") != "on":
            upstream.transport.abort()
            err = PgError.fatal_error(
                "pgwitness refuses this upstream: standard_conforming_strings is not on, so "
                "statements could not be checked the way the server reads them",
                FEATURE_NOT_SUPPORTED,
            )
            err.outcome = "upstream_failed"
            raise err
        metrics.UPSTREAM_CONNECT_SECONDS.observe(upstream.connect_seconds)
        metrics.AGENT_SESSIONS.labels(identity.agent).inc()
        self.upstream = upstream
        self.identity = identity
        self.backend_key = (upstream.backend_pid, upstream.backend_secret)
        if recorder is not None:
            self.srec = recorder.open_session(
                {
                    "agent": identity.agent,
                    "task": identity.task,
                    "grant_id": identity.grant_id,
                    "scopes": identity.scopes_text,
                    "reason": identity.reason,
                    "granted_by": identity.granted_by,
                    "enforce": identity.enforce,
                    "record_rows": identity.record_rows,
                    "expires_at": identity.expires_at.isoformat() if identity.expires_at else None,
                    "database": database,
                    "client_addr": self.peer,
                    "client_tls": self.tls,
                    "startup_params": dict(packet.params),
                    "upstream": f"{self.cfg.upstream.host}:{self.cfg.upstream.port}",
                    "upstream_user": credentials.user,
                    "upstream_tls": upstream.tls,
                    "backend_pid": upstream.backend_pid,
                    "upstream_application_name": upstream_app,
                }
            )
        self.relay = Relay(
            policy=policy,
            recorder=self.srec,
            max_message_bytes=self.cfg.proxy.max_message_bytes,
            record_rows=identity.record_rows,
            ready_status=upstream.ready_status,
            health=recorder,
            client_encoding=upstream.parameters.get("client_encoding", "UTF8"),
            grant_id=identity.grant_id,
        )
        if policy is not None:
            self.relay.offload = self._offload
        self.relay.app_names = parameter_status_swap(upstream_app, client_app)
        hello = restore_client_name(upstream.startup_messages, client_app)
        hello += m.ready_for_query(upstream.ready_status)
        if self.srec is not None:
            # The exchange itself (SASL messages, proofs) is never recorded; its outcome is.
            self.srec.event(
                "authenticated",
                {
                    "method": "SCRAM-SHA-256",
                    "agent": identity.agent,
                    "grant_id": identity.grant_id,
                    "client_tls": self.tls,
                    "upstream_auth": self.cfg.upstream.auth,
                },
            )
            if would_deny:
                self.srec.event("startup_would_deny", {"grant_id": identity.grant_id, "reason": would_deny})
            self.srec.wire("s2c", hello)
        self.transport.write(hello)
        proto = upstream.protocol
        proto.on_data = self._from_server
        proto.on_lost = self._upstream_lost
        proto.on_pause = self._upstream_pause
        proto.on_resume = self._upstream_resume
        if identity.expires_at is not None:
            self._schedule_expiry(identity.expires_at)
        event(
            "session started",
            peer=self.peer,
            agent=identity.agent,
            task=identity.task,
            grant=identity.grant_id,
            database=database,
            backend_pid=upstream.backend_pid,
            session=getattr(self.srec, "id", None),
        )
        leftover_client = bytes(self.inbox.buf)
        self.inbox = None
        if self._inbox_paused:
            self._inbox_paused = False
            self.transport.resume_reading()
        if upstream.leftover:
            self._from_server(upstream.leftover)
        if leftover_client:
            self.data_received(leftover_client)

    def _session_params(self, identity: Identity, params: dict[str, str]):
        """(policy, upstream startup parameters, dry run's would-be refusal) for ``identity``."""
        server = self.server
        policy = server.policy_factory(identity) if server.policy_factory is not None else None
        params, would_deny = _startup_params(identity, dict(params))
        if policy is not None and policy.enforce:
            # Unqualified names must resolve upstream exactly as the policy resolved them
            # (not through "$user", the proxy's own role). A startup-packet value is what
            # RESET ALL / DISCARD ALL return to, so they keep it. A dry run changes
            # nothing the client sees: the server's own search_path.
            params["search_path"] = ", ".join(_quote_ident(s) for s in policy.search_path)
        # pgw:<tag>/<client's name> upstream (proxy/appname.py): one tag per connection, so
        # a speculative login (_speculate) and the real one ask for the same parameters
        client_app = params.get("application_name") or params.get("fallback_application_name", "")
        if self._upstream_app is None or self._upstream_app[0] != client_app:
            self._upstream_app = (client_app, upstream_name(client_app))
        params["application_name"] = self._upstream_app[1]
        return policy, params, would_deny

    def _speculate(self, plan: AuthPlan, database: str, params: dict[str, str]) -> None:
        """Start the upstream login while the client computes its SCRAM proof.

        Only for a known user (the plan has candidates) whose every candidate would get
        the same upstream startup parameters, and at most SPECULATIVE_UPSTREAM_MAX at once
        per worker: an unauthenticated client can hold that many upstream backends for
        its startup_timeout, never more. Nothing of it reaches the client unless its proof
        matches and ``identify`` accepts it (``_upstream_for``); otherwise the connection
        is closed (``_discard_speculation``).
        """
        server = self.server
        candidate = getattr(server.authenticator, "candidate", None)
        if candidate is None or not plan.candidates or server.speculating >= SPECULATIVE_UPSTREAM_MAX:
            return
        # Candidates the plan already shows refused (revoked, expired) are left out: a
        # proof that matches one ends in a refusal, and the speculation is discarded.
        try:
            identities = [c for i in range(len(plan.candidates)) if (c := candidate(plan, i))]
            # the same upstream login too: a grant's own database role, or the shared one
            logins = {}
            for ident in identities:
                creds = server.role_logins.credentials(ident)
                logins[(creds.user, tuple(sorted(self._session_params(ident, params)[1].items())))] = creds
            wanted = set(logins)
        except PgError:  # a refused setting: the ordinary path says so after the proof
            return
        except Exception:  # never let a shortcut break a login
            logging.getLogger("pgwitness").exception("speculative upstream login skipped")
            return
        if len(wanted) != 1:
            return
        login = next(iter(wanted))
        upstream_params = dict(login[1])
        server.speculating += 1
        task = asyncio.ensure_future(
            connect_upstream(self.cfg, logins[login], database, dict(upstream_params))
        )
        self._speculation = (database, login[0], upstream_params, task)

    async def _upstream_for(self, database: str, credentials, params: dict[str, str]):
        """The upstream session: the speculative one if it was opened as the same login
        with exactly these parameters, else a new login."""
        spec = self._speculation
        if (spec is not None and spec[0] == database and spec[1] == credentials.user
                and spec[2] == params):
            self._speculation = None
            self.server.speculating -= 1
            upstream = await spec[3]
            if upstream.transport.is_closing():
                raise UpstreamError("the upstream database closed the connection during login")
            return upstream
        self._discard_speculation()
        return await connect_upstream(self.cfg, credentials, database, params)

    def _discard_speculation(self) -> None:
        spec, self._speculation = self._speculation, None
        if spec is None:
            return
        self.server.speculating -= 1
        task = spec[3]
        if not task.done():
            task.cancel()  # connect_upstream aborts its connection
        elif not task.cancelled() and task.exception() is None:
            t = task.result().transport
            if not t.is_closing():
                t.write(m.TERMINATE)
                t.close()

    async def _cancel(self, packet: CancelRequest) -> None:
        for conn in self.server.sessions:
            if conn.backend_key == (packet.pid, packet.secret) and conn.srec is not None:
                conn.srec.event("cancel", {"from": self.peer})
        # Forwarded whatever worker holds the session: the server checks the secret key.
        try:
            await send_cancel(self.cfg, packet.pid, packet.secret)
        except (TimeoutError, OSError, UpstreamError) as exc:
            event("cancel forward failed", logging.WARNING, error=str(exc))

    # --- grant lifecycle ---------------------------------------------------------

    def _schedule_expiry(self, expires_at: datetime) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        loop = asyncio.get_running_loop()
        delay = (expires_at - datetime.now(UTC)).total_seconds()
        self._expiry_timer = loop.call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        ident = self.identity
        self.server.grant_expired(ident)
        self.terminate(
            "expired",
            f"terminating connection: grant {ident.grant_id} for task {ident.task} expired",
            ADMIN_SHUTDOWN,
        )

    def grant_changed(self, grant) -> None:
        """The store says this session's grant changed: revoked ends it, extended moves expiry."""
        if self._ended or self.identity is None:
            return
        status = grant.status(datetime.now(UTC))
        if status == "revoked":
            self.terminate(
                "revoked",
                f"terminating connection: grant {grant.id} for task {grant.task} was revoked",
                ADMIN_SHUTDOWN,
            )
        elif status == "expired":
            self._expired()
        elif grant.expires_at != self.identity.expires_at:
            old = self.identity.expires_at
            self.identity = dataclasses.replace(self.identity, expires_at=grant.expires_at)
            if self.srec is not None:
                self.srec.event("grant_extended", {"grant_id": grant.id, "from": str(old), "to": grant.expires_at.isoformat()})
            self._schedule_expiry(grant.expires_at)

    # --- ending ------------------------------------------------------------------

    def terminate(self, cause: str, message: str, sqlstate: str) -> None:
        """End the session from our side: FATAL to the client, close both ends, record why."""
        if self._ended:
            return
        if self.transport is not None and not self.transport.is_closing():
            # In the middle of a large row there is no frame boundary to speak at: the
            # client sees the connection close (the recording still says why).
            if self.relay is None or not self.relay.mid_frame_to_client:
                err = PgError.fatal_error(message, sqlstate).encode()
                if self.srec is not None:
                    self.srec.wire("s2c", err)
                self.transport.write(err)
            self.transport.close()
        self._end(cause, message)

    def _end(self, cause: str, detail: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        self._discard_speculation()
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        if self.upstream is not None:
            t = self.upstream.transport
            if not t.is_closing():
                if cause != "upstream":
                    # A client's own Terminate lets its last statement finish, as Postgres does.
                    if cause != "terminate" and self.relay is not None and self.relay.busy and self.backend_key:
                        # Closing the socket alone lets the backend run the statement to
                        # the end; a cancel stops it now.
                        self.server.cancel_upstream(*self.backend_key)
                    if self.relay is None or not self.relay.mid_frame_to_server:
                        t.write(m.TERMINATE)
                t.close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self._admitted:
            self._admitted = False
            self.server.admitted -= 1
        self._leave_prelogin()
        self._frame_memory_done()
        if self in self.server.sessions:
            self.server.sessions.discard(self)
            metrics.CONNECTIONS_ACTIVE.dec()
        if self.relay is not None:
            metrics.flush(self.relay.counters, self.identity.agent)
            metrics.SESSIONS_ENDED.labels(cause).inc()
            metrics.AGENT_SESSIONS.labels(self.identity.agent).dec()
        if self.srec is not None:
            self.srec.end(cause, detail)
        if self.identity is not None:
            event(
                "session ended",
                peer=self.peer,
                agent=self.identity.agent,
                task=self.identity.task,
                grant=self.identity.grant_id,
                cause=cause,
                detail=detail,
            )


async def _watch_loop_lag(period: float = 0.1) -> None:
    """Ten times a second, how late the timer fired: the worker's stall, as a histogram."""
    while True:
        start = time.monotonic()
        await asyncio.sleep(period)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, time.monotonic() - start - period))


def _startup_params(identity: Identity, params: dict[str, str]) -> tuple[dict[str, str], str]:
    """The parameters to log in upstream with, and a dry run's would-be refusal ("" if none).

    Static users get theirs unchanged (``options`` included), as PostgreSQL would. A
    grant's settings, from ``options`` or parameters, get the rule ``SET`` of each would
    (``policy.startup``); an enforcing grant is refused with a FATAL naming the setting.
    """
    if identity.scopes is None:
        return params, ""
    from policy.startup import StartupRefusal, grant_startup_params

    try:
        out = grant_startup_params(params, identity.scopes)
    except StartupRefusal as exc:
        if identity.enforce:
            err = PgError.fatal_error(str(exc), INSUFFICIENT_PRIVILEGE)
            err.outcome = "refused"
            err.reason, err.grant = "startup_params", identity.grant_id
            raise err from None
        return params, str(exc)
    return out, ""


def _quote_ident(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


