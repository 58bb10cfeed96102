"""One client connection, in two phases: the handshake, then the live session.

``ClientConnection`` is the ``asyncio.Protocol`` the listener creates. It runs the
handshake coroutine (``proxy.handshake``), reports its outcome (metrics, a
``login.refused`` event, the FATAL the client reads), and on success makes the
``LiveConnection``: the Relay between two sockets, with back-pressure (``proxy.flow``) and
the grant's lease (``proxy.grant_watch``). A live connection's fields are never None
(``srec`` is None only when the proxy records nothing at all: no recorder configured).

Every byte written to the client goes through its ``ClientWriter`` (``out``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from common.wire import messages as m
from common.wire.errors import (
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    PgError,
    ProtocolViolation,
    Refused,
)
from common.wire.framing import CancelRequest

from . import metrics
from .appname import parameter_status_swap, restore_client_name
from .causes import EndCause
from .flow import FlowControl
from .grant_watch import GrantLease
from .handshake import Handshake, Login
from .logs import event
from .offload import classify_off_loop
from .relay import Relay
from .splice import Splice

if TYPE_CHECKING:
    from .server import ProxyServer

PRELOGIN_BUFFER = 256 * 1024  # bytes read ahead during the handshake before reading pauses
# PostgreSQL's send buffer (PQ_SEND_BUFFER_SIZE): no TLS record it writes carries more, and
# none the proxy writes to a TLS client does (ClientWriter._tls_pieces)
TLS_RECORD_DATA = 8192
# A session not read while the recorder catches up (LiveConnection._recorder_behind): looked
# at again every few milliseconds, for at most this long at a time
RECORDER_POLL_SECONDS = 0.002
RECORDER_WAIT_SECONDS = 5.0


class ClientWriter:
    """The one way bytes reach the client.

    - ``handshake(data)``: before the session is live (SSL answers, SASL messages,
      AuthenticationOk, refusals). Deliberately never recorded: no recording exists yet,
      and SASL messages and proofs must never reach one (the outcome is recorded as the
      ``authenticated`` event).
    - what the Relay returned: counted (``bytes_s2c``) and recorded (``s2c``) by
      ``Relay.deliver``, then written by the live session's ``Splice`` (proxy/splice.py)
      with this ``transport``'s own ``write``, which is fixed once the session is live.
    - ``local(data)``: the proxy's own frames once live (the login's last frames, a FATAL):
      counted and recorded through the same ``Relay.deliver``, then written.
    """

    __slots__ = ("transport", "_relay", "write")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self._relay: Relay | None = None
        # what writes a live session's bytes: the transport's own ``write``, or for a TLS
        # client ``_tls_pieces`` (``attach``)
        self.write: Callable[[bytes], object] = self._plain

    def _plain(self, data: bytes) -> None:
        self.transport.write(data)

    def _tls_pieces(self, data: bytes) -> None:
        """No TLS record larger than PostgreSQL's: libpq's non-blocking reader (psycopg's
        async connections, pipelines) takes one record per read into what room its 16 KiB
        buffer has, and a larger record's rest stays inside OpenSSL while the client waits
        for the socket, for ever if that rest was the answer's end (b1: psycopg's async
        COPY and ``test_leak`` hung through the proxy over TLS; CockroachDB and Supavisor
        cap their TLS writes the same way). Each piece is encrypted as its own record."""
        if len(data) <= TLS_RECORD_DATA:
            self.transport.write(data)
        else:
            self.transport.writelines(
                [data[i : i + TLS_RECORD_DATA] for i in range(0, len(data), TLS_RECORD_DATA)]
            )

    def attach(self, relay: Relay, tls: bool = False) -> None:
        self._relay = relay
        self.write = self._tls_pieces if tls else self.transport.write

    def handshake(self, data: bytes) -> None:
        self.transport.write(data)

    def local(self, data: bytes) -> None:
        if self._relay is not None:
            self._relay.deliver(data)
        self.write(data)


class ClientConnection(asyncio.Protocol):
    """One client: handshake coroutine first, then bytes flow straight through ``Relay``."""

    def __init__(self, server: ProxyServer):
        self.server = server
        self.cfg = server.cfg
        self.out = ClientWriter()
        self.handshake: Handshake | None = Handshake(self)  # None once live
        self.live: LiveConnection | None = None
        self.peer = "?"
        self.addr = "?"
        self._handshake_task: asyncio.Task | None = None
        self._ended = False
        self._admitted = False
        self._prelogin = False  # holds a place in the server's PreLoginBudget
        self._inbox_paused = False

    # --- what the listener and tests see, in either phase ---------------------------

    @property
    def transport(self) -> asyncio.Transport:
        return self.out.transport

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def tls(self) -> str:
        if self.live is not None:
            return self.live.tls
        return self.handshake.tls if self.handshake is not None else "none"

    @property
    def identity(self):
        return self.live.identity if self.live is not None else None

    @property
    def relay(self) -> Relay | None:
        return self.live.relay if self.live is not None else None

    @property
    def srec(self):
        return self.live.srec if self.live is not None else None

    @property
    def backend_key(self) -> tuple[int, bytes] | None:
        return self.live.backend_key if self.live is not None else None

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport):
        self.out.transport = transport
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
        refusal = server.accept(self)
        if refusal is not None:
            self._refuse(refusal)
            return
        self._prelogin = True
        server.connections.add(self)
        metrics.CONNECTIONS_ACTIVE.inc()
        self._handshake_task = asyncio.get_running_loop().create_task(self._run_handshake())

    def data_received(self, data: bytes) -> None:
        live = self.live
        if live is not None:
            live.splice.client_data(data)
        elif self.handshake is not None:
            inbox = self.handshake.inbox
            inbox.feed(data)
            if len(inbox.buf) > PRELOGIN_BUFFER and not self._inbox_paused:
                # Nothing the handshake reads is this long (startup and SASL frames are
                # capped far lower), so what it waits for is already here: stop reading.
                self._inbox_paused = True
                self.transport.pause_reading()

    def eof_received(self):
        return False

    def connection_lost(self, exc) -> None:
        if self.handshake is not None:
            self.handshake.inbox.close(exc)
        self.leave_prelogin()
        if self._handshake_task is not None and not self._handshake_task.done():
            self._handshake_task.cancel()
        try:
            self.end(EndCause.DISCONNECT if self.live is not None else EndCause.HANDSHAKE_ABORTED)
        finally:
            self.server.released()  # once per connection: the supervisor counts this worker's

    def pause_writing(self) -> None:  # client reads slower than upstream writes
        if self.live is not None:
            self.live.flow.client_full()

    def resume_writing(self) -> None:
        if self.live is not None:
            self.live.flow.client_drained()

    # --- the handshake phase -------------------------------------------------------

    async def _run_handshake(self) -> None:
        outcome = "ok"
        assert self.handshake is not None  # None only once live
        try:
            login = await self.handshake.run()
            if isinstance(login, CancelRequest):  # keeps its pre-login place: bounded
                outcome = "cancel"
                async with asyncio.timeout(self.cfg.proxy.startup_timeout):
                    await self.server.forward_cancel(login, self.peer)
                self.transport.close()
                return
            self._go_live(login)
        except TimeoutError:
            outcome = self._refused(Refused(
                "timeout waiting for the startup packet and authentication", PROTOCOL_VIOLATION,
                outcome="protocol_error", reason="timeout",
            ))  # fmt: skip
        except ProtocolViolation as exc:
            outcome = self._refused(Refused.of(exc, "protocol_error"), answered=not exc.unanswered)
        except Refused as exc:
            outcome = self._refused(exc)
        except PgError as exc:
            outcome = self._refused(Refused.of(exc, "refused"))
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
                self.end(EndCause.HANDSHAKE_FAILED)

    def _go_live(self, login: Login) -> None:
        if self.transport.is_closing():  # the client left during the upstream login
            login.upstream.transport.abort()
            return
        assert self.handshake is not None  # None only once live
        inbox = self.handshake.inbox
        try:
            self.live = live = LiveConnection(self, login)
        except BaseException:
            login.upstream.transport.abort()  # an internal error: the upstream goes too
            raise
        leftover_client = bytes(inbox.buf)
        self.handshake = None
        if self._inbox_paused:
            self._inbox_paused = False
            self.transport.resume_reading()
        if login.upstream.leftover:
            live.splice.server_data(login.upstream.leftover)
        if leftover_client:
            self.data_received(leftover_client)

    def admit(self) -> bool:
        """A place among ``max_connections``, held until the connection ends; False: full."""
        if self.server.admitted >= self.cfg.proxy.max_connections:
            return False
        self.server.admitted += 1
        self._admitted = True
        return True

    def leave_prelogin(self) -> None:
        if self._prelogin:
            self._prelogin = False
            self.server.prelogin.release(self)

    def evict(self) -> None:
        """The pre-login places are full and this connection is the oldest: close it."""
        self._prelogin = False  # its place was given to the newcomer
        err = Refused(
            "the proxy is full of connections that have not logged in; this one waited "
            "longest for its startup packet",
            TOO_MANY_CONNECTIONS,
            reason="prelogin_evicted",
        )
        self._refusal(err)
        self._send_fatal(err)
        self.end(EndCause.PRELOGIN_EVICTED)

    def _refused(self, exc: Refused, *, answered: bool = True) -> str:
        """The handshake ended in a refusal: evidence, then the FATAL (or, where Postgres
        says nothing, ``answered=False``, only the close); returns its outcome."""
        self._refusal(exc)
        self._send_fatal(exc, answered)
        return exc.outcome

    def _send_fatal(self, exc: PgError, answered: bool = True) -> None:
        event("connection refused", peer=self.peer, sqlstate=exc.sqlstate, error=exc.message)
        if self.transport is not None and not self.transport.is_closing():
            if answered:
                self.out.handshake(exc.encode())
            self.transport.close()

    def _refusal(self, exc: Refused) -> None:
        """Evidence of a refusal: a ``login.refused`` control event (proxy/refusals.py)."""
        hs = self.handshake
        self.server.refusals.refused(
            agent=hs.user if hs else None, database=hs.database if hs else "", grant=exc.grant,
            client=self.peer, reason=exc.reason, sqlstate=exc.sqlstate, message=exc.message,
        )

    def _refuse(self, exc: Refused) -> None:
        """Refused as it was accepted (``ProxyServer.accept``): no handshake at all."""
        self._refusal(exc)
        metrics.CONNECTIONS_TOTAL.labels(exc.outcome).inc()
        self.handshake = None
        self._ended = True
        self.out.handshake(exc.encode())
        self.transport.close()

    # --- grant lifecycle ---------------------------------------------------------

    def grant_changed(self, grant) -> None:
        """The store says this session's grant changed (``GrantLease.changed``)."""
        if self._ended or self.live is None:
            return
        self.live.lease.changed(grant)

    # --- ending ------------------------------------------------------------------

    def terminate(self, cause: EndCause, message: str, sqlstate: str) -> None:
        """End the session from our side: FATAL to the client, close both ends, record why."""
        if self._ended:
            return
        if self.transport is not None and not self.transport.is_closing():
            # In the middle of a large row there is no frame boundary to speak at: the
            # client sees the connection close (the recording still says why).
            if self.live is None or not self.live.relay.mid_frame_to_client:
                self.out.local(PgError.fatal_error(message, sqlstate).encode())
            self.transport.close()
        self.end(cause, message)

    def end(self, cause: EndCause, detail: str = "") -> None:
        """Close both ends and release what the connection held; counted, recorded and
        logged once (``terminate`` first tells the client why)."""
        if self._ended:
            return
        self._ended = True
        if self.handshake is not None:
            self.handshake.discard_speculation()
        live = self.live
        if live is not None:
            live.close_upstream(cause)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self._admitted:
            self._admitted = False
            self.server.admitted -= 1
        self.leave_prelogin()
        if live is not None:
            live.flow.close()
        if self in self.server.connections:
            self.server.connections.discard(self)
            metrics.CONNECTIONS_ACTIVE.dec()
        if live is not None:
            live.finish(cause, detail)


class LiveConnection:
    """A logged-in connection: the Relay between the client and its upstream session."""

    def __init__(self, conn: ClientConnection, login: Login):
        server = conn.server
        cfg = server.cfg
        recorder = server.recorder
        identity, upstream = login.identity, login.upstream
        self.conn = conn
        self.server = server
        self.out = conn.out
        self.peer = conn.peer
        self.tls = login.tls
        self.upstream = upstream
        self.upstream_app = login.upstream_app
        self.reuse_key = login.reuse_key
        self.backend_key: tuple[int, bytes] = (upstream.backend_pid, upstream.backend_secret)
        if not login.reused:
            metrics.UPSTREAM_CONNECT_SECONDS.observe(upstream.connect_seconds)
        metrics.AGENT_SESSIONS.labels(identity.agent).inc()
        self.srec = None  # recorder.SessionRecorder, or None: no recorder configured
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
                    "database": login.database,
                    "client_addr": self.peer,
                    "client_tls": self.tls,
                    "startup_params": dict(login.packet.params),
                    "upstream": f"{cfg.upstream.host}:{cfg.upstream.port}",
                    "upstream_user": login.credentials.user,
                    "upstream_tls": upstream.tls,
                    "backend_pid": upstream.backend_pid,
                    "upstream_application_name": login.upstream_app,
                    "upstream_reused": login.reused,
                    # where the grant's issue (and latest extension) is recorded: a control
                    # stream deleted whole is then missing, not a grant issued unrecorded
                    **(
                        {}
                        if identity.grant_streams is None
                        else {"grant_streams": dict(identity.grant_streams)}
                    ),
                }
            )
        self.relay = relay = Relay(
            policy=login.policy,
            recorder=self.srec,
            max_message_bytes=cfg.proxy.max_message_bytes,
            record_rows=identity.record_rows,
            ready_status=upstream.ready_status,
            health=recorder,
            client_encoding=upstream.parameters.get("client_encoding", "UTF8"),
            grant_id=identity.grant_id,
        )
        if login.policy is not None:
            relay.offload = self._offload
            relay.catalog_wait = self._catalog_wait
            # which backends pg_terminate_backend / pg_cancel_backend may name
            login.policy.own_backends = functools.partial(server.grant_backends, identity.grant_id)
        if login.upstream_app != login.client_app:  # tagged upstream (proxy/appname.py)
            relay.app_names = parameter_status_swap(login.upstream_app, login.client_app)
        self.flow = FlowControl(conn.transport, upstream.transport, server.frame_budget)
        self._release_timer: asyncio.TimerHandle | None = None
        self._offload_task: asyncio.Task | None = None  # a large statement classified off-loop
        hello = restore_client_name(upstream.startup_messages, login.client_app)
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
                    "upstream_auth": cfg.upstream.auth,
                },
            )
            if login.would_deny:
                self.srec.event("startup_would_deny", {"grant_id": identity.grant_id, "reason": login.would_deny})
        self.out.attach(relay, tls=self.tls != "none")
        self.out.local(hello)
        # Every message from here on: the compiled splice (proxy/splice.py) and the relay.
        self.splice = splice = Splice(
            relay,
            to_server=upstream.transport.write,
            to_client=self.out.write,
            flow=self.flow,
            client_error=self._client_error,
            server_error=self._server_error,
            terminated=self._terminated,
            held=self._held,
            recorder=recorder,
            behind=self._recorder_behind if recorder is not None else None,
        )
        proto = upstream.protocol
        proto.on_data = splice.server_data
        proto.on_lost = self._upstream_lost
        proto.on_pause = self.flow.upstream_full
        proto.on_resume = self.flow.upstream_drained
        self.lease = GrantLease(identity, server.grant_watch, conn.terminate, self.srec)
        self._log(
            "session started",
            database=login.database,
            backend_pid=upstream.backend_pid,
            upstream_reused=login.reused,
            session=getattr(self.srec, "id", None),
        )

    @property
    def identity(self):
        return self.lease.identity  # an extension replaces it (GrantLease.changed)

    def _log(self, msg: str, **fields) -> None:
        identity = self.identity
        event(msg, peer=self.peer, agent=identity.agent, task=identity.task, grant=identity.grant_id, **fields)

    # --- client → server -----------------------------------------------------------

    def _client_error(self, exc: PgError) -> None:
        self.conn.terminate(EndCause.PROTOCOL_ERROR, exc.message, exc.sqlstate)

    def _terminated(self) -> None:
        self.conn.end(EndCause.TERMINATE)

    def _offload(self, sqls: list[str]) -> None:
        """The relay parked a large statement: classify it in the worker process while this
        client's input waits; other sessions go on."""
        self.flow.hold_client()
        self._offload_task = asyncio.get_running_loop().create_task(self._resume_after(sqls))

    def _catalog_wait(self) -> None:
        """The relay parked a statement whose decision needs a catalog snapshot loaded
        after it arrived: checked again once the reload the policy started is done."""
        self.flow.hold_client()
        self._offload_task = asyncio.get_running_loop().create_task(self._resume_after_reload())

    async def _resume_after_reload(self) -> None:
        policy = self.relay.policy
        reload = None
        if policy is not None and policy.on_stale is not None:
            if policy.waiting_since is not None:
                reload = policy.on_stale(policy.waiting_since)  # the one the check started
            elif policy.stale_write:
                reload = policy.on_stale(None)  # a write: the reload after the last DDL
        if isinstance(reload, asyncio.Task):
            await asyncio.shield(reload)  # never raises (CatalogLoader.refresh)
        await self._resume()

    async def _resume_after(self, sqls: list[str]) -> None:
        await classify_off_loop(self.relay.policy, sqls)
        await self._resume()

    async def _resume(self) -> None:
        relay = self.relay
        if self.conn.ended:
            return
        try:
            to_server, to_client = relay.resume()
        except PgError as exc:
            self._client_error(exc)
            return
        self.splice.deliver(to_server, to_client)
        if relay.parked is None and not self.conn.ended:
            self.flow.release_client()

    # --- server → client -----------------------------------------------------------

    def _server_error(self, exc: PgError) -> None:
        self.conn.terminate(EndCause.UPSTREAM, f"upstream protocol error: {exc.message}", PROTOCOL_VIOLATION)

    def _recorder_behind(self) -> None:
        """The recorder holds more unsealed than half its memory: this session is not read
        until the sealer caught up (every few milliseconds looked at again), at most
        RECORDER_WAIT_SECONDS at a time, and not while the recorder is unhealthy (the
        health gate refuses statements then; the session must be read to answer them)."""
        flow = self.flow
        if flow.recorder_held:
            return
        flow.recorder_behind()
        metrics.RECORDER_WAITS.inc()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORDER_WAIT_SECONDS
        recorder = self.server.recorder

        def look() -> None:
            if self.conn.ended:
                return
            if recorder.behind() and recorder.healthy and loop.time() < deadline:
                loop.call_later(RECORDER_POLL_SECONDS, look)
            else:
                flow.recorder_caught_up()

        loop.call_later(RECORDER_POLL_SECONDS, look)

    def _held(self) -> None:
        """The relay holds frames for an injected denial's answer: released if it does not
        come within 50 ms (``Relay.release_held``)."""
        if self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(0.05, self._release_held)

    def _release_held(self) -> None:
        self._release_timer = None
        if not self.conn.ended:
            out = self.relay.release_held()
            if out:
                self.splice.to_client(out)

    def _upstream_lost(self, exc) -> None:
        if self.conn.ended:
            return
        if self.relay.upstream_fatal:
            self.conn.end(EndCause.UPSTREAM, "the upstream database ended the session (FATAL)")
            return
        self.conn.terminate(
            EndCause.UPSTREAM,
            "terminating connection: the upstream database closed the connection",
            "08006",
        )

    # --- ending ----------------------------------------------------------------------

    def close_upstream(self, cause: EndCause) -> None:
        """The connection ends: stop the grant's timer, end the upstream session."""
        self.lease.cancel()
        t = self.upstream.transport
        if not t.is_closing():
            if self._keep_upstream(cause):
                return  # reset and kept for the same grant's next login (proxy/upstream_pool.py)
            if cause != EndCause.UPSTREAM:
                # A client's own Terminate lets its last statement finish, as Postgres does.
                if cause != EndCause.TERMINATE and self.relay.busy:
                    # Closing the socket alone lets the backend run the statement to
                    # the end; a cancel stops it now.
                    self.server.cancel_upstream(*self.backend_key)
                if not self.relay.mid_frame_to_server:
                    t.write(m.TERMINATE)
            t.close()

    def _keep_upstream(self, cause: EndCause) -> bool:
        """Whether the upstream session went to the pool: only after the client's own
        Terminate or disconnect, with the server idle (``Relay.upstream_reusable``), the
        grant still valid and the proxy not shutting down."""
        if cause not in (EndCause.TERMINATE, EndCause.DISCONNECT):
            return False
        expires_at = self.identity.expires_at
        if expires_at is not None and expires_at <= datetime.now(UTC):
            return False
        server = self.server
        if not (server.accepting and self.relay.upstream_reusable):
            return False
        return server.upstream_pool.give_back(self.reuse_key, self.upstream, self.upstream_app)

    def finish(self, cause: EndCause, detail: str) -> None:
        """Counted, recorded and logged, once the sockets are closed."""
        identity = self.identity
        policy = self.relay.policy
        if policy is not None and (policy.ddl_open or policy.ddl_unsettled):
            policy.settle_ddl()  # the server rolled back what the session left open
        metrics.flush(self.relay.counters, identity.agent)
        metrics.SESSIONS_ENDED.labels(cause).inc()
        metrics.AGENT_SESSIONS.labels(identity.agent).dec()
        if self.srec is not None:
            self.srec.end(cause, detail)
        self._log("session ended", cause=cause, detail=detail)
